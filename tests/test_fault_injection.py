"""Fault injection: producers and daemons killed at random points, many times; a state
directory that vanishes; a full disk; wall-clock jumps; a daemon stopped with SIGSTOP.

Each test ends with the reconciliation invariant: the outcome counters of the final state add
up to every emit call made, with only the losses that docs/ring-format.md allows.
"""

from __future__ import annotations

import contextlib
import glob
import json
import random
import re
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from ai_analytics.core.history import history_path

from helpers import (
    events_total,
    free_port,
    lane_names,
    run_python,
    status_where,
    wait_for,
)


def reconciled(emitted: int):
    """A state predicate: every lane reclaimed and every emit call counted."""
    return lambda s: s["lanes"] == [] and events_total(s) == emitted


# -- producers killed inside emit --------------------------------------------------------------

# Forks ``kills`` children one after another; each emits in a tight loop and stores, after
# every call that returned, how many have returned. The parent SIGKILLs a quarter of them
# within a millisecond of the fork (creating the lane, interning the names), the others once
# a random number of calls has returned, wherever the child is then: packing a record,
# between the record and the head store, on the full-lane path, or between two calls.
KILLED_PRODUCERS = """
import json, mmap, os, random, signal, time
from ai_analytics import client
kills, rng = {kills}, random.Random({seed})
done = memoryview(mmap.mmap(-1, 8 * kills)).cast("Q")  # shared with the children
pids = []
for i in range(kills):
    target = 0 if rng.random() < 0.25 else rng.randrange(1, 3000)
    pid = os.fork()
    if pid == 0:
        n = 0
        while True:
            client.emit("victim", 1.0, model="m")
            n += 1
            done[i] = n
    if target == 0:
        time.sleep(rng.uniform(0.0, 0.001))
    deadline = time.monotonic() + 30
    while done[i] < target and time.monotonic() < deadline:
        pass
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pids.append(pid)
print(json.dumps([[pid, done[i]] for i, pid in enumerate(pids)]))
"""

ATTACHED = re.compile(r"attached lane (\S+) \(pid (\d+),")
RECLAIMED = re.compile(r"reclaimed lane (\S+) \(dead\): received (\d+), dropped (\d+)")


def kill_producers_inside_emit(daemon_factory, namespace: str, kills: int, seed: int) -> None:
    # A small lane fills within the kill delays: kills land on the full-lane path as well.
    daemon = daemon_factory(max_queue_size=256, discovery_interval_seconds=0.05)
    result = run_python(KILLED_PRODUCERS.format(kills=kills, seed=seed), namespace,
                        timeout=60 + kills * 0.2)
    completed = dict(json.loads(result.stdout))
    wait_for(lambda: lane_names(namespace) == [], timeout=30 + kills * 0.05,
             what="every lane drained and unlinked (none leaked)")
    assert daemon.stop() == 0
    final = daemon.state()
    log = daemon.log()
    pids = dict(ATTACHED.findall(log))
    counted = {int(pids[name]): int(received) + int(dropped)
               for name, received, dropped in RECLAIMED.findall(log)}
    assert set(counted) <= set(completed)
    for pid, done in completed.items():
        # Every call that returned is counted; the one in flight at SIGKILL may or may not
        # be (never published). A child killed before its lane was whole has no lane.
        assert done <= counted.get(pid, 0) <= done + 1, (pid, done, counted.get(pid))
    assert final["events"] == {**final["events"], "invalid": 0, "overwritten": 0,
                               "lost_on_restart": 0, "pending": 0}
    assert events_total(final) == sum(counted.values())
    assert final["lanes_summary"]["reclaimed"] == len(counted)
    # The kills landed all over emit: before a call returned, on both paths, at many counts.
    assert any(done == 0 for done in completed.values())
    assert final["events"]["received"] > 0 and final["events"]["dropped"] > 0
    assert len(set(completed.values())) > kills // 2


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


def latest_received(state_dir: Path) -> int:
    """The received total of the history's newest snapshot; 0 while it has none."""
    try:
        uri = f"file:{history_path(str(state_dir))}?mode=ro"  # never creates it
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as conn:
            row = conn.execute("SELECT max(received) FROM snapshots").fetchone()
    except sqlite3.Error:
        return 0
    return row[0] or 0


def test_state_directory_removed_while_running(daemon_factory, emitters, state_dir):
    """The state directory removed with its files under a running daemon: it keeps draining,
    says so in its log, writes a new state.json and starts a new history database that holds
    every interval from then on; the final state reconciles exactly."""
    daemon = daemon_factory(snapshot_interval_seconds=0.1)
    emitting = emitters()
    history = Path(history_path(str(state_dir)))
    seen = daemon.state_after(lambda s: s["events"]["received"] > 0 and history.exists(),
                              what="first events and history")
    # The history rows of that snapshot are written after its state file: wait for them, so
    # that the new database holds only intervals from after the removal.
    wait_for(lambda: latest_received(state_dir) >= seen["events"]["received"],
             what="the history to hold the snapshot seen")
    # Renamed away first, then deleted: rmtree alone is not atomic, and the daemon recreates
    # the directory and its files at every snapshot (the behaviour under test), so a write
    # between rmtree's listing and its rmdir would make rmtree itself fail ("Directory not
    # empty", or a .state.*.tmp listed and then renamed to state.json). The rename makes the
    # directory vanish at one instant; the daemon never looks under the new name.
    removed = state_dir.with_name("state.removed")
    state_dir.rename(removed)
    shutil.rmtree(removed)
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
    broken = status_where(port, lambda doc: doc["sinks"]["state"]["state"] == "open",
                          what="the state breaker to open")
    assert "No space left on device" in broken["sinks"]["state"]["last_error"]
    status_where(port, lambda doc: doc["sinks"]["state"]["state"] != "closed"
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


# -- the wall clock jumps -------------------------------------------------------------------------

# Where Debian (multiarch), Fedora and a source build install it.
FAKETIME_PATTERNS = ("/usr/lib/*/faketime/libfaketime.so.1", "/usr/lib/faketime/libfaketime.so.1",
                     "/usr/lib64/faketime/libfaketime.so.1",
                     "/usr/local/lib/faketime/libfaketime.so.1")
FAKETIME_LIBRARY = next((path for pattern in FAKETIME_PATTERNS
                         for path in sorted(glob.glob(pattern))), None)


def steady_windows(state: dict) -> dict:
    (series,) = [s for s in state["operations"] if s["operation"] == "steady"]
    return series["windows"]


def windows_follow_monotonic_time(state: dict) -> bool:
    """Events keep landing in the current 10 s window, and none fell out of the 5 min one
    (the daemon has run for less than 5 minutes)."""
    windows = steady_windows(state)
    return windows["10s"]["count"] > 0 and windows["5m"]["count"] == windows["since_start"]["count"]


@pytest.mark.skipif(FAKETIME_LIBRARY is None,
                    reason="libfaketime is not installed (Debian: apt-get install libfaketime)")
def test_wall_clock_jumps_forward_and_back(daemon_factory, make_config, state_dir, emitters,
                                          tmp_path):
    """The daemon's wall clock (libfaketime, changed while it runs) jumps a day forward, the
    daemon is restarted there (history retention runs at its first snapshot), then the clock
    jumps back to an hour before the real time: draining, the statistics windows (monotonic
    time) and the counters stay right, no history row is deleted, and every event reconciles.
    The monotonic clock is not faked: it cannot jump, and producers stamp events with it."""
    offset = tmp_path / "faketime"
    offset.write_text("+0\n")
    env = {"LD_PRELOAD": FAKETIME_LIBRARY, "FAKETIME_TIMESTAMP_FILE": str(offset),
           "FAKETIME_NO_CACHE": "1", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
    config = make_config(snapshot_interval_seconds=0.1)
    daemons = [daemon_factory(config, env=env)]
    history = Path(history_path(str(state_dir)))
    emitting = emitters()
    daemons[0].state_after(lambda s: s["events"]["received"] > 0 and history.exists(),
                           what="first events and history")
    offset.write_text("+1d\n")
    ahead = daemons[0].state_after(
        lambda s: s["written_unix"] > time.time() + 23 * 3600
        and windows_follow_monotonic_time(s), fresh=False, what="a day ahead")
    assert daemons[0].stop() == 0
    rows_before = history_counts(state_dir)[1]
    daemons.append(daemon_factory(config, env=env))
    # Its first snapshot ran the retention with the clock a day ahead; then one more.
    daemons[1].state_after(lambda s: s["daemon"]["uptime_seconds"] > 0.3
                           and s["events"]["received"] > ahead["events"]["received"],
                           fresh=False, what="the restarted daemon, a day ahead")
    assert history_counts(state_dir)[1] >= rows_before  # the retention deleted nothing
    offset.write_text("-1h\n")
    daemons[1].state_after(
        lambda s: s["written_unix"] < time.time() - 50 * 60
        and windows_follow_monotonic_time(s), fresh=False, what="an hour behind")
    emitted = emitting.finish()
    daemons[1].state_after(reconciled(emitted), fresh=False, what="every event counted")
    assert daemons[1].stop() == 0
    final = daemons[1].state()
    assert events_total(final) == emitted and final["events"]["lost_on_restart"] == 0
    assert steady_windows(final)["since_start"]["count"] == steady_windows(final)["5m"]["count"]
    before, counted, last = history_counts(state_dir)
    assert before == 0 and counted == last == final["events"]["received"]
    with contextlib.closing(sqlite3.connect(history)) as conn:
        stamps = [unix for (unix,) in conn.execute("SELECT unix FROM snapshots")]
    real = time.time()
    assert any(unix < real - 50 * 60 for unix in stamps)  # written an hour behind
    assert any(abs(unix - real) < 600 for unix in stamps)  # before the jumps
    assert any(unix > real + 23 * 3600 for unix in stamps)  # a day ahead
    for daemon in daemons:
        assert "Traceback" not in daemon.log()


# -- the daemon stopped (SIGSTOP) ------------------------------------------------------------------

# Two threads, each with a lane of its own made while the daemon is stopped, emit a fixed
# count; prints, per thread, how many calls returned True and how many came first.
BURST = """
import itertools, json, threading
from ai_analytics import client
results = []
def burst():
    returned = [client.emit("burst", 1.0) for _ in range({count})]
    results.append([sum(returned), sum(1 for _ in itertools.takewhile(bool, returned))])
threads = [threading.Thread(target=burst) for _ in range(2)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(json.dumps(results))
"""


def process_state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def test_stopped_daemon_never_blocks_producers(daemon_factory, emitters, namespace):
    """SIGSTOP the daemon, well past batch_timeout_seconds, while producers emit: a producer
    makes its fixed number of calls to the end while the daemon stays stopped (emit never
    waits for it), what does not fit is dropped and counted; after SIGCONT the daemon
    catches up and every event reconciles."""
    capacity, count = 1024, 20000
    daemon = daemon_factory(max_queue_size=capacity, batch_timeout_seconds=0.01)
    emitting = emitters()
    daemon.state_after(lambda s: len(s["lanes"]) == 2 and s["events"]["received"] > 0,
                       what="both producers drained")
    with daemon.stopped():
        result = run_python(BURST.format(count=count), namespace)
        assert process_state(daemon.proc.pid) == "T"  # stopped all along
    # Each new lane took exactly its capacity, in order; every later call was refused.
    assert json.loads(result.stdout) == [[capacity, capacity]] * 2
    emitted = emitting.finish() + 2 * count
    daemon.state_after(reconciled(emitted), what="the daemon to catch up")
    assert daemon.stop() == 0
    final = daemon.state()
    assert events_total(final) == emitted and final["events"]["pending"] == 0
    assert final["events"]["dropped"] >= 2 * (count - capacity)
    assert final["events"]["invalid"] == 0 and final["events"]["lost_on_restart"] == 0
