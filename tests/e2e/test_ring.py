"""The ring itself: wrap-around, both on_full policies, the control segment, no daemon."""

from __future__ import annotations

import json
import subprocess

from ai_analytics.client import _layout as L

from helpers import (
    events_total,
    lane_names,
    read_lane,
    remove_namespace,
    run_python,
    shm_names,
    start_python,
)


def test_without_a_daemon_emit_fills_then_drops_and_counts(namespace):
    """No daemon: the first `capacity` emits are written, the rest return False and are
    counted in shared memory, and the segment outlives the producer for a later daemon."""
    result = run_python(
        """
        import json
        from ai_analytics import client
        print(json.dumps([client.emit("op", 1.0) for _ in range(10000)]))
        """,
        namespace,
    )
    assert result.stderr == ""  # no resource-tracker warning, nothing else
    written = json.loads(result.stdout)
    assert written == [True] * L.DEFAULT_CAPACITY + [False] * (10000 - L.DEFAULT_CAPACITY)
    (lane,) = lane_names(namespace)
    header = read_lane(lane)
    assert header.capacity == L.DEFAULT_CAPACITY and header.overwrite == 0
    assert header.head == L.DEFAULT_CAPACITY
    assert header.dropped == 10000 - L.DEFAULT_CAPACITY


def test_wrap_around_keeps_counts_exact(daemon_factory, namespace):
    """A 16-record lane laps many times while the daemon drains it: nothing unaccounted."""
    daemon = daemon_factory(max_queue_size=16, batch_timeout_seconds=0.001)
    result = run_python(
        """
        import json, time
        from ai_analytics import client
        sent = 0
        for i in range(3000):
            client.emit("wrap", float(i))
            sent += 1
            if i % 8 == 7:
                time.sleep(0.002)
        print(sent)
        """,
        namespace,
    )
    state = daemon.state_after(lambda s: s["lanes"] == [], what="reclaim")
    assert events_total(state) == int(result.stdout) == 3000
    assert state["events"]["received"] > 16 * 20  # the ring wrapped many times
    assert state["events"]["invalid"] == 0
    assert daemon.stop() == 0


def test_overwrite_policy_keeps_the_newest_and_counts_the_rest(daemon_factory, namespace):
    """on_full=overwrite: with no reader the producer laps the ring; the daemon then reads
    the newest capacity-1 records and counts every older one as overwritten."""
    daemon = daemon_factory(max_queue_size=64, on_full="overwrite")
    with daemon.stopped():  # a reader that does not read
        result = run_python(
            """
            import json
            from ai_analytics import client
            print(json.dumps([client.emit("ow", float(i)) for i in range(1000)]))
            """,
            namespace,
        )
        assert json.loads(result.stdout) == [True] * 1000  # overwrite never refuses
        (lane,) = lane_names(namespace)
        assert read_lane(lane).overwrite == 1 and read_lane(lane).capacity == 64
    state = daemon.state_after(lambda s: s["lanes"] == [], what="reclaim")
    assert state["events"]["received"] == 63
    assert state["events"]["overwritten"] == 1000 - 63
    assert events_total(state) == 1000
    assert daemon.stop() == 0


def test_drop_policy_under_a_stopped_reader(daemon_factory, namespace):
    """on_full=drop with a stalled daemon: the oldest records stay, the rest are dropped."""
    daemon = daemon_factory(max_queue_size=64)
    with daemon.stopped():
        result = run_python(
            """
            import json
            from ai_analytics import client
            print(json.dumps([client.emit("dr", float(i)) for i in range(1000)]))
            """,
            namespace,
        )
    assert json.loads(result.stdout) == [True] * 64 + [False] * (1000 - 64)
    state = daemon.state_after(lambda s: s["lanes"] == [], what="reclaim")
    assert state["events"]["received"] == 64 and state["events"]["dropped"] == 1000 - 64
    assert daemon.stop() == 0


def test_producers_learn_the_lane_geometry_from_the_running_daemon(daemon_factory, namespace):
    """Workers need no config: the daemon publishes capacity and policy; after a clean stop
    new lanes use the documented defaults again."""
    daemon = daemon_factory(max_queue_size=128, on_full="overwrite")
    assert f"{namespace}.control" in shm_names(namespace)
    code = """
        import sys
        from ai_analytics import client
        from ai_analytics.client import _emit
        client.emit("geometry", 1.0)
        print(_emit._local.lane.name)
        sys.stdin.readline()
    """
    proc = start_python(code, namespace, stdin=subprocess.PIPE)
    try:
        header = read_lane(proc.stdout.readline().strip())
    finally:
        proc.communicate("\n", timeout=30)
    assert header.capacity == 128 and header.overwrite == 1
    assert daemon.stop() == 0
    assert f"{namespace}.control" not in shm_names(namespace)
    run_python('from ai_analytics import client; client.emit("after", 1.0)', namespace)
    (lane,) = lane_names(namespace)
    assert read_lane(lane).capacity == L.DEFAULT_CAPACITY


def test_namespaces_never_mix(daemon_factory, namespace):
    """A producer in another namespace is invisible to this namespace's daemon."""
    other = f"{namespace}-other"
    daemon = daemon_factory()
    try:
        run_python('from ai_analytics import client; client.emit("elsewhere", 1.0)', other)
        run_python('from ai_analytics import client; client.emit("here", 1.0)', namespace)
        state = daemon.state_after(lambda s: s["lanes"] == [] and s["events"]["received"],
                                   what="drain")
        assert [r["operation"] for r in state["operations"]] == ["here"]
        assert len(lane_names(other)) == 1  # untouched, still waiting for its own daemon
    finally:
        remove_namespace(other)
    assert daemon.stop() == 0


def test_full_name_table_counts_new_names_as_other(daemon_factory, namespace):
    """A lane's name table is bounded: past names_per_lane, new names are counted under
    "other", the known ones keep their own series, and no event is lost."""
    daemon = daemon_factory(names_per_lane=3)
    run_python(
        """
        from ai_analytics import client
        for round in range(10):
            for op in ("a", "b", "c", "d", "e"):
                client.emit(op, 1.0)
        """,
        namespace,
    )
    state = daemon.state_after(lambda s: s["lanes"] == [] and s["events"]["received"],
                               what="drain")
    counts = {r["operation"]: r["count"] for r in state["operations"]}
    assert counts == {"a": 10, "b": 10, "c": 10, "other": 20}
    assert daemon.stop() == 0
