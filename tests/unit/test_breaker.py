"""The circuit breakers around the daemon's sinks: the state machine with an injected clock,
the time bound on a write, the history backlog, and the sinks of a Daemon in this process."""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
import time

import pytest

from ai_analytics.core.errors import SinkTimeout, StateError
from ai_analytics.core.history import history_path
from ai_analytics.daemon.sinks.breaker import (
    Backlog,
    BoundedCall,
    CircuitBreaker,
    GuardedSink,
    Outcome,
)

from helpers import FakeClock, wait_for


class Sink:
    """A callable sink that fails while ``broken``; counts its calls."""

    def __init__(self) -> None:
        self.broken = False
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1
        if self.broken:
            raise StateError("cannot write state in /nowhere: [Errno 20] Not a directory")


def breaker(clock: FakeClock, threshold: int = 3, recovery: float = 30.0,
            enabled: bool = True) -> CircuitBreaker:
    return CircuitBreaker("state", threshold, recovery, enabled=enabled, clock=clock,
                          wall_clock=lambda: 1_700_000_000.0 + clock.now)


def records(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records
            if r.name == "ai_analytics.daemon"]


# -- the state machine ---------------------------------------------------------------------
def test_opens_after_threshold_consecutive_failures_and_then_skips(caplog):
    """Closed until failure_threshold failures in a row; then open: calls are not attempted
    but counted as skipped; one ERROR line, with the error, says so."""
    caplog.set_level(logging.DEBUG, "ai_analytics.daemon")
    clock, sink = FakeClock(), Sink()
    cb = breaker(clock)
    sink.broken = True
    assert [cb.call(sink) for _ in range(2)] == [Outcome.FAILED] * 2
    assert cb.state()["state"] == "closed" and records(caplog) == []  # failures are not logged
    assert cb.call(sink) is Outcome.FAILED
    assert cb.state()["state"] == "open"
    assert [cb.call(sink) for _ in range(4)] == [Outcome.SKIPPED] * 4
    assert sink.calls == 3
    state = cb.state()
    assert state == {
        "state": "open", "failures": 3, "consecutive_failures": 3, "skipped": 4,
        "last_error": "cannot write state in /nowhere: [Errno 20] Not a directory",
        "opened_unix": 1_700_000_000.0 + 1000.0, "retry_in_seconds": 30.0,
    }
    assert json.loads(json.dumps(state)) == state
    ((level, message),) = records(caplog)
    assert level == logging.ERROR
    assert "state sink failing: circuit breaker open after 3 consecutive failures" in message
    assert "Not a directory" in message


def test_a_success_resets_the_consecutive_count():
    """Failures that are not consecutive never open the breaker; the total still counts."""
    clock, sink = FakeClock(), Sink()
    cb = breaker(clock, threshold=2)
    for _ in range(5):
        sink.broken = True
        assert cb.call(sink) is Outcome.FAILED
        sink.broken = False
        assert cb.call(sink) is Outcome.OK
    assert cb.state()["state"] == "closed"
    assert cb.state()["failures"] == 5 and cb.state()["consecutive_failures"] == 0


def test_half_open_after_the_recovery_timeout_one_trial_then_open_again(caplog):
    """Open: skipped until recovery_timeout has passed; then exactly one trial call
    (half-open); a failed trial opens the breaker again for a full recovery_timeout."""
    caplog.set_level(logging.DEBUG, "ai_analytics.daemon")
    clock, sink = FakeClock(), Sink()
    cb = breaker(clock, threshold=1, recovery=10.0)
    sink.broken = True
    assert cb.call(sink) is Outcome.FAILED
    clock.now += 9.5
    assert cb.state()["retry_in_seconds"] == pytest.approx(0.5)
    assert cb.call(sink) is Outcome.SKIPPED and sink.calls == 1
    clock.now += 0.5
    assert cb.call(sink) is Outcome.FAILED and sink.calls == 2  # the trial
    assert cb.state()["state"] == "open"
    assert cb.state()["retry_in_seconds"] == 10.0  # a fresh wait from the failed trial
    assert cb.call(sink) is Outcome.SKIPPED and sink.calls == 2
    levels = [level for level, _ in records(caplog)]
    assert levels == [logging.ERROR, logging.INFO, logging.WARNING]
    assert "half-open after 10.0 s, trying one write" in records(caplog)[1][1]
    assert "trial write failed, circuit breaker open again for 10.0 s" in records(caplog)[2][1]


def test_half_open_admits_one_trial_only():
    """While the one trial is under way (half-open), further calls are skipped."""
    clock = FakeClock()
    cb = breaker(clock, threshold=1, recovery=1.0)
    cb.record_failure("boom")
    clock.now += 1.0
    assert cb.allow() is True
    assert cb.state()["state"] == "half_open"
    assert cb.allow() is False and cb.state()["skipped"] == 1


def test_a_successful_trial_closes_it_and_logs_the_recovery(caplog):
    """A trial that succeeds closes the breaker: counters of the run reset, the totals stay,
    and one line says it recovered after N failures."""
    caplog.set_level(logging.DEBUG, "ai_analytics.daemon")
    clock, sink = FakeClock(), Sink()
    cb = breaker(clock, threshold=2, recovery=5.0)
    sink.broken = True
    for _ in range(2):
        cb.call(sink)
    cb.call(sink)  # skipped
    clock.now += 5.0
    sink.broken = False
    assert cb.call(sink) is Outcome.OK
    state = cb.state()
    assert state["state"] == "closed" and state["consecutive_failures"] == 0
    assert state["failures"] == 2 and state["skipped"] == 1
    assert state["opened_unix"] is None and state["retry_in_seconds"] is None
    assert state["last_error"] is not None  # kept: what went wrong last time
    level, message = records(caplog)[-1]
    assert level == logging.WARNING
    assert message == ("state sink recovered after 2 failures (1 writes skipped): circuit "
                       "breaker closed")
    assert cb.call(sink) is Outcome.OK and len(records(caplog)) == 3  # nothing more logged
    sink.broken = True  # a second outage: its own counts in the recovery line
    for _ in range(4):
        cb.call(sink)
    clock.now += 5.0
    sink.broken = False
    cb.call(sink)
    assert records(caplog)[-1][1].startswith("state sink recovered after 2 failures (2 writes ")


def test_disabled_breaker_always_attempts_and_still_counts(caplog):
    """enable_circuit_breaker false: every call is attempted whatever the failures; they are
    counted; the run is logged once when it reaches the threshold, and its end."""
    caplog.set_level(logging.DEBUG, "ai_analytics.daemon")
    clock, sink = FakeClock(), Sink()
    cb = breaker(clock, threshold=2, enabled=False)
    sink.broken = True
    assert [cb.call(sink) for _ in range(6)] == [Outcome.FAILED] * 6
    assert sink.calls == 6
    state = cb.state()
    assert state["state"] == "disabled" and state["skipped"] == 0
    assert state["failures"] == 6 and state["consecutive_failures"] == 6
    assert state["opened_unix"] is None and state["retry_in_seconds"] is None
    sink.broken = False
    assert cb.call(sink) is Outcome.OK
    (first, failing), (last, recovered) = records(caplog)
    assert first == logging.ERROR and "circuit breaker disabled" in failing
    assert last == logging.WARNING and "recovered after 6 failures" in recovered


def test_forced_call_is_a_trial_even_before_the_recovery_timeout():
    """The daemon's final snapshot at stop is forced: attempted at once while open."""
    clock, sink = FakeClock(), Sink()
    cb = breaker(clock, threshold=1, recovery=3600.0)
    sink.broken = True
    cb.call(sink)
    sink.broken = False
    assert cb.call(sink) is Outcome.SKIPPED
    assert cb.call(sink, force=True) is Outcome.OK and cb.state()["state"] == "closed"


def test_reconfigure_keeps_counters_and_disabling_closes():
    """A reload's new settings: counters stay; disabling an open breaker stops the skipping."""
    clock, sink = FakeClock(), Sink()
    cb = breaker(clock, threshold=1)
    sink.broken = True
    cb.call(sink)
    cb.configure(4, 5.0, enabled=False)
    assert cb.call(sink) is Outcome.FAILED and sink.calls == 2
    assert cb.state()["failures"] == 2 and cb.state()["state"] == "disabled"
    cb.configure(4, 5.0, enabled=True)
    assert cb.state()["state"] == "closed"
    assert cb.call(sink) is Outcome.FAILED and cb.state()["state"] == "closed"  # 3 < 4
    assert cb.call(sink) is Outcome.FAILED and cb.state()["state"] == "open"


def test_threshold_must_be_positive():
    """A threshold of 0 would open the breaker before any failure: refused."""
    with pytest.raises(ValueError, match="failure_threshold must be at least 1, got 0"):
        CircuitBreaker("state", 0, 1.0)


# -- the time bound ------------------------------------------------------------------------
def test_a_slow_write_times_out_and_no_second_write_starts_while_it_runs():
    """A write that overruns max_processing_time fails at the bound (the caller waits no
    longer); it goes on in the background, and until it ends the next write is not started
    and fails as "still running"; then writes run again."""
    sink = GuardedSink("history", 2, 60.0, 0.05)
    started = []

    def slow() -> None:
        started.append("slow")
        time.sleep(0.6)

    def quick() -> None:
        started.append("quick")

    begin = time.monotonic()
    assert sink.write(slow) is Outcome.FAILED
    assert time.monotonic() - begin < 0.4
    assert "did not finish within max_processing_time_seconds (0.05 s)" in (
        sink.state()["last_error"])
    assert sink.state()["write_running_seconds"] is not None
    assert sink.write(quick) is Outcome.FAILED
    assert started == ["slow"]  # quick was never started
    assert "is still running (max_processing_time_seconds is 0.05)" in sink.state()["last_error"]
    assert sink.state()["state"] == "open"  # a hung sink trips the breaker like a failing one
    wait_for(lambda: sink.state()["write_running_seconds"] is None, what="the slow write")
    sink.breaker.configure(2, 0.0, enabled=True)  # no recovery wait: try at once
    assert sink.write(quick) is Outcome.OK and started == ["slow", "quick"]
    assert sink.state()["state"] == "closed"


def test_bounded_call_returns_the_writes_own_error_from_its_thread():
    """What the write raises in its thread is raised to the caller (and nothing is left to
    threading's excepthook: pytest would turn that into an error)."""
    call = BoundedCall("state", 5.0)

    def broken() -> None:
        raise StateError("cannot write state in /x: [Errno 28] No space left on device")

    with pytest.raises(StateError, match="No space left on device"):
        call(broken)
    call(lambda: None)  # a good write just returns
    with pytest.raises(SinkTimeout) as caught:
        BoundedCall("state", 0.01)(lambda: time.sleep(0.3))
    assert caught.value.sink == "state" and not caught.value.running
    assert isinstance(caught.value, TimeoutError)


def test_the_waiting_thread_works_meanwhile_until_the_write_ends():
    """The drain loop drains while a sink writes: ``meanwhile`` runs again and again, at the
    pause it asks for, until the write is done; the bound and the errors hold as without."""
    release = threading.Event()
    calls: list[float] = []

    def meanwhile() -> float:
        calls.append(time.monotonic())
        if len(calls) == 5:
            release.set()  # the write ends only once the loop has worked five times
        return 0.01

    BoundedCall("state", 30.0)(lambda: release.wait(30), meanwhile)
    assert len(calls) >= 5 and release.is_set()
    with pytest.raises(SinkTimeout):
        BoundedCall("state", 0.05)(lambda: time.sleep(0.5), lambda: 0.01)

    def broken() -> None:
        raise StateError("disk I/O error")

    with pytest.raises(StateError, match="disk I/O error"):
        BoundedCall("state", 5.0)(broken, lambda: 0.01)


# -- the backlog ---------------------------------------------------------------------------
def test_backlog_bounds_drop_the_oldest_and_count_them():
    """Past max_items or max_weight, the oldest items go (counted); the newest always stays."""
    backlog: Backlog[str] = Backlog(max_items=3, max_weight=10)
    for name in "abcd":
        backlog.add(name, 1)
    assert backlog.counts() == {"items": 3, "weight": 3, "dropped": 1, "dropped_weight": 1}
    backlog.add("big", 9)  # 1 + 1 + 1 + 9 > 10: b and c go, d and big stay
    written: list[str] = []
    backlog.flush(written.append)
    assert written == ["d", "big"]
    assert backlog.counts() == {"items": 0, "weight": 0, "dropped": 3, "dropped_weight": 3}
    backlog.add("huge", 50)  # alone over the weight bound: still kept
    assert len(backlog) == 1


def test_backlog_keeps_what_a_broken_sink_did_not_write_in_order():
    """A flush that fails with an OSError (the sink is down) puts the unwritten items back
    in front of those added meanwhile; a bad item (any other error) is dropped, counted."""
    backlog: Backlog[int] = Backlog(max_items=100, max_weight=100)
    for i in range(4):
        backlog.add(i, 1)
    written: list[int] = []

    def down_at_2(item: int) -> None:
        if item == 2:
            raise StateError("disk full")
        written.append(item)

    with pytest.raises(StateError):
        backlog.flush(down_at_2)
    assert written == [0, 1] and len(backlog) == 2
    backlog.add(4, 1)

    def rejects_3(item: int) -> None:
        if item == 3:
            raise ValueError("malformed")
        written.append(item)

    with pytest.raises(ValueError):
        backlog.flush(rejects_3)
    assert written == [0, 1, 2] and backlog.counts()["dropped"] == 1
    assert backlog.flush(written.append) == 1
    assert written == [0, 1, 2, 4]


def test_backlog_flush_that_finishes_late_neither_loses_nor_duplicates():
    """A flush that overran and finishes later, while new items arrive: the items it wrote
    are gone, those it could not write come back first, the new ones follow."""
    backlog: Backlog[int] = Backlog(max_items=100, max_weight=100)
    for i in range(3):
        backlog.add(i, 1)
    release = threading.Event()
    written: list[int] = []

    def stalls_then_fails(item: int) -> None:
        if item == 1:
            release.wait(5)
            raise StateError("database is locked")
        written.append(item)

    sink = GuardedSink("history", 5, 60.0, 0.05)
    assert sink.write(lambda: backlog.flush(stalls_then_fails)) is Outcome.FAILED
    assert len(backlog) == 3  # in flight still counts as waiting
    backlog.add(3, 1)
    assert sink.write(lambda: backlog.flush(written.append)) is Outcome.FAILED  # still running
    release.set()
    wait_for(lambda: sink.state()["write_running_seconds"] is None, what="the late flush")
    assert sink.write(lambda: backlog.flush(written.append)) is Outcome.OK
    assert written == [0, 1, 2, 3] and len(backlog) == 0


# -- the daemon object, in this process ----------------------------------------------------
@pytest.fixture
def inproc_daemon(make_daemon):
    """A Daemon in this process whose sinks' breakers open after two failures and try again
    after 0.1 s."""
    return make_daemon(failure_threshold=2, recovery_timeout_seconds=0.1)


def test_a_skipped_or_failed_state_write_never_unlinks_reclaimed_lanes(inproc_daemon, tmp_path,
                                                                       monkeypatch):
    """Reclaimed lanes are unlinked only after a state write that succeeded; while the state
    directory is a file, saves fail then are skipped, and unlink nothing; the final save (at
    stop) is attempted even though the breaker is open; recovery (after recovery_timeout)
    rewrites the whole state file and unlinks."""
    daemon = inproc_daemon
    unlinks = []
    monkeypatch.setattr(daemon.lanes, "unlink_finished", lambda: unlinks.append(1))
    state_dir = tmp_path / "state"
    assert daemon.save(running=True) and unlinks == [1]
    state_dir.rename(tmp_path / "away")
    state_dir.write_text("a file where the state directory should be")
    outcomes = [daemon.save(running=True) for _ in range(4)]
    assert outcomes == [False] * 4 and unlinks == [1]
    sinks = daemon.sinks.states()
    assert sinks["state"]["state"] == "open"
    assert sinks["state"]["failures"] == 2 and sinks["state"]["skipped"] == 2
    assert "cannot write state in" in sinks["state"]["last_error"]
    assert daemon.sinks.failures["state"] == 4  # drain.state_writes_failed: failed + skipped
    assert daemon.save(running=False) is False and unlinks == [1]  # the final one: attempted
    assert daemon.sinks.states()["state"]["failures"] == 3
    state_dir.unlink()
    (tmp_path / "away").rename(state_dir)
    time.sleep(0.1)
    assert daemon.save(running=True) and unlinks == [1, 1]
    assert daemon.sinks.states()["state"]["state"] == "closed"
    written = json.loads((state_dir / "state.json").read_text())
    assert written["namespace"] == daemon.config.namespace


def test_history_intervals_wait_in_the_backlog_and_are_flushed_on_recovery(inproc_daemon,
                                                                           monkeypatch):
    """While the history sink fails, each snapshot's row waits in the backlog (the breaker
    opens, later snapshots are skipped, not lost); on recovery they are all stored, oldest
    first, once each; the state sink never noticed."""
    daemon = inproc_daemon
    real_append = daemon.sinks.history.append

    def broken(*args: object) -> None:
        raise StateError("cannot append to history.sqlite3: disk I/O error")

    monkeypatch.setattr(daemon.sinks.history, "append", broken)
    for _ in range(5):
        assert daemon.save(running=True)  # the state file is written all along
    sinks = daemon.sinks.states()
    assert sinks["history"]["state"] == "open" and sinks["state"]["state"] == "closed"
    assert sinks["history"]["backlog"]["snapshots"] == 5
    monkeypatch.setattr(daemon.sinks.history, "append", real_append)
    time.sleep(0.1)
    daemon.save(running=True)
    sinks = daemon.sinks.states()
    assert sinks["history"]["state"] == "closed"
    assert sinks["history"]["backlog"] == {"snapshots": 0, "series_rows": 0,
                                           "dropped_snapshots": 0, "dropped_series_rows": 0}
    with contextlib.closing(sqlite3.connect(history_path(daemon.config.state_dir))) as conn:
        times = [row[0] for row in conn.execute("SELECT unix FROM snapshots ORDER BY id")]
    assert len(times) == 6 and times == sorted(times) and len(set(times)) == 6
    assert daemon.sinks.failures == {"state": 0, "history": 5}


def test_sinks_in_the_snapshot_document(inproc_daemon):
    """The snapshot's "sinks" section: both sinks, each with its breaker's fields, JSON-ready."""
    sinks = inproc_daemon.sinks.states()
    assert set(sinks) == {"state", "history"}
    for entry in sinks.values():
        assert {"state", "failures", "consecutive_failures", "skipped", "last_error",
                "opened_unix", "retry_in_seconds", "write_running_seconds"} <= set(entry)
        assert entry["state"] == "closed"
    assert set(sinks["history"]["backlog"]) == {"snapshots", "series_rows", "dropped_snapshots",
                                                "dropped_series_rows"}
    assert json.loads(json.dumps(sinks)) == sinks
