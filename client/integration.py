"""The asyncio API, ``AnalyticsConfig`` and ``AnalyticsAIIntegration``, over ``emit``.

    config = AnalyticsConfig(max_queue_size=1000, batch_size=50, batch_timeout_seconds=5.0)
    integration = AnalyticsAIIntegration(config, analytics_dashboard)
    await integration.start()
    await integration.record_operation_metrics(
        operation_type=AIOperationType.STYLE_TRANSFER, processing_time_ms=523.1,
        quality_score=0.94, success=True)
    snapshot = await integration.get_performance_snapshot()
    await integration.stop(timeout=5.0)

There is no asyncio queue and no batch task here: ``record_operation_metrics`` calls ``emit``,
which writes the event into this thread's shared-memory lane and returns. What drains the
lanes is a daemon, in one of two modes chosen by ``start()``:

- **daemon**: an ``ai-analyticsd`` already drains the namespace; snapshots come from its
  loopback HTTP ``/status`` endpoint (``AnalyticsConfig.daemon_url``).
- **embedded**: no daemon runs, so one is started inside this process, on a thread of its
  own, with a private temporary state directory; snapshots are its latest document.

Stdlib only at import time, like the rest of the client: the daemon's modules (numpy, psutil,
pyyaml) are imported only when embedded mode starts, and ``urllib.request`` only when daemon
mode first asks for a snapshot. See docs/integration.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import json
import logging
import math
import time
import urllib.parse
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, get_args

from ._emit import emit
from ._operations import AIOperationType
from ._ratelog import worth_logging
from ._segments import (
    check_namespace,
    lock_held,
    lock_path,
    namespace_from_env,
    segment_dir_from_env,
)
from ._settings import FACADE_SETTINGS

if TYPE_CHECKING:
    from ai_analytics.daemon.embedded import EmbeddedDaemon

log = logging.getLogger("ai_analytics.client")

Mode = Literal["auto", "daemon", "embedded"]
MODES: tuple[str, ...] = get_args(Mode)
DEFAULT_DAEMON_URL = "http://127.0.0.1:9466"
DEFAULT_START_TIMEOUT_SECONDS = 10.0
DEFAULT_STOP_TIMEOUT_SECONDS = 5.0
# The largest /status answer read: a document of thousands of series is a few MiB.
MAX_STATUS_BYTES = 64 * 1024 * 1024


class EmbeddedModeError(RuntimeError):
    """The in-process daemon of embedded mode could not start (missing dependencies, another
    daemon holds the namespace, or no first snapshot in time)."""


@dataclasses.dataclass(frozen=True)
class AnalyticsConfig:
    """The batching, snapshot and circuit-breaker settings, plus where to find (or how to run)
    the daemon.

    In daemon mode the running ``ai-analyticsd``'s own config rules and these settings only
    record intent; in embedded mode they configure the in-process daemon (the daemon
    config keys of the same names). ``namespace`` None means $AI_ANALYTICS_NAMESPACE (or the
    default); ``mode`` "auto" picks daemon mode when a daemon holds the namespace, else
    embedded; ``daemon_url`` is where daemon mode reads ``/status``.
    """

    max_queue_size: int = 1000
    batch_size: int = 50
    batch_timeout_seconds: float = 5.0
    max_processing_time_seconds: float = 10.0
    snapshot_interval_seconds: float = 60.0
    enable_circuit_breaker: bool = True
    failure_threshold: int = 5
    recovery_timeout_seconds: float = 30.0
    namespace: str | None = None
    mode: Mode = "auto"
    daemon_url: str = DEFAULT_DAEMON_URL

    def __post_init__(self) -> None:
        for name, (kind, low, high) in FACADE_SETTINGS.items():
            value = _check_setting(name, getattr(self, name), kind, low, high)
            object.__setattr__(self, name, value)  # ints given for seconds become floats
        if self.namespace is not None:
            try:
                check_namespace(self.namespace)
            except ValueError:
                raise ValueError(
                    "AnalyticsConfig.namespace must be None or 1-64 characters of letters, "
                    f"digits, '_' or '-', got {self.namespace!r}"
                ) from None
        if self.mode not in MODES:
            raise ValueError(
                f"AnalyticsConfig.mode must be one of {', '.join(MODES)}, got {self.mode!r}"
            )
        _check_url(self.daemon_url)

    def daemon_settings(self, namespace: str, state_dir: str) -> dict[str, object]:
        """The daemon config (``config_from_mapping`` keys) that embedded mode runs with."""
        settings: dict[str, object] = {name: getattr(self, name) for name in FACADE_SETTINGS}
        settings.update(
            namespace=namespace,
            segment_dir=segment_dir_from_env(),  # where this process's lanes are
            state_dir=state_dir,
            http_enabled=False,  # no port to claim: snapshots are read in-process
            stop_timeout_seconds=DEFAULT_STOP_TIMEOUT_SECONDS,  # stop() narrows it
        )
        return settings


def _check_setting(name: str, value: object, kind: type, low: float, high: float) -> object:
    if kind is bool:
        if not isinstance(value, bool):
            raise ValueError(f"AnalyticsConfig.{name} must be True or False, got {value!r}")
        return value
    numeric = (int,) if kind is int else (int, float)
    if isinstance(value, bool) or not isinstance(value, numeric):
        what = "an integer" if kind is int else "a number of seconds"
        raise ValueError(
            f"AnalyticsConfig.{name} must be {what} between {low} and {high}, got {value!r}"
        )
    if math.isnan(value) or not low <= value <= high:
        raise ValueError(f"AnalyticsConfig.{name} must be between {low} and {high}, got {value!r}")
    return kind(value)


def _check_url(url: object) -> None:
    parts = urllib.parse.urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            "AnalyticsConfig.daemon_url must be an http:// URL of the daemon's endpoint, "
            f"got {url!r}"
        )


def _check_timeout(name: str, timeout: object) -> float:
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ValueError(f"{name} must be a positive number of seconds, got {timeout!r}")
    return float(timeout)


def daemon_holds_namespace(namespace: str) -> bool:
    """True while some daemon holds ``namespace``'s lock: the same test as
    ``ai_analytics.core.namespace_lock.daemon_running``, without importing the daemon package
    (whose config module loads yaml) into a worker."""
    return lock_held(lock_path(namespace, segment_dir_from_env()))


class AnalyticsAIIntegration:
    """Record AI operation metrics without blocking; read snapshots from the daemon.

    ``analytics_dashboard`` may be None. If it has a callable ``on_snapshot``, that is called
    with every snapshot ``get_performance_snapshot`` returns (awaited if it returns an
    awaitable); an exception it raises is logged and counted in ``dashboard_failures``, never
    raised to the caller.

    One start per object: ``start()`` a second time raises RuntimeError, even after
    ``stop()``; make a new integration to start again.
    """

    def __init__(self, config: AnalyticsConfig | None = None,
                 analytics_dashboard: object = None) -> None:
        if config is None:
            config = AnalyticsConfig()
        if not isinstance(config, AnalyticsConfig):
            raise TypeError(f"config must be an AnalyticsConfig, got {type(config).__name__}")
        self.config = config
        self.analytics_dashboard = analytics_dashboard
        self.dashboard_failures = 0
        self._mode: Literal["daemon", "embedded"] | None = None
        self._namespace: str | None = None
        self._started = False
        self._stopped = False
        self._embedded: EmbeddedDaemon | None = None
        self._unreachable_logged = False

    @property
    def mode(self) -> Literal["daemon", "embedded"] | None:
        """The mode ``start()`` chose; None before it."""
        return self._mode

    @property
    def namespace(self) -> str | None:
        """The namespace ``start()`` resolved; None before it."""
        return self._namespace

    @property
    def is_running(self) -> bool:
        """Started and not stopped."""
        return self._mode is not None and not self._stopped

    async def __aenter__(self) -> AnalyticsAIIntegration:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.stop()

    # -- start -----------------------------------------------------------------------------
    async def start(self, timeout: float = DEFAULT_START_TIMEOUT_SECONDS) -> None:
        """Choose the mode; in embedded mode start the in-process daemon and wait (at most
        ``timeout`` seconds) for its first snapshot. Raises EmbeddedModeError when embedded
        mode cannot start, ValueError when the namespace is unusable."""
        timeout = _check_timeout("timeout", timeout)
        if self._started:
            raise RuntimeError("this AnalyticsAIIntegration was already started; an "
                               "integration starts once, make a new one to start again")
        self._started = True  # before the first await: a concurrent start() sees it
        try:
            namespace = self._resolve_namespace()
            mode: Literal["daemon", "embedded"]
            if self.config.mode == "auto":
                mode = "daemon" if daemon_holds_namespace(namespace) else "embedded"
            else:
                mode = self.config.mode
            if mode == "embedded":
                await self._start_embedded(namespace, timeout)
            elif not daemon_holds_namespace(namespace):
                log.warning("ai_analytics: no ai-analyticsd drains namespace %r yet; events "
                            "wait in their lanes until one starts", namespace)
        except BaseException:
            self._embedded = None
            self._started = False  # nothing runs: a later start() may try again
            raise
        self._namespace = namespace
        self._mode = mode
        log.info("ai_analytics: integration started in %s mode (namespace %r)", mode, namespace)

    async def _start_embedded(self, namespace: str, timeout: float) -> None:
        try:
            # The daemon's modules (numpy, psutil, pyyaml) load here, and only here.
            from ai_analytics.daemon.embedded import EmbeddedDaemon
        except ImportError as exc:
            raise EmbeddedModeError(
                f"embedded mode needs the daemon's dependencies (numpy, psutil, pyyaml: pip "
                f"install ai-analytics) and cannot import them ({exc}); or run ai-analyticsd "
                "and use mode='daemon'") from exc
        embedded = EmbeddedDaemon(self.config.daemon_settings(namespace, ""), namespace)
        self._embedded = embedded  # before the wait, so that a stop() during it reaches it
        embedded.start()
        ready = False
        try:
            ready = await asyncio.wait_for(asyncio.to_thread(embedded.wait_ready, timeout),
                                           timeout)
        except TimeoutError:
            pass
        except asyncio.CancelledError:
            embedded.request_stop(DEFAULT_STOP_TIMEOUT_SECONDS)  # its thread ends on its own
            raise
        if ready:
            return
        if (failure := embedded.failure()) is not None:
            raise EmbeddedModeError(failure) from embedded.error
        stopped = await self._stop_embedded(min(timeout, DEFAULT_STOP_TIMEOUT_SECONDS))
        raise EmbeddedModeError(
            f"the embedded ai-analyticsd wrote no first snapshot within {timeout} s"
            + ("" if stopped else " and did not stop; its thread is left to finish")
        )

    def _resolve_namespace(self) -> str:
        # emit writes into the namespace of $AI_ANALYTICS_NAMESPACE (read when a thread makes
        # its first event), so a different namespace here would drain or watch no lane of ours.
        current = namespace_from_env()
        wanted = self.config.namespace
        if wanted is not None and wanted != current:
            raise ValueError(
                f"AnalyticsConfig.namespace is {wanted!r} but emit writes into {current!r} "
                f"($AI_ANALYTICS_NAMESPACE): set AI_ANALYTICS_NAMESPACE={wanted} before the "
                "process records its first event, or leave namespace None"
            )
        return current

    # -- record ----------------------------------------------------------------------------
    async def record_operation_metrics(
        self,
        operation_type: str | AIOperationType,
        processing_time_ms: float,
        quality_score: float | None = None,
        success: bool = True,
        model: str = "",
        cache_hit: bool | None = None,
        **llm_extras: Any,
    ) -> bool:
        """Record one operation: True if written, False if dropped (the lane was full).

        Calls ``emit`` directly: no queue, no executor, no await inside, so it never waits
        and never yields to the loop. Works before ``start()`` and after ``stop()`` too (the
        event waits in its lane for a daemon). ``llm_extras`` are emit's keyword-only
        ``ttft_ms``, ``queue_ms``, ``tokens_in`` and ``tokens_out``. Bad arguments raise
        exactly as emit raises them (TypeError, ValueError).
        """
        return emit(operation_type, processing_time_ms, model, quality_score, success,
                    cache_hit, **llm_extras)

    # -- snapshot --------------------------------------------------------------------------
    async def get_performance_snapshot(self, timeout: float = 5.0) -> dict[str, Any] | None:
        """The latest snapshot document (docs/snapshot.md), or None.

        Embedded: a copy of the in-process daemon's latest snapshot (at most
        ``snapshot_interval_seconds`` old; after ``stop()``, the final one). Daemon: the
        daemon's ``/status``, fetched within ``timeout`` seconds; None (logged once until it
        answers again) when it cannot be reached. None before ``start()``.
        """
        timeout = _check_timeout("timeout", timeout)
        deadline = time.monotonic() + timeout
        if self._embedded is not None:
            snapshot = self._embedded.snapshot()
        elif self._mode == "daemon":
            snapshot = await self._fetch_status(timeout)
        else:
            return None
        if snapshot is not None:
            await self._notify_dashboard(snapshot, deadline)
        return snapshot

    async def _fetch_status(self, timeout: float) -> dict[str, Any] | None:
        url = self.config.daemon_url.rstrip("/") + "/status"
        try:
            document = await asyncio.wait_for(asyncio.to_thread(_get_json, url, timeout),
                                              timeout)
        except (TimeoutError, OSError, ValueError) as exc:
            if not self._unreachable_logged:
                self._unreachable_logged = True
                log.warning("ai_analytics: the daemon's status endpoint %s did not answer "
                            "(%s); get_performance_snapshot returns None until it does",
                            url, str(exc) or f"no answer within {timeout} s")
            return None
        self._unreachable_logged = False
        return document

    async def _notify_dashboard(self, snapshot: dict[str, Any], deadline: float) -> None:
        hook = getattr(self.analytics_dashboard, "on_snapshot", None)
        if not callable(hook):
            return
        try:
            result = hook(snapshot)
            if inspect.isawaitable(result):
                await asyncio.wait_for(result, max(deadline - time.monotonic(), 0.001))
        except Exception:
            self.dashboard_failures += 1
            if worth_logging(self.dashboard_failures):
                log.warning("ai_analytics: analytics_dashboard.on_snapshot failed (failure %d;"
                            " snapshots go on)", self.dashboard_failures, exc_info=True)

    # -- stop ------------------------------------------------------------------------------
    async def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT_SECONDS) -> bool:
        """Stop within ``timeout`` seconds; True once everything stopped.

        Embedded: the daemon drains what is left, writes its final snapshot and lets go of
        the namespace; its temporary state directory is removed. If its thread has not ended
        in time, that is logged and False returned (nothing raised); the thread, a daemon
        thread, finishes on its own. Daemon mode: nothing to stop. Before ``start()`` or a
        second time: nothing to do.
        """
        timeout = _check_timeout("timeout", timeout)
        if not self._started or self._stopped:
            return True
        self._stopped = True
        if self._embedded is None:
            return True
        return await self._stop_embedded(timeout)

    async def _stop_embedded(self, timeout: float) -> bool:
        embedded = self._embedded
        assert embedded is not None
        embedded.request_stop(timeout)
        with contextlib.suppress(asyncio.TimeoutError):
            if await asyncio.wait_for(asyncio.to_thread(embedded.join, timeout), timeout):
                return True
        log.warning("ai_analytics: the embedded ai-analyticsd did not stop within %s s; its "
                    "thread goes on finishing on its own, and its state directory %s is "
                    "removed when it ends or at exit", timeout, embedded.state_dir)
        return False


def _get_json(url: str, timeout: float) -> dict[str, Any]:
    """GET ``url`` and decode a JSON object; OSError or ValueError for anything else."""
    # Imported here, not at the top: urllib.request pulls in http.client, email and ssl,
    # which a worker that only records should not pay for.
    import http.client
    import urllib.error
    import urllib.request

    # The daemon is local: never route the request through a proxy from the environment.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as response:
            body = response.read(MAX_STATUS_BYTES + 1)
    except urllib.error.HTTPError as exc:  # it holds the open response: close it here
        exc.close()
        raise OSError(f"HTTP {exc.code} {exc.reason}") from None
    except http.client.HTTPException as exc:  # a malformed answer; not an OSError
        raise OSError(f"bad HTTP response: {exc!r}") from None
    if len(body) > MAX_STATUS_BYTES:
        raise ValueError(f"the answer is larger than {MAX_STATUS_BYTES} bytes")
    document = json.loads(body)
    if not isinstance(document, dict):
        raise ValueError(f"the answer is a JSON {type(document).__name__}, not an object")
    return document


__all__ = [
    "AIOperationType",
    "AnalyticsAIIntegration",
    "AnalyticsConfig",
    "EmbeddedModeError",
    "daemon_holds_namespace",
]
