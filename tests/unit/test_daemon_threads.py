"""What other threads may do to a running Daemon (its class docstring lists it): stop it with
a narrower deadline, ask for a reload, and read its health and latest snapshot, while the loop
runs on a thread of its own in this process; and the snapshot thread, which never holds up the
loop."""

from __future__ import annotations

import sqlite3
import threading
import urllib.request
from collections.abc import Callable
from pathlib import Path

from ai_analytics import client
from ai_analytics.cli.shm_view import read_namespace
from ai_analytics.core.config import load_config
from ai_analytics.core.history import HistoryStore, history_path
from ai_analytics.core.state import read_state
from ai_analytics.daemon import Daemon
from ai_analytics.daemon.snapshot.worker import SnapshotThread

from helpers import wait_for


def test_a_running_daemon_is_driven_from_other_threads(
    make_config: Callable[..., Path], state_dir: Path
) -> None:
    config = load_config(make_config(stop_timeout_seconds=30.0, batch_size=64,
                                     snapshot_interval_seconds=0.05))
    reloaded = load_config(make_config(stop_timeout_seconds=30.0, batch_size=128,
                                       snapshot_interval_seconds=0.05))
    daemon = Daemon(config)
    loop = threading.Thread(target=daemon.run, kwargs={"reload_config": lambda: reloaded},
                            daemon=True)
    loop.start()
    try:
        wait_for(lambda: daemon.health()[0], what="a healthy loop")
        writer = threading.Thread(target=lambda: [client.emit("threads", 2.0, model="m")
                                                  for _ in range(500)])
        writer.start()
        writer.join()

        def counted() -> bool:
            document = daemon.last_document
            return document is not None and document["events"]["received"] == 500

        wait_for(counted, what="a snapshot that counts the 500 events")
        published = daemon.last_document
        assert published is not None
        # Once /status has been asked for, the snapshot thread renders it ahead for every
        # new document: no further request is made here.
        http = daemon.http
        assert http is not None
        with urllib.request.urlopen(f"http://127.0.0.1:{config.http_port}/status") as answer:
            assert answer.status == 200
        rendered = http.renders.get("status", 0)
        wait_for(lambda: http.renders.get("status", 0) > rendered,
                 what="a later document's /status rendered by the snapshot thread")
        first = dict(published)
        wait_for(lambda: daemon.last_document is not published, what="the next snapshot")
        assert dict(published) == first  # a published document is never changed afterwards

        daemon.request_reload()
        wait_for(lambda: daemon.config.batch_size == 128, what="the reload")
        assert daemon.drainer.batch_size == 128  # handed to the part that keeps its own

        daemon.request_stop(drain_seconds=2.0)  # narrower than stop_timeout_seconds (30 s)
        loop.join(timeout=60.0)
        assert not loop.is_alive()
    finally:
        daemon.request_stop()
        loop.join(timeout=60.0)
    # The final writes shared what the 2 s left (max_processing_time_seconds is 10 s, and a
    # 30 s stop would have left them that): the narrower deadline ruled the stop, and it is
    # the stop's own, the config never swapped under the loop.
    assert all(sink.bounded.timeout <= 1.0 for sink in daemon.sinks.guarded.values())
    assert daemon.config.stop_timeout_seconds == 30.0
    assert daemon.health() == (False, "stopping")
    final = read_state(str(state_dir))
    assert final is not None and final["daemon"]["running"] is False
    assert final["events"]["received"] == 500


def test_a_slow_snapshot_does_not_hold_up_draining(make_config: Callable[..., Path],
                                                   state_dir: Path, namespace: str) -> None:
    """The snapshot thread stuck in a history write (the database locked by another
    connection, the daemon's history store waiting up to ten minutes for it) holds up no
    drain: lanes written meanwhile are drained, their threads' lanes reclaimed but not
    unlinked (no state file counts them yet), and the snapshots due meanwhile are delayed and
    counted; once the lock goes, the stuck snapshot ends, the next ones count everything and
    the reclaimed lanes are unlinked."""
    config = load_config(make_config(stop_timeout_seconds=30.0, snapshot_interval_seconds=0.05,
                                     max_processing_time_seconds=600.0))
    daemon = Daemon(config)
    # The same store the daemon makes, with a busy timeout long enough to outlast the test:
    # its write waits on the lock until the test lets go.
    daemon.sinks.history.close()
    daemon.sinks.history = HistoryStore(str(state_dir), config.history_max_age_seconds,
                                        config.history_max_megabytes, timeout=600.0)
    loop = threading.Thread(target=daemon.run, daemon=True)
    loop.start()
    history = daemon.sinks.guarded["history"].bounded
    blocker = sqlite3.connect(history_path(str(state_dir)), isolation_level=None)
    try:
        wait_for(lambda: daemon.last_document is not None, what="the first snapshot")
        blocker.execute("BEGIN IMMEDIATE")  # the write lock, until the rollback below
        wait_for(lambda: history.running_seconds() is not None,
                 what="a history write waiting on the lock")
        stuck = daemon.last_document
        sent = 0
        for _ in range(3):  # each thread its own lane, reclaimed when the thread ends
            writer = threading.Thread(target=lambda: [client.emit("slow", 1.0, model="m")
                                                      for _ in range(3000)])
            writer.start()
            writer.join()
            sent += 3000

            def drained(expected: int = sent) -> bool:
                totals = read_namespace(namespace).totals()
                return totals["published"] >= expected and totals["pending"] == 0

            wait_for(drained, timeout=60.0, what="the loop to drain the new lane")
        wait_for(lambda: daemon.lanes.folded_count == 3, timeout=60.0,
                 what="the three retired lanes reclaimed")
        wait_for(lambda: daemon.snapshots_delayed >= 1, timeout=60.0,
                 what="a snapshot due while the stuck one is built")
        # All of that while the one snapshot still waited on the lock.
        assert history.running_seconds() is not None
        assert daemon.last_document is stuck
        assert len(read_namespace(namespace).lanes) >= 3  # counted in no state file yet
    finally:
        blocker.rollback() if blocker.in_transaction else None
        blocker.close()

    def counted() -> bool:
        document = daemon.last_document
        return (document is not stuck and document is not None
                and document["events"]["received"] == sent
                and document["drain"]["snapshots_delayed"] >= 1)

    wait_for(counted, timeout=60.0, what="a snapshot that counts every event")
    wait_for(lambda: not read_namespace(namespace).lanes, timeout=60.0,
             what="the reclaimed lanes unlinked once a state file counts them")
    daemon.request_stop()
    loop.join(timeout=60.0)
    assert not loop.is_alive()
    final = read_state(str(state_dir))
    assert final is not None and final["events"]["received"] == sent
    assert final["lanes_summary"]["reclaimed"] == 3


def test_the_snapshot_thread_takes_one_job_at_a_time_and_outlives_a_failed_one() -> None:
    """``submit`` refuses while a job runs (the loop delays that snapshot); a result is handed
    back once, and not while the next job runs; a job that raises is logged and counted, and
    the thread takes the next one."""
    release = threading.Event()
    started = threading.Event()

    def job(capture: int) -> str:
        if capture == 2:
            raise ValueError("a bug in one snapshot")
        started.set()
        release.wait(60.0)
        return f"saved {capture}"

    worker: SnapshotThread[int, str] = SnapshotThread(job)
    try:
        assert worker.submit(1)
        started.wait(60.0)
        assert not worker.submit(99)  # still building the first
        assert worker.take_result() is None  # nothing while it runs
        release.set()
        wait_for(lambda: not worker.busy, what="the first job's end")
        assert worker.take_result() == (1, "saved 1")
        assert worker.take_result() is None  # handed back once
        assert worker.submit(2)
        wait_for(lambda: not worker.busy, what="the failing job's end")
        assert worker.failures == 1 and worker.take_result() is None
        started.clear()
        assert worker.submit(3)
        wait_for(lambda: not worker.busy, what="the job after the failure")
        assert worker.take_result() == (3, "saved 3")
    finally:
        release.set()
        assert worker.close(60.0)
