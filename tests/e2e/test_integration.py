"""The original design's API (``ai_analytics.client.integration``) over ``emit``, with real
processes: the seed's usage example end to end in embedded mode, daemon mode against a real
``ai-analyticsd``, the bounded stop of an embedded daemon, and import cost.

Each scenario runs in a fresh interpreter (``run_python``) with the test's namespace in its
environment: the client binds a thread's lane to the namespace of its first event, and a
subprocess keeps the embedded daemon's threads, its namespace lock and its logging out of the
test process.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ai_analytics.client.integration import daemon_holds_namespace
from ai_analytics.core.namespace_lock import daemon_running

from helpers import DaemonProcess, free_port, heavy_modules, run_python


def report_of(result: Any) -> dict[str, Any]:
    """The JSON report a scenario prints as its last line of output."""
    return json.loads(result.stdout.splitlines()[-1])


def series(snapshot: dict[str, Any], operation: str, model: str | None = None) -> dict[str, Any]:
    """The one series of ``operation`` (and ``model``, unless None: any model)."""
    rows = [r for r in snapshot["operations"]
            if r["operation"] == operation and model in (None, r["model"])]
    assert len(rows) == 1, snapshot["operations"]
    return rows[0]


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
    lock released; no snapshot forks the worker's process."""
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
    assert final["drain"]["stats_in_child"] == 0  # the worker's own process is never forked
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
