"""The original design's API (``ai_analytics.client.integration``) over ``emit``, in this
process: daemon mode against a stand-in status endpoint (good, bad, unreachable and hung
answers), the lifecycle (one start, stop any time), argument errors and configuration checks.

Each scenario runs ``asyncio.run`` on a fresh thread of this process, so on a fresh lane of
the test's namespace; none starts a daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import logging
import math
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest

from ai_analytics import client
from ai_analytics.client import _layout as L
from ai_analytics.client.integration import (
    AIOperationType,
    AnalyticsAIIntegration,
    AnalyticsConfig,
)
from ai_analytics.core.config import ConfigError, config_from_mapping

from helpers import free_port, lane_names, wait_for

RunAsync = Callable[[Callable[[], Coroutine[Any, Any, Any]]], Any]


@pytest.fixture
def run_async(on_thread: Callable[..., Any]) -> RunAsync:
    """Run ``asyncio.run(make())`` on one fresh thread (one fresh lane in this test's
    namespace); return its result or re-raise its error."""
    return lambda make: on_thread(asyncio.run, make())


# -- daemon mode against a stand-in status endpoint --------------------------------------------

class FakeStatus(http.server.BaseHTTPRequestHandler):
    """Answers /status with the server's ``document`` (as JSON, or raw bytes), else 404."""

    def do_GET(self) -> None:
        body = self.server.document  # type: ignore[attr-defined]
        if self.path != "/status":
            self.send_error(404)
            return
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def fake_status_server(document: object) -> Iterator[str]:
    """A loopback HTTP server on a free port serving ``document`` at /status; its URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeStatus)
    server.document = document  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5.0)


def test_daemon_mode_reads_status_and_feeds_the_dashboard(run_async: RunAsync) -> None:
    """Daemon mode's snapshot is the JSON object the endpoint serves at /status; a dashboard's
    async on_snapshot is awaited with it; a dashboard that raises is logged and counted, and
    the snapshot is returned all the same."""
    document = {"namespace": "x", "operations": [{"operation": "op", "model": "", "count": 3}]}

    class Dashboard:
        def __init__(self) -> None:
            self.got: list[dict[str, Any]] = []

        async def on_snapshot(self, snapshot: dict[str, Any]) -> None:
            await asyncio.sleep(0)
            self.got.append(snapshot)

    class Broken:
        def on_snapshot(self, snapshot: dict[str, Any]) -> None:
            raise RuntimeError("dashboard down")

    dashboard, broken = Dashboard(), Broken()
    with fake_status_server(document) as url:
        async def scenario() -> tuple[object, object, int]:
            cfg = AnalyticsConfig(mode="daemon", daemon_url=url + "/")
            good = AnalyticsAIIntegration(cfg, dashboard)
            bad = AnalyticsAIIntegration(cfg, broken)
            await good.start()
            await bad.start()
            return (await good.get_performance_snapshot(),
                    await bad.get_performance_snapshot(), bad.dashboard_failures)

        first, second, failures = run_async(scenario)
    assert first == document
    assert dashboard.got == [document]
    assert second == document
    assert failures == 1


@pytest.mark.parametrize("served", [b"not json", b"[1, 2]", "404"], ids=["text", "list", "404"])
def test_daemon_mode_bad_answers_give_none(served: object, run_async: RunAsync,
                                           caplog: pytest.LogCaptureFixture) -> None:
    """An endpoint that answers something other than a JSON object at /status (plain text, a
    JSON list, a 404) gives None and one warning naming the URL, never an exception."""
    with fake_status_server(served) as url:
        if served == "404":
            url += "/elsewhere"

        async def scenario() -> tuple[object, object]:
            integration = AnalyticsAIIntegration(AnalyticsConfig(mode="daemon", daemon_url=url))
            await integration.start()
            return (await integration.get_performance_snapshot(timeout=2.0),
                    await integration.get_performance_snapshot(timeout=2.0))

        with caplog.at_level(logging.WARNING, logger="ai_analytics.client"):
            assert run_async(scenario) == (None, None)
    warnings = [r.getMessage() for r in caplog.records if "did not answer" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert url in warnings[0]


def test_daemon_mode_unreachable_or_hung_endpoint_gives_none_in_time(
    run_async: RunAsync, caplog: pytest.LogCaptureFixture
) -> None:
    """With no daemon and nothing listening, daemon mode still starts (with a warning), and
    get_performance_snapshot returns None at once, logging once for two calls; an endpoint
    that accepts the connection but never answers gives None within the timeout."""
    closed = f"http://127.0.0.1:{free_port()}"
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(1)  # connections queue up and are never answered
        hung_url = f"http://127.0.0.1:{hung.getsockname()[1]}"

        async def scenario() -> dict[str, Any]:
            refused = AnalyticsAIIntegration(AnalyticsConfig(mode="daemon", daemon_url=closed))
            await refused.start()
            began = time.monotonic()
            answers = [await refused.get_performance_snapshot(timeout=2.0) for _ in range(2)]
            refused_seconds = time.monotonic() - began
            silent = AnalyticsAIIntegration(AnalyticsConfig(mode="daemon", daemon_url=hung_url))
            await silent.start()
            began = time.monotonic()
            answers.append(await silent.get_performance_snapshot(timeout=0.5))
            return {"answers": answers, "refused_seconds": refused_seconds,
                    "hung_seconds": time.monotonic() - began, "mode": refused.mode}

        with caplog.at_level(logging.WARNING, logger="ai_analytics.client"):
            result = run_async(scenario)
    assert result["mode"] == "daemon"
    assert result["answers"] == [None, None, None]
    assert result["refused_seconds"] < 2.0
    assert 0.4 <= result["hung_seconds"] < 1.5
    messages = [r.getMessage() for r in caplog.records]
    assert sum("no ai-analyticsd drains namespace" in m for m in messages) == 2
    assert sum(closed in m and "did not answer" in m for m in messages) == 1
    assert sum(hung_url in m and "did not answer" in m for m in messages) == 1


# -- lifecycle and arguments -------------------------------------------------------------------

def test_lifecycle_start_once_stop_anytime(run_async: RunAsync, namespace: str) -> None:
    """stop() before start() is a no-op; start() a second time raises RuntimeError, and so
    does start() after stop() (one start per integration); stop() twice is a no-op;
    get_performance_snapshot before start() is None; is_running follows start and stop."""

    async def scenario() -> dict[str, Any]:
        integration = AnalyticsAIIntegration(AnalyticsConfig(mode="daemon"))
        seen: dict[str, Any] = {"stop_before": await integration.stop(timeout=0.1),
                                "snapshot_before": await integration.get_performance_snapshot(),
                                "running_before": integration.is_running}
        await integration.start()
        seen["running"] = integration.is_running
        for when in ("again", "after_stop"):
            try:
                await integration.start()
            except RuntimeError as exc:
                seen[when] = str(exc)
            if when == "again":
                seen["stop"] = await integration.stop()
                seen["stop_twice"] = await integration.stop()
        seen["running_after"] = integration.is_running
        return seen

    seen = run_async(scenario)
    assert seen["stop_before"] is True
    assert seen["snapshot_before"] is None
    assert seen["running_before"] is False
    assert seen["running"] is True
    assert "already started" in seen["again"]
    assert "already started" in seen["after_stop"]
    assert seen["stop"] is True and seen["stop_twice"] is True
    assert seen["running_after"] is False


def test_namespace_must_be_the_one_emit_writes_into(run_async: RunAsync, namespace: str) -> None:
    """AnalyticsConfig.namespace pins the namespace: equal to $AI_ANALYTICS_NAMESPACE it
    starts; different, start() raises ValueError naming both (emit would write where no one
    looks) and the integration stays unstarted."""

    async def scenario() -> tuple[str | None, str]:
        same = AnalyticsAIIntegration(AnalyticsConfig(mode="daemon", namespace=namespace))
        await same.start()
        other = AnalyticsAIIntegration(AnalyticsConfig(mode="daemon", namespace="elsewhere"))
        try:
            await other.start()
        except ValueError as exc:
            return same.namespace, str(exc)
        raise AssertionError("start() accepted a namespace emit does not write into")

    started, error = run_async(scenario)
    assert started == namespace
    assert "'elsewhere'" in error and repr(namespace) in error


def test_record_returns_true_then_false_when_the_lane_is_full(
    run_async: RunAsync, namespace: str
) -> None:
    """Without start() and without any daemon, record_operation_metrics writes into the
    thread's lane (True) until it is full, then returns False (dropped and counted), never
    waiting; the LLM extras pass through to emit."""

    async def scenario() -> list[bool]:
        integration = AnalyticsAIIntegration()
        results = [await integration.record_operation_metrics(
            "chat_completion", 80.0, 0.9, True, model="llama", cache_hit=False, ttft_ms=20.0,
            queue_ms=1.0, tokens_in=100, tokens_out=50)]
        results += [await integration.record_operation_metrics("op", 1.0)
                    for _ in range(L.DEFAULT_CAPACITY)]
        return results

    results = run_async(scenario)
    assert results[: L.DEFAULT_CAPACITY] == [True] * L.DEFAULT_CAPACITY
    assert results[-1] is False
    assert len(lane_names(namespace)) == 1


# (emit's arguments, as the integration names them) → one bad value each
BAD_RECORDS = [
    {"operation_type": 42},
    {"operation_type": ""},
    {"operation_type": "two\nlines"},
    {"processing_time_ms": "fast"},
    {"processing_time_ms": None},
    {"quality_score": "high"},
    {"success": None},
    {"model": 5},
    {"cache_hit": "y"},
    {"ttft_ms": "z"},
    {"tokens_in": -1},
    {"tokens_out": 2**32},
    {"tokens_per_second": 3},  # not an argument of emit
]


TO_EMIT = {"operation_type": "operation", "processing_time_ms": "latency_ms",
           "quality_score": "quality"}


@pytest.mark.parametrize("bad", BAD_RECORDS, ids=lambda bad: f"{bad}"[:40])
def test_bad_arguments_raise_as_emit_raises_them(bad: dict[str, object],
                                                 run_async: RunAsync) -> None:
    """A bad argument to record_operation_metrics raises the very error emit raises for it
    (same type, same message naming the argument), before and after start()."""
    record = {"operation_type": "op", "processing_time_ms": 1.0, **bad}
    direct = {TO_EMIT.get(k, k): v for k, v in record.items()}

    def outcome(call: Callable[[], object]) -> tuple[type[BaseException], str]:
        with pytest.raises((TypeError, ValueError)) as info:
            call()
        return info.type, str(info.value)

    expected = outcome(lambda: client.emit(**direct))  # type: ignore[arg-type]

    async def scenario() -> list[tuple[type[BaseException], str]]:
        integration = AnalyticsAIIntegration(AnalyticsConfig(mode="daemon"))
        seen = []
        for _ in range(2):
            try:
                await integration.record_operation_metrics(**record)  # type: ignore[arg-type]
            except (TypeError, ValueError) as exc:
                seen.append((type(exc), str(exc)))
            if not integration.is_running:
                await integration.start()
        return seen

    assert run_async(scenario) == [expected, expected]


# -- configuration -----------------------------------------------------------------------------

SEED_DEFAULTS = {
    "max_queue_size": 1000, "batch_size": 50, "batch_timeout_seconds": 5.0,
    "max_processing_time_seconds": 10.0, "snapshot_interval_seconds": 60.0,
    "enable_circuit_breaker": True, "failure_threshold": 5, "recovery_timeout_seconds": 30.0,
}


def test_config_defaults_are_the_seeds() -> None:
    """AnalyticsConfig() has the original design's defaults, plus namespace None (the
    environment's), mode "auto" and the daemon's loopback URL; it is frozen."""
    config = AnalyticsConfig()
    for name, value in SEED_DEFAULTS.items():
        assert getattr(config, name) == value, name
        assert type(getattr(config, name)) is type(value), name
    assert (config.namespace, config.mode, config.daemon_url) == (
        None, "auto", "http://127.0.0.1:9466")
    with pytest.raises(AttributeError):
        config.batch_size = 10  # type: ignore[misc]
    assert AnalyticsConfig(batch_timeout_seconds=2).batch_timeout_seconds == 2.0
    assert type(AnalyticsConfig(batch_timeout_seconds=2).batch_timeout_seconds) is float


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_queue_size", 8), ("max_queue_size", 1.5), ("max_queue_size", True),
        ("batch_size", 0), ("batch_timeout_seconds", 0.0), ("batch_timeout_seconds", "5"),
        ("max_processing_time_seconds", math.nan), ("snapshot_interval_seconds", -1.0),
        ("enable_circuit_breaker", 1), ("failure_threshold", 0),
        ("recovery_timeout_seconds", math.inf), ("namespace", "a.b"), ("namespace", ""),
        ("mode", "threaded"), ("daemon_url", "127.0.0.1:9466"), ("daemon_url", "ftp://h/"),
        ("daemon_url", None),
    ],
)
def test_config_rejects_bad_values_naming_them(field: str, value: object) -> None:
    """Each bad setting raises ValueError whose message names the field and shows the
    value."""
    with pytest.raises(ValueError, match=rf"AnalyticsConfig\.{field}\b") as info:
        AnalyticsConfig(**{field: value})  # type: ignore[arg-type]
    assert repr(value) in str(info.value)


@pytest.mark.parametrize("field", sorted(SEED_DEFAULTS))
def test_config_ranges_agree_with_the_daemons(field: str) -> None:
    """For every setting the facade shares with the daemon, AnalyticsConfig and the daemon's
    config (two checks over one table of ranges) accept the same values at and just beyond
    each bound, so a config accepted here is never refused when embedded mode hands it to the
    daemon."""
    from ai_analytics.client._settings import FACADE_SETTINGS

    kind, low, high = FACADE_SETTINGS[field]
    if kind is bool:
        candidates: list[object] = [True, False, 0, 1]
    elif kind is int:
        candidates = [low, high, low - 1, high + 1]
    else:
        candidates = [low, high, math.nextafter(low, -math.inf), math.nextafter(high, math.inf)]
    for value in candidates:
        try:
            AnalyticsConfig(**{field: value})  # type: ignore[arg-type]
            ours = True
        except ValueError:
            ours = False
        try:
            config_from_mapping({field: value})
            theirs = True
        except ConfigError:
            theirs = False
        assert ours == theirs, (field, value, ours, theirs)


def test_embedded_settings_map_the_seed_fields_onto_the_daemon_config() -> None:
    """Embedded mode's daemon config takes the seed settings under the same keys, with the
    namespace, a state directory, HTTP off, and a stop timeout; the daemon accepts it."""
    cfg = AnalyticsConfig(max_queue_size=4096, batch_size=10, batch_timeout_seconds=0.5,
                          snapshot_interval_seconds=2.0, enable_circuit_breaker=False)
    daemon_config = config_from_mapping(cfg.daemon_settings("ns-1", "/state"))
    for name in SEED_DEFAULTS:
        assert getattr(daemon_config, name) == getattr(cfg, name), name
    assert daemon_config.namespace == "ns-1"
    assert daemon_config.state_dir == "/state"
    assert daemon_config.http_enabled is False
    assert daemon_config.stop_timeout_seconds == 5.0


@pytest.mark.parametrize("method", ["start", "stop", "get_performance_snapshot"])
@pytest.mark.parametrize("timeout", [0, -1.0, "5", math.nan])
def test_timeouts_must_be_positive(method: str, timeout: object) -> None:
    """start, stop and get_performance_snapshot refuse a timeout that is not a positive
    number of seconds with ValueError showing it."""
    integration = AnalyticsAIIntegration(AnalyticsConfig(mode="daemon"))
    with pytest.raises(ValueError, match=r"timeout must be a positive number") as info:
        asyncio.run(getattr(integration, method)(timeout=timeout))
    assert repr(timeout) in str(info.value)


def test_integration_takes_only_an_analytics_config() -> None:
    """The first argument must be an AnalyticsConfig (or None for the defaults)."""
    assert AnalyticsAIIntegration().config == AnalyticsConfig()
    with pytest.raises(TypeError, match="AnalyticsConfig"):
        AnalyticsAIIntegration({"batch_size": 50})  # type: ignore[arg-type]


def test_operation_type_is_the_clients() -> None:
    """AIOperationType here is the client's own enum, usable wherever a name is."""
    assert AIOperationType is client.AIOperationType
    assert AIOperationType.STYLE_TRANSFER.value == "style_transfer"


def test_an_embedded_daemon_never_forks_whatever_its_settings_say(
        namespace: str, on_thread: Callable[..., Any]) -> None:
    """The worker's own process is never copied: an embedded daemon asked to compute every
    snapshot's statistics in a child (``snapshot_child: always``) computes them on its
    snapshot thread (none came from a child)."""
    from ai_analytics.daemon.embedded import EmbeddedDaemon

    settings = {**AnalyticsConfig(snapshot_interval_seconds=0.2).daemon_settings(namespace, "/"),
                "snapshot_child": "always"}
    embedded = EmbeddedDaemon(settings, namespace)
    embedded.start()
    try:
        assert embedded.wait_ready(timeout=60.0), embedded.failure()
        on_thread(client.emit, "embedded_op", 3.0)
        assert wait_for(lambda: (embedded.snapshot() or {}).get("events", {}).get("received"),
                        timeout=60.0)
        document = embedded.snapshot()
        assert document is not None
        assert document["drain"]["stats_in_child"] == 0
    finally:
        embedded.request_stop(timeout=5.0)
        assert embedded.join(timeout=30.0)
