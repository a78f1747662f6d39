"""The circuit breakers of real daemons: their sinks break and mend while producers emit,
draining goes on, and /status, served from memory, shows each breaker's state."""

from __future__ import annotations

import contextlib
import sqlite3
import time

from ai_analytics.core.history import history_path

from helpers import events_total, read_config, status_where


def sink(document: dict, name: str) -> dict:
    assert "sinks" in document, ('the snapshot has no "sinks": build_document '
                                 '(daemon/snapshot/builder.py) must include "sinks": '
                                 'daemon.sinks.states()')
    return document["sinks"][name]


def breaker_config(make_config, **settings):
    config = make_config(failure_threshold=2, recovery_timeout_seconds=1,
                         snapshot_interval_seconds=0.1, **settings)
    return config, read_config(config)["http_port"]


def test_state_directory_replaced_by_a_file_opens_the_breaker_and_recovers(
        daemon_factory, make_config, emitters, state_dir, tmp_path):
    """A real daemon whose state directory becomes a regular file (state.json writes fail):
    its state breaker opens, draining goes on (/status, served from memory, shows received
    growing), the history sink is not affected; once the directory is back the breaker closes
    by itself and state.json counts every event emitted (exact reconciliation)."""
    config, port = breaker_config(make_config)
    daemon = daemon_factory(config)
    emitting = emitters()
    away = tmp_path / "state-away"
    try:
        daemon.state_after(lambda s: s["events"]["received"] > 0, what="first events")
        state_dir.rename(away)
        state_dir.write_text("not a directory")
        broken = status_where(port, lambda d: sink(d, "state")["state"] == "open",
                              what="the state breaker to open")
        assert "cannot write state in" in sink(broken, "state")["last_error"]
        assert sink(broken, "history")["state"] == "closed"  # isolated from the other sink
        before = broken["events"]["received"]
        status_where(port, lambda d: d["events"]["received"] > before
                     and sink(d, "state")["state"] == "open"
                     and sink(d, "state")["skipped"] > 0, what="draining while open")
    finally:
        if state_dir.is_file():
            state_dir.unlink()
            away.rename(state_dir)
    status_where(port, lambda d: sink(d, "state")["state"] == "closed", what="recovery")
    emitted = emitting.finish()
    state = daemon.state_after(lambda s: s["lanes"] == [] and events_total(s) == emitted,
                               what="every event in state.json")
    assert state["drain"]["state_writes_failed"] >= 2
    assert sink(state, "state")["failures"] >= 2
    log = daemon.log()
    assert "state sink failing: circuit breaker open after 2 consecutive failures" in log
    assert "state sink recovered after" in log
    assert daemon.stop() == 0
    final = daemon.state()
    assert events_total(final) == emitted and final["events"]["pending"] == 0


def test_history_database_locked_by_another_process_opens_only_its_breaker(
        daemon_factory, make_config, emitters, state_dir):
    """A real daemon whose history database is write-locked by someone else: its writes
    overrun max_processing_time, the history breaker opens while the state sink stays closed
    and state.json keeps being written; the intervals wait in the backlog; once the lock is
    released the breaker closes by itself and the history holds every event exactly once
    (the sum of its series counts == received; and every emitted event is accounted for)."""
    config, port = breaker_config(make_config, max_processing_time_seconds=1.0)
    daemon = daemon_factory(config)
    emitting = emitters()
    path = history_path(str(state_dir))
    daemon.state_after(lambda s: s["events"]["received"] > 0, what="first events")
    # The write lock, as another process would hold it (the daemon may be writing: wait for
    # it). The daemon's BEGIN IMMEDIATE then waits for up to its busy timeout (5 s), longer
    # than max_processing_time_seconds: the write overruns, and the next finds it running.
    holder = sqlite3.connect(path, timeout=5, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        broken = status_where(port, lambda d: sink(d, "history")["state"] == "open",
                              what="the history breaker to open")
        assert sink(broken, "state")["state"] == "closed"
        status_where(port, lambda d: sink(d, "history")["backlog"]["snapshots"] >= 3,
                     what="intervals waiting in the backlog")
        daemon.state_after(lambda s: sink(s, "history")["state"] == "open",
                           what="state.json written while the history sink is open")
        time.sleep(1.5)  # a trial or two, while the first write still waits for the lock
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    status_where(port, lambda d: sink(d, "history")["state"] == "closed"
                 and sink(d, "history")["backlog"]["snapshots"] <= 1, what="recovery")
    emitted = emitting.finish()
    daemon.state_after(lambda s: s["lanes"] == [] and events_total(s) == emitted,
                       what="every event")
    log = daemon.log()
    assert "history sink failing: circuit breaker open after 2 consecutive failures" in log
    assert "history sink recovered after" in log
    assert "state sink" not in log
    assert daemon.stop() == 0
    final = daemon.state()
    assert sink(final, "history")["backlog"]["dropped_snapshots"] == 0
    with contextlib.closing(sqlite3.connect(path)) as conn:
        (counted,) = conn.execute("SELECT sum(count) FROM series").fetchone()
        snapshots, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT unix) FROM snapshots").fetchone()
    assert snapshots == distinct  # no interval stored twice
    assert counted == final["events"]["received"]
    assert events_total(final) == emitted
