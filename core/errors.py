"""The exceptions the daemon and the CLI raise on purpose, all under ``AnalyticsError``; each
carries its data. (The client raises only built-in TypeError and ValueError for a bad argument,
and ``EmbeddedModeError`` from its asyncio facade.)"""

from __future__ import annotations


def host_port(host: str, port: int) -> str:
    """``127.0.0.1:9466``, ``[::1]:9466``: an endpoint as messages and logs name it."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class AnalyticsError(Exception):
    """Base of every error ai_analytics raises on purpose."""


class ConfigError(AnalyticsError, ValueError):
    """A configuration value is unusable; ``key`` and ``value`` name it (key may be None)."""

    def __init__(self, message: str, *, source: str = "", key: str | None = None,
                 value: object = None) -> None:
        self.source = source
        self.key = key
        self.value = value
        where = ": ".join(part for part in (source, key) if part)
        super().__init__(f"{where}: {message}" if where else message)


class StateError(AnalyticsError, OSError):
    """The daemon's state file cannot be read or written."""


class AlreadyRunning(AnalyticsError):
    """Another daemon holds the namespace."""


class BindError(AnalyticsError, OSError):
    """The endpoint cannot listen on ``host``:``port``; ``reason`` says why in plain words and
    ``errno`` keeps the system's error number (None when the host did not resolve)."""

    def __init__(self, host: str, port: int, reason: str, error_number: int | None = None
                 ) -> None:
        self.host = host
        self.port = port
        self.reason = reason
        super().__init__(f"HTTP endpoint {host_port(host, port)}: {reason}")
        self.errno = error_number


class SinkTimeout(AnalyticsError, TimeoutError):
    """A sink write did not finish in time, or the previous one still runs (``running``).
    ``sink`` names it, ``seconds`` is how long it has run."""

    def __init__(self, sink: str, seconds: float, limit: float, running: bool) -> None:
        self.sink = sink
        self.seconds = seconds
        self.running = running
        if running:
            message = (f"the previous {sink} write, started {seconds:.1f} s ago, is still "
                       f"running (max_processing_time_seconds is {limit:g}): not starting "
                       "another")
        else:
            message = (f"the {sink} write did not finish within max_processing_time_seconds "
                       f"({limit:g} s); it goes on in the background")
        super().__init__(message)
