"""Faults: producers killed (once, and at random points inside emit, many times), the daemon
killed and restarted (once, and at random points of its loop, many times), hostile or
half-made segments, stop deadlines, a state directory that vanishes, a full disk, wall-clock
jumps, a daemon stopped with SIGSTOP.

The fault-injection tests end with the reconciliation invariant: the outcome counters of the
final state add up to every emit call made, with only the losses that docs/ring-format.md
allows.
"""

from __future__ import annotations

import contextlib
import glob
import json
import mmap
import os
import random
import re
import shutil
import signal
import sqlite3
import struct
import subprocess
import time
from pathlib import Path

import pytest

from ai_analytics.client import _layout as L
from ai_analytics.client._lane import Lane, LaneGeometry
from ai_analytics.client._segments import parse_lane_name
from ai_analytics.core.history import history_path

from helpers import (
    SHM_DIR,
    events_total,
    free_port,
    lane_names,
    run_daemon,
    run_python,
    start_python,
    status_where,
    wait_for,
)

# Emits until killed; after each emit returns it stores the count of returned calls in a
# file, so the test knows how many completed before SIGKILL (at most one more was in flight).
COUNTING_PRODUCER = """
import mmap, os, sys, time
from ai_analytics import client
fd = os.open(sys.argv[1], os.O_RDWR)
done = memoryview(mmap.mmap(fd, 8)).cast("Q")
n = 0
print("started", flush=True)
while True:
    client.emit("victim", 1.0, model="m")
    n += 1
    done[0] = n
    if n % 64 == 0:
        time.sleep(0.0005)
"""


def kill_producer_after(namespace: str, tmp_path, calls: int) -> int:
    """Start a counting producer, SIGKILL it once ``calls`` emits have returned, and return
    how many had returned by then."""
    counter = tmp_path / "completed"
    counter.write_bytes(bytes(8))
    proc = start_python(COUNTING_PRODUCER.replace("sys.argv[1]", repr(str(counter))), namespace)
    assert proc.stdout.readline().strip() == "started"
    fd = os.open(counter, os.O_RDONLY)
    completed = memoryview(mmap.mmap(fd, 8, prot=mmap.PROT_READ)).cast("Q")
    os.close(fd)
    wait_for(lambda: completed[0] > calls, what=f"{calls} emits")
    proc.kill()
    proc.communicate()
    return completed[0]


def test_producer_killed_mid_stream_is_drained_and_reclaimed(daemon_factory, namespace, tmp_path):
    """SIGKILL a producer while it emits: the daemon drains what it published, counts it,
    then reclaims (unlinks) its lane."""
    daemon = daemon_factory()
    finished = kill_producer_after(namespace, tmp_path, 20000)
    state = daemon.state_after(lambda s: s["lanes"] == [] and s["lanes_summary"]["reclaimed"],
                               what="reclaim of the dead lane")
    # Each completed call is counted; the one in flight at SIGKILL may or may not be.
    assert finished <= events_total(state) <= finished + 1
    assert state["events"]["invalid"] == 0
    wait_for(lambda: lane_names(namespace) == [], what="unlink")
    assert daemon.stop() == 0


def test_producer_killed_before_any_daemon_runs(daemon_factory, namespace, tmp_path):
    """A producer dies with a full lane and no daemon; a daemon started later drains it."""
    finished = kill_producer_after(namespace, tmp_path, 12000)  # past its lane's capacity
    daemon = daemon_factory()
    state = daemon.state_after(lambda s: s["lanes"] == [] and s["lanes_summary"]["reclaimed"],
                               what="reclaim")
    assert state["events"]["received"] == L.DEFAULT_CAPACITY
    assert finished <= events_total(state) <= finished + 1
    assert daemon.stop() == 0


STEADY_PRODUCER = """
import json, time
from ai_analytics import client
sent = 0
deadline = time.monotonic() + {seconds}
while time.monotonic() < deadline:
    for _ in range(50):
        client.emit("steady", 2.0, model="m")
        sent += 1
    time.sleep(0.001)
print(json.dumps(sent))
"""


def test_daemon_killed_and_restarted_while_producers_emit(daemon_factory, namespace):
    """SIGKILL the daemon mid-stream and start a new one: producers never block or raise,
    and afterwards every event is accounted for, the restart gap under lost_on_restart."""
    daemon = daemon_factory(snapshot_interval_seconds=0.3)
    producers = [start_python(STEADY_PRODUCER.format(seconds=3.0), namespace) for _ in range(2)]
    time.sleep(1.0)
    before = daemon.state()["events"]["received"]
    daemon.kill()
    time.sleep(0.5)
    daemon = daemon_factory(snapshot_interval_seconds=0.3)
    emitted = 0
    for proc in producers:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0 and err == "", err
        emitted += json.loads(out)
    state = daemon.state_after(lambda s: s["lanes"] == [], what="reclaim")
    assert state["events"]["received"] >= before  # the new daemon resumed the old counters
    assert events_total(state) == emitted, state["events"]
    assert daemon.stop() == 0
    assert events_total(daemon.state()) == emitted


def test_counters_survive_a_clean_restart(daemon_factory, namespace):
    """A new daemon starts from the counters the previous one saved at stop."""
    daemon = daemon_factory()
    run_python('from ai_analytics import client\nfor _ in range(300): client.emit("a", 1.0)',
               namespace)
    daemon.state_after(lambda s: s["events"]["received"] == 300, what="drain")
    assert daemon.stop() == 0
    daemon = daemon_factory()
    run_python('from ai_analytics import client\nfor _ in range(200): client.emit("b", 1.0)',
               namespace)
    state = daemon.state_after(lambda s: s["events"]["received"] == 500, what="drain")
    assert {r["operation"]: r["count"] for r in state["operations"]} == {"a": 300, "b": 200}
    assert state["events"]["lost_on_restart"] == 0
    assert daemon.stop() == 0


def test_garbage_segments_are_logged_once_and_skipped(daemon_factory, namespace):
    """Segments with our prefix that are not lanes are reported once, and draining goes on."""
    bad_magic = os.path.join(SHM_DIR, f"{namespace}.lane.{'9' * 16}.0")
    with open(bad_magic, "wb") as f:
        f.write(os.urandom(8192))
    bad_name = os.path.join(SHM_DIR, f"{namespace}.lane.not-a-lane")
    with open(bad_name, "wb") as f:
        f.write(bytes(300))
    daemon = daemon_factory()
    run_python('from ai_analytics import client\nfor _ in range(100): client.emit("ok", 1.0)',
               namespace)
    state = daemon.state_after(lambda s: s["events"]["received"] == 100, what="drain")
    for _ in range(2):  # two more snapshots: several more discovery scans
        daemon.state_after(lambda s: True, what="a later snapshot")
    log = daemon.log()
    assert log.count(f"ignoring segment {namespace}.lane.{'9' * 16}.0: bad magic") == 1, log
    assert log.count(f"ignoring segment {namespace}.lane.not-a-lane: name does not") == 1, log
    assert state["lanes_summary"]["rejected_segments"] == 2
    assert os.path.exists(bad_magic)  # not ours to delete
    assert daemon.stop() == 0


def test_untrusted_and_world_writable_segments_are_refused(daemon_factory, namespace):
    """A lane owned by an untrusted uid, or writable by anyone, is refused with a log line."""
    for _ in range(2):
        run_python('from ai_analytics import client; client.emit("x", 1.0)', namespace)
    foreign, loose = lane_names(namespace)
    os.chown(os.path.join(SHM_DIR, foreign), 54321, -1)
    os.chmod(os.path.join(SHM_DIR, loose), 0o666)  # noqa: S103 (the hostile segment under test)
    daemon = daemon_factory()
    expected = [f"ignoring segment {foreign}: owned by uid 54321, which is not trusted",
                f"ignoring segment {loose}: world-writable (mode 666)"]
    wait_for(lambda: all(line in daemon.log() for line in expected), what="both refusals")
    assert daemon.stop() == 0
    assert daemon.state()["events"]["received"] == 0


def test_half_made_segment_is_waited_for_not_rejected(daemon_factory, namespace):
    """A segment whose magic is not yet written is "not ready": no warning, attached once
    the magic appears."""
    daemon = daemon_factory()
    # Made while the daemon cannot look: a Lane writes its magic as it is made, and the
    # daemon, woken by the new file, could attach it before the magic is taken away again.
    with daemon.stopped():
        lane = Lane(namespace, LaneGeometry(64, 8, False))
        lane.q[L.Q_MAGIC] = 0
    try:
        for _ in range(3):  # three snapshots: several discovery scans see the segment
            daemon.state_after(lambda s: True, what="a later snapshot")
        assert lane.name not in daemon.log()
        lane.q[L.Q_MAGIC] = L.LANE_MAGIC
        wait_for(lambda: f"attached lane {lane.name}" in daemon.log(), what="attach")
        assert "ignoring segment" not in daemon.log()
    finally:
        lane.retire()
    daemon.state_after(lambda s: s["lanes"] == [] and s["lanes_summary"]["reclaimed"] == 1,
                       what="reclaim")
    assert daemon.stop() == 0


def test_sigterm_drains_everything_then_exits_zero(daemon_factory, namespace):
    """SIGTERM: the daemon drains what is pending, writes its final state and exits 0 well
    within stop_timeout, even while it was in a long wait."""
    daemon = daemon_factory(batch_timeout_seconds=30.0, snapshot_interval_seconds=3600.0,
                            discovery_interval_seconds=30.0, stop_timeout_seconds=5.0)
    run_python('from ai_analytics import client\nfor _ in range(2500): client.emit("t", 1.0)',
               namespace)
    started = time.monotonic()
    assert daemon.stop(timeout=10) == 0
    assert time.monotonic() - started < 5.0
    state = daemon.state()
    assert state["events"]["received"] == 2500 and state["events"]["pending"] == 0
    assert state["daemon"]["running"] is False


def test_sigint_stops_like_sigterm(daemon_factory, namespace):
    """Ctrl-C (SIGINT) gives the same clean stop."""
    daemon = daemon_factory()
    daemon.proc.send_signal(signal.SIGINT)
    assert daemon.proc.wait(timeout=10) == 0
    assert daemon.state()["daemon"]["running"] is False


def test_idle_daemon_does_not_poll(daemon_factory, namespace):
    """An idle daemon sleeps: over 2 s it uses a small fraction of a core (a busy loop
    would use all of it)."""
    daemon = daemon_factory(batch_timeout_seconds=1.0, discovery_interval_seconds=1.0,
                            snapshot_interval_seconds=1.0, resource_interval_seconds=1.0)
    # Start-up work (imports, first samples, first snapshot) is not idling: let it pass.
    daemon.state_after(lambda s: s["resources"]["system"]["cpu_percent"] is not None,
                       what="the start-up to settle")

    def cpu_seconds() -> float:
        with open(f"/proc/{daemon.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    # Idle most of the time, not all of it: a snapshot, a resource sample or the collector
    # may land in one window, so the claim is that some window of 2 s is quiet. A daemon
    # that polls has none.
    used = []
    for _ in range(5):
        before = cpu_seconds()
        time.sleep(2.0)  # the measurement window itself
        used.append(cpu_seconds() - before)
        if used[-1] < 0.1:
            break
    assert min(used) < 0.1, f"CPU seconds in each 2 s window: {used}"
    assert daemon.stop() == 0


def test_second_daemon_on_a_namespace_is_refused(daemon_factory, namespace, make_config):
    """Two consumers on one lane would break it: a second daemon exits 1 with the reason."""
    daemon = daemon_factory()
    result = run_daemon(make_config(), timeout=30)
    assert result.returncode == 1
    assert (f"another ai-analyticsd (pid {daemon.proc.pid} in its PID namespace) drains "
            "namespace") in result.stderr
    assert "Traceback" not in result.stderr
    assert daemon.stop() == 0


def test_lane_names_carry_an_instance_token_not_a_pid(namespace):
    """Lane names are <namespace>.lane.<16 hex digits>.<serial>: the token is drawn per process
    (again in a forked child), so workers with the same pid in different PID namespaces can
    never meet on a name; the pid lives in the header only, for display."""
    run_python("""
        import os
        from ai_analytics import client
        client.emit("x", 1.0)
        if os.fork() == 0:
            client.emit("x", 1.0)
            os._exit(0)
        os.wait()
    """, namespace)
    names = lane_names(namespace)
    assert len(names) == 2
    tokens = [parse_lane_name(name, f"{namespace}.lane.") for name in names]
    assert None not in tokens and len({token[0] for token in tokens}) == 2


def test_damaged_state_file_stops_the_start_with_a_clear_message(make_config, state_dir):
    """A state file that is not ours (or truncated by hand) is not silently discarded: the
    daemon refuses to start, says which file and what to do, exit 1, no traceback."""
    state_dir.mkdir(parents=True)
    (state_dir / "state.json").write_text('{"schema_version": 1, "events": {}}')
    result = run_daemon(make_config(), timeout=30)
    assert result.returncode == 1
    assert f"the state file in {state_dir} is damaged" in result.stderr
    assert "move it aside" in result.stderr and "Traceback" not in result.stderr


def test_state_dir_of_another_namespace_is_refused(daemon_factory, make_config, namespace):
    """Two namespaces sharing one state_dir would mix their counters: the second is refused."""
    daemon = daemon_factory()
    assert daemon.stop() == 0
    result = run_daemon(make_config(namespace=f"{namespace}-b"), timeout=30)
    assert result.returncode == 1
    assert f"belongs to namespace {namespace!r}, not '{namespace}-b'" in result.stderr
    assert "Traceback" not in result.stderr


def test_reused_pid_does_not_keep_a_dead_lane_alive(daemon_factory, namespace):
    """Liveness is pid AND start time: a lane whose recorded start time does not match the
    running process with that pid (the pid was reused) is treated as dead and reclaimed."""
    lane = Lane(namespace, LaneGeometry(64, 8, False))  # pid = this (live) test process
    struct.pack_into("<Q", lane.buf, L.OFF_PID_START, 12345)  # ...but another start time
    daemon = daemon_factory()
    state = daemon.state_after(lambda s: s["lanes_summary"]["reclaimed"] == 1, what="reclaim")
    assert "reclaimed lane " + lane.name + " (dead)" in daemon.log()
    assert state["lanes"] == []
    assert daemon.stop() == 0


def test_lanes_outlive_a_producer_that_uses_the_resource_tracker(namespace):
    """A worker that also uses multiprocessing.shared_memory (so a resource tracker runs)
    exits without unlinking our lane or printing a leak warning: only the daemon unlinks."""
    result = run_python(
        """
        from multiprocessing import shared_memory
        from ai_analytics import client
        own = shared_memory.SharedMemory(create=True, size=4096)
        client.emit("tracked", 1.0)
        own.close()
        own.unlink()
        """,
        namespace,
    )
    assert result.stderr == ""
    assert len(lane_names(namespace)) == 1


def test_sigterm_at_any_moment_stops_the_daemon(daemon_factory, namespace):
    """SIGTERM can land anywhere in the loop, including inside its wait: the daemon always
    stops (a signal handler that took a lock could deadlock it forever)."""
    rng = random.Random(7)
    for _ in range(5):
        daemon = daemon_factory(batch_timeout_seconds=0.001, discovery_interval_seconds=0.01,
                                snapshot_interval_seconds=0.05)
        time.sleep(rng.uniform(0.05, 0.3))
        assert daemon.stop(timeout=10) == 0


# -- fault injection, each test ending in the reconciliation invariant -----------------------------
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
