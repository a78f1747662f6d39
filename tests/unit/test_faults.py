"""Faults inside the daemon's own process: a stop request from a signal handler that lands at
any moment, and a counted lane that the daemon may not unlink."""

from __future__ import annotations

import os
import random
import signal
import time

from ai_analytics.client import _layout as L
from ai_analytics.client._lane import Lane, LaneGeometry

from helpers import SHM_DIR


def test_stop_request_from_a_signal_handler_never_deadlocks():
    """A signal handler requests the stop while the loop waits, thousands of times at random
    moments: every wait returns at once. (threading.Event.set() from a handler can deadlock
    when the signal lands while the same thread holds the event's lock inside wait().)"""
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
