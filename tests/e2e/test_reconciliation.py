"""Every emit call ends in exactly one outcome counter, across real processes and threads."""

from __future__ import annotations

import json
import subprocess

from helpers import events_total, lane_names, run_python, start_python, wait_for


def all_reclaimed(state: dict) -> bool:
    return state["lanes"] == [] and state["lanes_summary"]["reclaimed"] > 0

PRODUCER = """
import json, sys, threading
from ai_analytics import client

def work(tag, n):
    sent = 0
    for i in range(n):
        client.emit(f"op-{tag}", i % 500 * 0.1, model=f"model-{i % 3}", quality=0.5)
        sent += 1
    return sent

results = []
def thread_main(tag, n):
    results.append(work(tag, n))

threads = [threading.Thread(target=thread_main, args=(f"{sys.argv[1]}-{t}", int(sys.argv[2])))
           for t in range(int(sys.argv[3]))]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps(sum(results)))
"""


def test_single_producer_counts_are_exact(daemon_factory, namespace):
    """One producer, one thread: received + dropped equals the calls, per series too."""
    daemon = daemon_factory()
    run_python(
        """
        from ai_analytics import client
        for i in range(5000):
            client.emit("generate", 3.0, model="m1" if i % 2 else "m2", success=i % 7 != 0)
        """,
        namespace,
    )
    state = daemon.state_after(lambda s: s["lanes_summary"]["reclaimed"] == 1, what="reclaim")
    assert events_total(state) == 5000
    assert state["events"]["invalid"] == 0 and state["events"]["pending"] == 0
    counts = {(r["operation"], r["model"]): r["count"] for r in state["operations"]}
    assert sum(counts.values()) == state["events"]["received"]
    if state["events"]["dropped"] == 0:
        assert counts == {("generate", "m1"): 2500, ("generate", "m2"): 2500}
    assert daemon.stop() == 0


def test_three_processes_two_threads_each_reconcile(daemon_factory, namespace):
    """3 processes x 2 threads emitting concurrently: emitted == sum of outcomes, exactly."""
    daemon = daemon_factory()
    procs = [start_python(PRODUCER, namespace, args=[f"p{p}", "20000", "2"]) for p in range(3)]
    emitted = sum(json.loads(proc.communicate(timeout=120)[0]) for proc in procs)
    assert all(proc.returncode == 0 for proc in procs)
    assert emitted == 3 * 2 * 20000
    assert daemon.stop() == 0
    state = daemon.state()
    assert events_total(state) == emitted, state["events"]
    assert state["events"]["pending"] == 0
    assert sum(r["count"] for r in state["operations"]) == state["events"]["received"]
    assert state["lanes_summary"]["reclaimed"] == 6
    assert lane_names(namespace) == []


def test_forked_child_takes_its_own_lane(daemon_factory, namespace):
    """A child forked after the parent emitted writes a lane of its own, never the parent's."""
    daemon = daemon_factory()
    result = run_python(
        """
        import json, os
        from ai_analytics import client
        from ai_analytics.client import _emit
        for _ in range(100):
            client.emit("parent", 1.0)
        parent_lane = _emit._local.lane.name
        pid = os.fork()
        if pid == 0:
            for _ in range(50):
                client.emit("child", 1.0)
            os.write(1, (_emit._local.lane.name + "\\n").encode())
            os._exit(0)
        os.waitpid(pid, 0)
        for _ in range(100):
            client.emit("parent", 1.0)
        print(parent_lane)
        """,
        namespace,
    )
    child_lane, parent_lane = result.stdout.split()
    assert child_lane != parent_lane
    state = daemon.state_after(lambda s: s["lanes_summary"]["reclaimed"] == 2, what="reclaim")
    counts = {r["operation"]: r["count"] for r in state["operations"]}
    assert counts == {"parent": 200, "child": 50}
    assert state["events"]["invalid"] == 0
    assert daemon.stop() == 0


def test_ended_threads_retire_their_lanes(daemon_factory, namespace):
    """A long-running process that starts and ends many threads does not leak lanes."""
    daemon = daemon_factory()
    proc = start_python(
        """
        import sys, threading
        from ai_analytics import client
        for round in range(5):
            threads = [threading.Thread(target=lambda: [client.emit("t", 1.0) for _ in range(10)])
                       for _ in range(10)]
            for t in threads: t.start()
            for t in threads: t.join()
        print("done", flush=True)
        sys.stdin.readline()  # stay alive until the test has looked
        """,
        namespace,
        stdin=subprocess.PIPE,
    )
    try:
        assert proc.stdout.readline().strip() == "done"
        state = daemon.state_after(lambda s: s["lanes_summary"]["reclaimed"] == 50,
                                   what="50 retired lanes reclaimed")
        assert state["events"]["received"] == 500
        wait_for(lambda: lane_names(namespace) == [], what="retired segments unlinked")
        assert proc.poll() is None  # the producer process still runs
    finally:
        proc.communicate(input="\n", timeout=30)
    assert daemon.stop() == 0


def test_emits_from_a_signal_handler_keep_the_lane_consistent(daemon_factory, namespace):
    """Emits from a signal handler interleaved with the main loop's: every call is counted."""
    daemon = daemon_factory()
    result = run_python(
        """
        import json, signal
        from ai_analytics import client
        calls = [0]
        def handler(signum, frame):
            client.emit("from-handler", 2.0)
            calls[0] += 1
        signal.signal(signal.SIGALRM, handler)
        signal.setitimer(signal.ITIMER_REAL, 0.0005, 0.0005)
        main_calls = 0
        for i in range(200000):
            client.emit("main", 1.0, model="m")
            main_calls += 1
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
        print(json.dumps([main_calls, calls[0]]))
        """,
        namespace,
    )
    main_calls, handler_calls = json.loads(result.stdout)
    assert handler_calls > 10
    state = daemon.state_after(all_reclaimed, what="reclaim")
    assert events_total(state) == main_calls + handler_calls
    counts = {r["operation"]: r["count"] for r in state["operations"]}
    assert counts["main"] <= main_calls and counts["from-handler"] <= handler_calls
    # A handler that runs between an emit's slot claim and its write can make that one
    # record read as stale (counted invalid): never more than one per handler call.
    assert state["events"]["invalid"] <= handler_calls
    assert daemon.stop() == 0


# A new thread that at once emits faster than its lane (8192 records, the default) can hold
# for one second: 16 000 events/s for 1.5 s, in 1 ms steps. Prints the emit calls refused.
FAST_NEW_THREAD = """
import threading, time
from ai_analytics import client
refused = 0
def run():
    global refused
    start = time.monotonic()
    for step in range(1500):
        for _ in range(16):
            refused += not client.emit("burst", 1.0)
        pause = start + (step + 1) / 1000 - time.monotonic()
        if pause > 0:
            time.sleep(pause)
thread = threading.Thread(target=run)
thread.start()
thread.join()
print(refused)
"""


def test_a_new_lane_is_drained_before_it_fills(daemon_factory, namespace):
    """With the default settings (1 s discovery and batch timeout), a thread whose lane would
    fill within its first second loses nothing: the daemon is woken by the lane's creation,
    not at its next scan, and drains a lane it has not measured yet soon."""
    daemon = daemon_factory(batch_timeout_seconds=1.0, discovery_interval_seconds=1.0,
                            snapshot_interval_seconds=5.0)
    refused = int(run_python(FAST_NEW_THREAD, namespace).stdout)
    state = daemon.state_after(lambda s: s["events"]["received"] + s["events"]["dropped"]
                               == 24_000, what="drain")
    assert (refused, state["events"]["dropped"]) == (0, 0), state["events"]
