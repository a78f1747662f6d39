"""Fault injection: producers and daemons killed at random points, many times; a state
directory that vanishes; a full disk; wall-clock jumps; a daemon stopped with SIGSTOP.

Each test ends with the reconciliation invariant: the outcome counters of the final state add
up to every emit call made, with only the losses that docs/ring-format.md allows.
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from ai_analytics.daemon.history import history_path

from helpers import (
    Emitters,
    events_total,
    free_port,
    http_status,
    lane_names,
    run_python,
    wait_for,
)


@pytest.fixture
def emitters(namespace, tmp_path):
    """Start steady producers for this test; reaped at the end, even when it fails."""
    started: list[Emitters] = []

    def start(count: int = 2) -> Emitters:
        started.append(Emitters(namespace, tmp_path / f"stop-{len(started)}", count))
        return started[-1]

    yield start
    for group in started:
        group.reap()


def reconciled(emitted: int):
    """A state predicate: every lane reclaimed and every emit call counted."""
    return lambda s: s["lanes"] == [] and events_total(s) == emitted


# -- producers killed inside emit --------------------------------------------------------------

# Forks ``kills`` children one after another; each emits in a tight loop and stores, after
# every call that returned, how many have returned; the parent SIGKILLs it after a random
# delay, so the kill lands anywhere: creating the lane, interning a name, packing a record,
# between the record and the head store, on the full-lane path, or between two calls.
KILLED_PRODUCERS = """
import json, mmap, os, random, signal, time
from ai_analytics import client
kills, rng = {kills}, random.Random({seed})
done = memoryview(mmap.mmap(-1, 8 * kills)).cast("Q")  # shared with the children
pids = []
for i in range(kills):
    delay = rng.uniform(0.0, {max_delay})
    pid = os.fork()
    if pid == 0:
        n = 0
        while True:
            client.emit("victim", 1.0, model="m")
            n += 1
            done[i] = n
    time.sleep(delay)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pids.append(pid)
print(json.dumps([[pid, done[i]] for i, pid in enumerate(pids)]))
"""

RECLAIMED = re.compile(r"reclaimed lane \S+\.lane\.(\d+)\.\d+ \(dead\): received (\d+), "
                       r"dropped (\d+)")


def kill_producers_inside_emit(daemon_factory, namespace: str, kills: int, seed: int) -> None:
    # A small lane fills within the kill delays: kills land on the full-lane path as well.
    daemon = daemon_factory(max_queue_size=256, discovery_interval_seconds=0.05)
    result = run_python(KILLED_PRODUCERS.format(kills=kills, seed=seed, max_delay=0.004),
                        namespace, timeout=60 + kills * 0.2)
    completed = dict(json.loads(result.stdout))
    wait_for(lambda: lane_names(namespace) == [], timeout=30 + kills * 0.05,
             what="every lane drained and unlinked (none leaked)")
    assert daemon.stop() == 0
    final = daemon.state()
    counted = {int(pid): int(received) + int(dropped)
               for pid, received, dropped in RECLAIMED.findall(daemon.log())}
    assert set(counted) <= set(completed)
    for pid, done in completed.items():
        # Every call that returned is counted; the one in flight at SIGKILL may or may not
        # be (never published). A child killed before its lane was whole has no lane.
        assert done <= counted.get(pid, 0) <= done + 1, (pid, done, counted.get(pid))
    assert final["events"] == {**final["events"], "invalid": 0, "overwritten": 0,
                               "lost_on_restart": 0, "pending": 0}
    assert events_total(final) == sum(counted.values())
    assert final["lanes_summary"]["reclaimed"] == len(counted)
    # The kills landed all over emit: before any call returned, on both paths, at many counts.
    assert any(done == 0 for done in completed.values())
    assert final["events"]["received"] > 0 and final["events"]["dropped"] > 0
    assert len(set(completed.values())) > kills // 10


def test_producers_killed_at_random_points_inside_emit(daemon_factory, namespace):
    """200 producers SIGKILLed at random moments of their emit loop: each one's count is
    exact up to the one call in flight, and none of their lanes is left behind."""
    kill_producers_inside_emit(daemon_factory, namespace, kills=200, seed=11)


@pytest.mark.slow
def test_producers_killed_at_random_points_inside_emit_long(daemon_factory, namespace):
    """The long form: 4000 kills."""
    kill_producers_inside_emit(daemon_factory, namespace, kills=4000, seed=12)


# -- the daemon killed in its loop --------------------------------------------------------------


def kill_daemon_repeatedly(daemon_factory, make_config, emitters, namespace: str, kills: int,
                           seed: int) -> None:
    # Frequent snapshots and small batches: kills land in draining, in saving (with its
    # fsync and os.replace) and in the wait between, not mostly in the wait.
    config = make_config(snapshot_interval_seconds=0.05, batch_size=64,
                         batch_timeout_seconds=0.01, max_queue_size=1024)
    rng = random.Random(seed)
    emitting = emitters()
    saved_total = 0
    for _ in range(kills):
        daemon = daemon_factory(config)
        first = daemon.state_after(lambda s, pid=daemon.proc.pid: s["daemon"]["pid"] == pid,
                                   what="the new daemon's first state")
        assert events_total(first) >= saved_total  # resumed from the last state, not zero
        time.sleep(rng.uniform(0.0, 0.3))  # the random point of the kill
        daemon.kill()
        saved_total = events_total(daemon.state())
    emitted = emitting.finish()
    daemon = daemon_factory(config)
    state = daemon.state_after(reconciled(emitted), timeout=30, what="every event counted")
    assert daemon.stop() == 0
    final = daemon.state()
    events = final["events"]
    assert events_total(final) == emitted, events
    assert events["invalid"] == 0 and events["overwritten"] == 0 and events["pending"] == 0
    assert events["received"] + events["dropped"] + events["lost_on_restart"] == emitted
    assert state["lanes_summary"]["reclaimed"] == 2  # one lane per producer, each counted once
    assert lane_names(namespace) == []
    # A kill inside a state write leaves its temporary file: the next daemon removes it.
    assert list(Path(daemon.state_dir).glob(".state.*.tmp")) == []
    assert daemon.log().count("resuming from the last state") == kills


def test_daemon_killed_at_random_points_and_restarted(daemon_factory, make_config, emitters,
                                                      namespace):
    """SIGKILL the daemon at random points of its loop, 20 times, restarting it each time,
    while producers emit: at the end every emit call is counted exactly once (the work of a
    killed daemon that it had not saved under lost_on_restart), and no lane is left."""
    kill_daemon_repeatedly(daemon_factory, make_config, emitters, namespace, kills=20, seed=5)


@pytest.mark.slow
def test_daemon_killed_at_random_points_and_restarted_long(daemon_factory, make_config,
                                                           emitters, namespace):
    """The long form: 150 kills."""
    kill_daemon_repeatedly(daemon_factory, make_config, emitters, namespace, kills=150, seed=6)


# -- the state directory: removed, full ----------------------------------------------------------


def history_counts(state_dir: Path) -> tuple[int, int, int]:
    """From the history database: (received before its first interval, events in all its
    intervals, received at its last snapshot)."""
    with contextlib.closing(sqlite3.connect(history_path(str(state_dir)))) as conn:
        rows = conn.execute(
            "SELECT s.received, coalesce(sum(r.count), 0) FROM snapshots s "
            "LEFT JOIN series r ON r.snapshot_id = s.id GROUP BY s.id ORDER BY s.id").fetchall()
    assert rows, "no snapshot in the history"
    return rows[0][0] - rows[0][1], sum(count for _, count in rows), rows[-1][0]


def test_state_directory_removed_while_running(daemon_factory, emitters, state_dir):
    """rm -rf of the state directory under a running daemon: it keeps draining, says so in
    its log, writes a new state.json and starts a new history database that holds every
    interval from then on; the final state reconciles exactly."""
    daemon = daemon_factory(snapshot_interval_seconds=0.1)
    emitting = emitters()
    history = Path(history_path(str(state_dir)))
    seen = daemon.state_after(lambda s: s["events"]["received"] > 0 and history.exists(),
                              what="first events and history")
    shutil.rmtree(state_dir)
    daemon.state_after(lambda s: s["events"]["received"] > seen["events"]["received"],
                       what="a new state.json with more events")
    wait_for(lambda: f"history database {history} is gone" in daemon.log(),
             what="the log to say the history was lost")
    emitted = emitting.finish()
    daemon.state_after(reconciled(emitted), what="every event counted")
    assert daemon.stop() == 0
    final = daemon.state()
    assert events_total(final) == emitted and final["events"]["pending"] == 0
    before, counted, last = history_counts(state_dir)
    assert before >= seen["events"]["received"]  # the new database began after the removal
    assert counted == final["events"]["received"] - before == last - before
    assert "Traceback" not in daemon.log()


@pytest.fixture
def small_state_dir(state_dir: Path):
    """The state directory on a 4 MiB tmpfs of its own (needs the right to mount: root)."""
    state_dir.mkdir(parents=True)
    if shutil.which("mount") is None:
        pytest.skip("no mount command to put the state directory on a small tmpfs")
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(state_dir)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs for the state directory (not root?): "
                    f"{result.stderr.strip()}")
    yield state_dir
    subprocess.run(["umount", "--lazy", str(state_dir)], check=True)


def fill(path: Path) -> None:
    """Write ``path`` until its file system has no space left."""
    chunk = bytes(1 << 16)
    with open(path, "wb", buffering=0) as f, contextlib.suppress(OSError):
        while f.write(chunk):
            pass
    assert shutil.disk_usage(path.parent).free < len(chunk)


def test_full_disk_opens_the_breakers_and_writes_resume_once_freed(
        small_state_dir, daemon_factory, make_config, emitters):
    """The state directory's file system fills up: the sinks' breakers open, draining goes
    on (/status, served from memory, counts more events), nothing crashes; once space is
    freed both sinks write again, and state.json and the history reconcile exactly."""
    port = free_port()
    daemon = daemon_factory(make_config(http_port=port, failure_threshold=2,
                                        recovery_timeout_seconds=0.5,
                                        snapshot_interval_seconds=0.1))
    emitting = emitters()
    daemon.state_after(lambda s: s["events"]["received"] > 0, what="first events")
    filler = small_state_dir / "filler"
    fill(filler)
    broken = wait_for(lambda: (doc := http_status(port)) and doc["sinks"]["state"]["state"]
                      == "open" and doc, what="the state breaker to open")
    assert "No space left on device" in broken["sinks"]["state"]["last_error"]
    wait_for(lambda: (doc := http_status(port)) and doc["sinks"]["state"]["state"] != "closed"
             and doc["events"]["received"] > broken["events"]["received"],
             what="draining while the disk is full")
    filler.unlink()
    daemon.state_after(lambda s: s["sinks"]["state"]["state"] == "closed"
                       and s["sinks"]["history"]["state"] == "closed", what="recovery")
    emitted = emitting.finish()
    daemon.state_after(reconciled(emitted), what="every event counted")
    assert daemon.stop() == 0
    final = daemon.state()
    assert events_total(final) == emitted and final["events"]["pending"] == 0
    assert final["drain"]["state_writes_failed"] >= 2
    assert final["sinks"]["history"]["backlog"]["dropped_snapshots"] == 0
    before, counted, last = history_counts(small_state_dir)
    assert before == 0 and counted == last == final["events"]["received"]  # no interval lost
    log = daemon.log()
    assert "state sink failing: circuit breaker open after 2 consecutive failures" in log
    assert "state sink recovered after" in log
    assert "Traceback" not in log
