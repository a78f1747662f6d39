"""The original design's API (``ai_analytics.client.integration``) over ``emit``: the seed's
usage example end to end in embedded mode, daemon mode against a real ``ai-analyticsd``, the
lifecycle (bounded stop, one start), argument errors, configuration checks, and import cost.

Scenarios that start a daemon (embedded or not) run in a fresh interpreter (``run_python``)
with the test's namespace in its environment: the client binds a thread's lane to the
namespace of its first event, and a subprocess keeps the embedded daemon's threads, its
namespace lock and its logging out of the test process. Quick checks that start no daemon
run ``asyncio.run`` on a fresh thread of this process, so on a fresh lane of the namespace.
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
import urllib.error
import urllib.request
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from ai_analytics import client
from ai_analytics.client import _layout as L
from ai_analytics.client.integration import (
    AIOperationType,
    AnalyticsAIIntegration,
    AnalyticsConfig,
    daemon_holds_namespace,
)
from ai_analytics.core.config import ConfigError, config_from_mapping
from ai_analytics.core.namespace_lock import daemon_running

from helpers import DaemonProcess, free_port, lane_names, run_python

HEAVY = ("numpy", "yaml", "psutil", "pynvml", "click", "ai_analytics.daemon")

RunAsync = Callable[[Callable[[], Coroutine[Any, Any, Any]]], Any]


@pytest.fixture
def run_async(on_thread: Callable[..., Any]) -> RunAsync:
    """Run ``asyncio.run(make())`` on one fresh thread (one fresh lane in this test's
    namespace); return its result or re-raise its error."""
    return lambda make: on_thread(asyncio.run, make())


def report_of(result: Any) -> dict[str, Any]:
    """The JSON report a scenario prints as its last line of output."""
    return json.loads(result.stdout.splitlines()[-1])


def series(snapshot: dict[str, Any], operation: str, model: str | None = None) -> dict[str, Any]:
    """The one series of ``operation`` (and ``model``, unless None: any model)."""
    rows = [r for r in snapshot["operations"]
            if r["operation"] == operation and model in (None, r["model"])]
    assert len(rows) == 1, snapshot["operations"]
    return rows[0]


def heavy_modules(modules: list[str]) -> list[str]:
    return sorted(m for m in modules if m in HEAVY or m.startswith(tuple(h + "." for h in HEAVY)))


# -- the seed's usage example, embedded --------------------------------------------------------

SEED_EXAMPLE = """
    import asyncio, json, os, sys, threading, time
    from ai_analytics.client.integration import (
        AIOperationType, AnalyticsAIIntegration, AnalyticsConfig)
    from ai_analytics.core.namespace_lock import daemon_running

    class Dashboard:
        def __init__(self):
            self.snapshots = []

        def on_snapshot(self, snapshot):
            self.snapshots.append(snapshot)

    analytics_dashboard = Dashboard()

    async def main():
        # The original design's "Utilisation", verbatim but for a short snapshot interval.
        config = AnalyticsConfig(
            max_queue_size=1000,
            batch_size=50,
            batch_timeout_seconds=5.0,
            snapshot_interval_seconds=0.2,
        )

        integration = AnalyticsAIIntegration(config, analytics_dashboard)
        await integration.start()
        mode, running = integration.mode, integration.is_running
        embedded = integration._embedded  # private: to look at its thread and directory
        lock_held = daemon_running(integration.namespace)

        recorded = []
        for _ in range(4):
            recorded.append(await integration.record_operation_metrics(
                operation_type=AIOperationType.STYLE_TRANSFER,
                processing_time_ms=523.1,
                quality_score=0.94,
                success=True
            ))
        recorded.append(await integration.record_operation_metrics(
            operation_type=AIOperationType.STYLE_TRANSFER,
            processing_time_ms=200.0,
            success=False
        ))

        # About one snapshot interval until the daemon has drained and snapshotted them.
        waited = time.monotonic()
        deadline = waited + 10.0
        while True:
            snapshot = await integration.get_performance_snapshot()
            counts = {row["operation"]: row["count"] for row in snapshot["operations"]}
            if counts.get("style_transfer") == 5 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        waited = time.monotonic() - waited

        stopping = time.monotonic()
        stopped = await integration.stop(timeout=5.0)
        stop_seconds = time.monotonic() - stopping
        final = await integration.get_performance_snapshot()
        print(json.dumps({
            "mode": mode, "running": running, "lock_held": lock_held, "recorded": recorded,
            "waited": waited, "snapshot": snapshot, "stopped": stopped,
            "stop_seconds": stop_seconds, "final": final,
            "running_after": integration.is_running,
            "thread_alive": embedded.thread.is_alive(),
            "state_dir_exists": os.path.exists(embedded.state_dir),
            "lock_held_after": daemon_running(integration.namespace),
            "dashboard_got": len(analytics_dashboard.snapshots),
            "dashboard_last_is_final": analytics_dashboard.snapshots[-1] == final,
            "threads": sorted(t.name for t in threading.enumerate()),
        }))

    asyncio.run(main())
"""


def test_seed_usage_example_embedded_end_to_end(namespace: str) -> None:
    """The original design's usage example, run as written with no daemon around: start()
    picks embedded mode and takes the namespace; the records are written (True) and, about
    one snapshot interval later, the snapshot has a style_transfer series with the right
    count, errors, latency and quality; the dashboard's on_snapshot gets every snapshot;
    stop(timeout=5.0) returns True well within its timeout, after a final drain (nothing
    pending), with the daemon's thread ended, its state directory removed and the namespace
    lock released."""
    report = report_of(run_python(SEED_EXAMPLE, namespace))
    assert report["mode"] == "embedded"
    assert report["running"] is True
    assert report["lock_held"] is True
    assert report["recorded"] == [True] * 5
    assert report["waited"] < 5.0

    row = series(report["snapshot"], "style_transfer")
    assert row["count"] == 5
    window = row["windows"]["since_start"]
    assert (window["count"], window["successes"], window["errors"]) == (5, 4, 1)
    latency = window["latency_ms"]
    assert latency["mean"] == pytest.approx((4 * 523.1 + 200.0) / 5)
    assert (latency["min"], latency["max"]) == (pytest.approx(200.0), pytest.approx(523.1))
    assert window["quality"]["count"] == 4  # the failed record had no quality score
    assert window["quality"]["mean"] == pytest.approx(0.94)
    assert report["snapshot"]["daemon"]["max_queue_size"] == 1000  # the seed setting applied
    assert report["snapshot"]["daemon"]["batch_size"] == 50

    assert report["stopped"] is True
    assert report["stop_seconds"] < 5.0
    final = report["final"]
    assert final["daemon"]["running"] is False
    assert final["events"]["received"] == 5
    assert final["events"]["pending"] == 0
    assert report["running_after"] is False
    assert report["thread_alive"] is False
    assert report["state_dir_exists"] is False
    assert report["lock_held_after"] is False
    assert report["dashboard_got"] >= 2  # every polled snapshot, and the final one
    assert report["dashboard_last_is_final"] is True
    assert not [t for t in report["threads"] if t.startswith("ai-analytics-embedded")]


def test_event_without_a_model_counts_under_no_model(namespace: str) -> None:
    """An operation recorded without a model (the seed's example passes none) is a series
    with model "" in the snapshot, not "other", and overflows no cardinality cap."""
    report = report_of(run_python(
        """
        import asyncio, json
        from ai_analytics.client.integration import AnalyticsAIIntegration, AnalyticsConfig

        async def main():
            integration = AnalyticsAIIntegration(AnalyticsConfig(snapshot_interval_seconds=0.1))
            await integration.start()
            await integration.record_operation_metrics("no_model_op", 5.0)
            await integration.stop()
            print(json.dumps(await integration.get_performance_snapshot()))

        asyncio.run(main())
        """,
        namespace,
    ))
    assert series(report, "no_model_op")["model"] == ""
    assert report["cardinality"]["overflow_events"]["models"] == 0


def test_record_before_start_and_async_with(namespace: str) -> None:
    """record_operation_metrics works before start() (emit needs no daemon: the event waits
    in its lane) and that event is counted once an embedded daemon starts; ``async with``
    starts the integration on entry and stops it on exit (lock released, the daemon's control
    segment withdrawn); after stop, recording still returns True at once."""
    report = report_of(run_python(
        """
        import asyncio, json, os
        from ai_analytics.client.integration import AnalyticsAIIntegration, AnalyticsConfig
        from ai_analytics.core.namespace_lock import daemon_running

        async def main():
            config = AnalyticsConfig(snapshot_interval_seconds=0.1, batch_timeout_seconds=0.05)
            integration = AnalyticsAIIntegration(config)
            before = await integration.record_operation_metrics("early_op", 12.5, 0.5)
            async with integration as entered:
                same = entered is integration
                mode = integration.mode
                for _ in range(100):
                    snapshot = await integration.get_performance_snapshot()
                    if any(r["operation"] == "early_op" for r in snapshot["operations"]):
                        break
                    await asyncio.sleep(0.05)
            ns = integration.namespace
            after = await integration.record_operation_metrics("late_op", 1.0)
            print(json.dumps({
                "before": before, "same": same, "mode": mode, "snapshot": snapshot,
                "running_after": integration.is_running, "lock_after": daemon_running(ns),
                "control_after": os.path.exists(f"/dev/shm/{ns}.control"), "after": after,
            }))

        asyncio.run(main())
        """,
        namespace,
    ))
    assert report["before"] is True
    assert report["same"] is True
    assert report["mode"] == "embedded"
    row = series(report["snapshot"], "early_op")
    assert row["count"] == 1
    assert row["windows"]["since_start"]["latency_ms"]["mean"] == pytest.approx(12.5)
    assert report["running_after"] is False
    assert report["lock_after"] is False
    assert report["control_after"] is False
    assert report["after"] is True


def test_stop_is_bounded_when_the_daemon_thread_hangs(namespace: str, tmp_path: Path) -> None:
    """If the embedded daemon's shutdown hangs, stop(timeout=1.0) still returns within about
    a second, returns False and logs a warning instead of raising; the process can exit (the
    daemon runs on a daemon thread), and its temporary state directory is removed at exit."""
    started = time.monotonic()
    report = report_of(run_python(
        """
        import asyncio, json, logging, tempfile, threading, time
        from ai_analytics.client.integration import AnalyticsAIIntegration, AnalyticsConfig
        from ai_analytics.daemon import service

        tempfile.tempdir = TMP

        records = []
        handler = logging.Handler()
        handler.emit = records.append
        logging.getLogger("ai_analytics.client").addHandler(handler)

        original = service.Daemon._shutdown

        def hanging_shutdown(self):
            threading.Event().wait(30.0)
            original(self)

        service.Daemon._shutdown = hanging_shutdown

        async def main():
            integration = AnalyticsAIIntegration(
                AnalyticsConfig(mode="embedded", snapshot_interval_seconds=0.1))
            await integration.start()
            begun = time.monotonic()
            stopped = await integration.stop(timeout=1.0)
            print(json.dumps({
                "stopped": stopped, "seconds": time.monotonic() - begun,
                "warnings": [r.getMessage() for r in records if r.levelno == logging.WARNING],
                "state_dir": integration._embedded.state_dir,
            }))

        asyncio.run(main())
        """.replace("TMP", repr(str(tmp_path))),
        namespace,
        timeout=30.0,
    ))
    assert report["stopped"] is False
    assert 0.9 <= report["seconds"] < 1.5
    assert any("did not stop within 1.0 s" in w for w in report["warnings"]), report["warnings"]
    assert time.monotonic() - started < 20.0  # the hung thread did not hold up the exit
    assert report["state_dir"].startswith(str(tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_embedded_mode_refused_while_a_daemon_holds_the_namespace(
    daemon_factory: Callable[..., DaemonProcess], namespace: str
) -> None:
    """mode="embedded" while an ai-analyticsd already drains the namespace (as when one took
    the lock between auto mode's check and the embedded start): start() raises
    EmbeddedModeError naming the other daemon and leaves nothing running, no temporary
    directory behind, and the integration unstarted."""
    daemon = daemon_factory()
    report = report_of(run_python(
        """
        import asyncio, glob, json, os, tempfile, threading
        from ai_analytics.client.integration import (
            AnalyticsAIIntegration, AnalyticsConfig, EmbeddedModeError)

        namespace = os.environ["AI_ANALYTICS_NAMESPACE"]
        pattern = os.path.join(tempfile.gettempdir(), f"ai-analytics-{namespace}-*")

        async def main():
            integration = AnalyticsAIIntegration(AnalyticsConfig(mode="embedded"))
            try:
                await integration.start()
            except EmbeddedModeError as exc:
                error = str(exc)
            print(json.dumps({
                "error": error, "mode": integration.mode, "dirs": glob.glob(pattern),
                "threads": [t.name for t in threading.enumerate()],
            }))

        asyncio.run(main())
        """,
        namespace,
    ))
    assert "another ai-analyticsd" in report["error"]
    assert f"pid {daemon.proc.pid}" in report["error"]
    assert "mode='daemon'" in report["error"]
    assert report["mode"] is None
    assert report["dirs"] == []
    assert not [t for t in report["threads"] if t.startswith("ai-analytics-embedded")]


def test_embedded_mode_without_the_daemon_dependencies_is_a_clear_error(namespace: str) -> None:
    """Where numpy cannot be imported, embedded mode's start() raises EmbeddedModeError that
    says which dependencies it needs and how to do without them; recording still works."""
    report = report_of(run_python(
        """
        import asyncio, json, sys
        sys.modules["numpy"] = None  # makes "import numpy" fail
        from ai_analytics.client.integration import (
            AnalyticsAIIntegration, AnalyticsConfig, EmbeddedModeError)

        async def main():
            integration = AnalyticsAIIntegration(AnalyticsConfig())
            try:
                await integration.start()
            except EmbeddedModeError as exc:
                error, cause = str(exc), type(exc.__cause__).__name__
            recorded = await integration.record_operation_metrics("op", 1.0)
            print(json.dumps({"error": error, "cause": cause, "recorded": recorded}))

        asyncio.run(main())
        """,
        namespace,
    ))
    assert "numpy" in report["error"]
    assert "mode='daemon'" in report["error"]
    assert report["cause"] == "ModuleNotFoundError"
    assert report["recorded"] is True


# -- daemon mode against a real ai-analyticsd --------------------------------------------------

DAEMON_MODE_SCENARIO = """
    import asyncio, json, sys, time
    from ai_analytics.client.integration import (
        AIOperationType, AnalyticsAIIntegration, AnalyticsConfig)

    async def main():
        config = AnalyticsConfig(daemon_url="http://127.0.0.1:{port}")
        integration = AnalyticsAIIntegration(config)
        await integration.start()
        recorded = [
            await integration.record_operation_metrics(
                AIOperationType.STYLE_TRANSFER, 100.0 + i, 0.9, True, model="sd-xl")
            for i in range(7)
        ]
        deadline = time.monotonic() + 10.0
        while True:
            began = time.monotonic()
            snapshot = await integration.get_performance_snapshot(timeout=2.0)
            seconds = time.monotonic() - began
            rows = [] if snapshot is None else snapshot.get("operations", [])
            if snapshot is None or any(r["count"] == 7 for r in rows):
                break
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        stopped = await integration.stop(timeout=5.0)
        print(json.dumps({
            "mode": integration.mode, "recorded": recorded, "snapshot": snapshot,
            "snapshot_seconds": seconds, "stopped": stopped, "modules": sorted(sys.modules),
        }))

    asyncio.run(main())
"""


def status_endpoint_problem(port: int) -> str | None:
    """Why the daemon's /status cannot be read on ``port`` (404, refused), None if it can."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5.0):
            return None
    except urllib.error.HTTPError as exc:
        exc.close()
        return f"it answers HTTP {exc.code}"
    except urllib.error.URLError as exc:
        return f"connecting fails: {exc.reason}"


def test_daemon_mode_records_land_in_the_running_daemon(
    daemon_factory: Callable[..., DaemonProcess], namespace: str
) -> None:
    """With an ai-analyticsd holding the namespace, start() picks daemon mode (its lock test
    agrees with the daemon's own) and starts nothing; records go straight to shared memory and
    the daemon counts them (its state file shows the series); the worker never imports numpy,
    yaml, psutil, pynvml, click or the daemon package; stop() has nothing to stop."""
    port = free_port()
    daemon = daemon_factory(http_port=port)
    assert daemon_holds_namespace(namespace) is True
    assert daemon_running(namespace) is True

    report = report_of(run_python(DAEMON_MODE_SCENARIO.replace("{port}", str(port)), namespace))
    assert report["mode"] == "daemon"
    assert report["recorded"] == [True] * 7
    assert report["stopped"] is True
    assert heavy_modules(report["modules"]) == []

    state = daemon.state_after(
        lambda doc: any(r["operation"] == "style_transfer" for r in doc["operations"]),
        what="the records in the daemon's state",
    )
    row = series(state, "style_transfer", "sd-xl")
    assert row["count"] == 7
    assert row["windows"]["since_start"]["latency_ms"]["mean"] == pytest.approx(103.0)
    assert daemon.proc.poll() is None  # the integration's stop() left the daemon running

    daemon.stop()
    assert daemon_holds_namespace(namespace) is False
    assert daemon_running(namespace) is False


def test_daemon_mode_snapshot_from_the_status_endpoint(
    daemon_factory: Callable[..., DaemonProcess], namespace: str
) -> None:
    """In daemon mode get_performance_snapshot() is the daemon's /status document, with the
    recorded series in it. Where the daemon does not serve /status yet, the call must still
    return None within its timeout without raising (checked), and the rest is skipped."""
    port = free_port()
    daemon_factory(http_port=port)
    report = report_of(run_python(DAEMON_MODE_SCENARIO.replace("{port}", str(port)), namespace))
    assert report["mode"] == "daemon"
    assert report["snapshot_seconds"] < 3.0
    problem = status_endpoint_problem(port)
    if problem is not None:
        assert report["snapshot"] is None
        pytest.skip(f"ai-analyticsd does not serve /status on http_port yet ({problem}): only "
                    "the None path of daemon-mode snapshots was checked")
    snapshot = report["snapshot"]
    assert snapshot is not None
    assert snapshot["namespace"] == namespace
    assert series(snapshot, "style_transfer", "sd-xl")["count"] == 7


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


# -- import cost -------------------------------------------------------------------------------


def test_import_loads_no_heavy_modules(namespace: str) -> None:
    """In a fresh interpreter, importing ai_analytics.client.integration loads none of numpy,
    yaml, psutil, pynvml, click or the daemon package, nor urllib.request (only daemon mode's
    first snapshot needs it)."""
    report = report_of(run_python(
        """
        import json, sys
        import ai_analytics.client.integration
        print(json.dumps(sorted(sys.modules)))
        """,
        namespace,
    ))
    assert "ai_analytics.client.integration" in report
    assert heavy_modules(report) == []
    assert "urllib.request" not in report
