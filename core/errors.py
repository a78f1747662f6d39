"""The one exception hierarchy of ai_analytics; each error carries its data."""

from __future__ import annotations


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
