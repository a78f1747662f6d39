"""Faults: killed producers, a killed daemon, hostile or half-made segments, stop deadlines."""

from __future__ import annotations

import json
import mmap
import os
import signal
import struct
import time

from ai_analytics.client import _layout as L
from ai_analytics.client._lane import Lane, LaneGeometry
from ai_analytics.client._segments import parse_lane_name

from helpers import (
    SHM_DIR,
    events_total,
    lane_names,
    run_daemon,
    run_python,
    start_python,
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
    time.sleep(0.5)  # several more discovery scans
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
    lane = Lane(namespace, LaneGeometry(64, 8, False))
    lane.q[L.Q_MAGIC] = 0
    try:
        time.sleep(0.6)
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

    before = cpu_seconds()
    time.sleep(2.0)
    assert cpu_seconds() - before < 0.1
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
    import random

    rng = random.Random(7)
    for _ in range(5):
        daemon = daemon_factory(batch_timeout_seconds=0.001, discovery_interval_seconds=0.01,
                                snapshot_interval_seconds=0.05)
        time.sleep(rng.uniform(0.05, 0.3))
        assert daemon.stop(timeout=10) == 0


def test_stop_request_from_a_signal_handler_never_deadlocks():
    """A signal handler requests the stop while the loop waits, thousands of times at random
    moments: every wait returns at once. (threading.Event.set() from a handler can deadlock
    when the signal lands while the same thread holds the event's lock inside wait().)"""
    import random

    from ai_analytics.core.wakeup import StopRequest

    rng = random.Random(3)
    current: list[StopRequest] = []
    previous = signal.signal(signal.SIGALRM, lambda *_: current[0].set())
    try:
        for _ in range(30000):  # threading.Event deadlocks well within this many (seen)
            request = StopRequest()
            current[:] = [request]
            signal.setitimer(signal.ITIMER_REAL, rng.uniform(1e-6, 5e-5))
            started = time.monotonic()
            while not request.wait(0.0005):
                assert time.monotonic() - started < 2.0, "the stop request was lost"
            request.close()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_a_counted_lane_that_cannot_be_unlinked_is_never_counted_again(namespace, monkeypatch):
    """If the daemon may not delete a finished lane (a sticky /dev/shm and another user's
    file), it keeps ignoring that segment instead of attaching and counting it again, and the
    state file lists it so the next daemon does not count it either."""
    from ai_analytics.daemon.ingest.lanes import LaneSet

    lane = Lane(namespace, LaneGeometry(64, 8, False))
    lane.retire()
    lanes = LaneSet(namespace, SHM_DIR, frozenset({os.getuid(), 0}), 16)
    lanes.scan()
    assert [t.ident.name for t in lanes.finish_drained()] == [lane.name]

    def refuse(path, *args, **kwargs):
        raise PermissionError(1, "Operation not permitted", path)

    monkeypatch.setattr(os, "unlink", refuse)
    lanes.unlink_finished()
    monkeypatch.undo()
    assert os.path.exists(os.path.join(SHM_DIR, lane.name))
    for _ in range(3):
        lanes.scan()
    assert len(lanes) == 0 and lanes.folded_count == 1
    created = lane.q[L.OFF_CREATED_NS // 8]
    assert [lane.name, created] in lanes.saved_state()["folded_unlinked"]
