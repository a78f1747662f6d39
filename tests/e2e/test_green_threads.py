"""Green threads (gevent, eventlet): their monkey-patching makes ``threading.local`` local to
a greenlet, which would give every request of a green server a lane of its own. A worker
patched before it imports the client still gets one lane per operating-system thread, and
every event its greenlets emit reaches the daemon."""

from __future__ import annotations

import json

import pytest

from helpers import lane_names, run_python

GREENLETS = 100
EVENTS_EACH = 40  # all of them fit one default lane: no daemon drains meanwhile

SPAWN = {
    "gevent": """
        from gevent import monkey; monkey.patch_all()
        import gevent
        spawn, join = gevent.spawn, gevent.joinall
    """,
    "eventlet": """
        import eventlet; eventlet.monkey_patch()
        spawn = eventlet.spawn
        def join(threads):
            for thread in threads:
                thread.wait()
    """,
}


@pytest.mark.parametrize("library", sorted(SPAWN))
def test_greenlets_share_their_os_thread_lane_and_lose_nothing(
        library: str, namespace: str, make_daemon) -> None:
    daemon = make_daemon()
    result = run_python(
        SPAWN[library] + f"""
        import json, threading, time
        from ai_analytics import client
        from ai_analytics.client import _emit

        assert type(threading.local()).__module__ != "_thread"  # really patched
        lanes, written = set(), []

        def serve(index):
            for _ in range({EVENTS_EACH}):
                written.append(client.emit("green", 1.0, model="{library}"))
                lanes.add(id(_emit._local.lane))
                time.sleep(0)  # a cooperative switch to another greenlet

        join([spawn(serve, i) for i in range({GREENLETS})])
        helper = threading.Thread(target=serve, args=(-1,))  # a green thread too, once patched
        helper.start(); helper.join()
        print(json.dumps({{"lanes": len(lanes), "written": written.count(True)}}))
        """,
        namespace,
        warnings="ignore",  # eventlet warns on import that it is deprecated
    )
    report = json.loads(result.stdout.splitlines()[-1])
    assert report == {"lanes": 1, "written": (GREENLETS + 1) * EVENTS_EACH}
    assert len(lane_names(namespace)) == 1
    daemon.lanes.scan()
    daemon.drain()
    rows = daemon.get_performance_snapshot()["operations"]
    counts = {(row["operation"], row["model"]): row["windows"]["since_start"]["count"]
              for row in rows}
    assert counts == {("green", library): (GREENLETS + 1) * EVENTS_EACH}
