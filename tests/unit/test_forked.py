"""Work done in a forked child (daemon/snapshot/forked.py): the result comes back whole from
another process, in frames; a child that fails or hangs is reaped and the work done here."""

from __future__ import annotations

import logging
import math
import os
import threading
import time

import numpy as np
import pytest

from ai_analytics.daemon.snapshot import forked as F
from ai_analytics.daemon.snapshot.forked import Forked

from helpers import wait_for


def test_the_result_comes_from_a_child_process():
    forked = Forked(stalled_after=20, limit=60, mode="always")
    assert forked.run(os.getpid) != os.getpid()
    assert (forked.in_child, forked.failures) == (1, 0)
    with pytest.raises(ChildProcessError):  # reaped: no zombie left behind
        os.waitpid(-1, os.WNOHANG)


def test_long_lists_come_back_in_frames_and_whole():
    """Lists longer than a frame (nested too) come back equal, numpy arrays included, and
    ``between`` is called before each frame is unpickled."""
    value = {"rows": [{"i": i, "inner": list(range(i % 70)), "x": i / 3} for i in range(500)],
             "array": np.arange(100_000, dtype=np.int64), "empty": [], "short": [1, 2]}
    calls = []
    got = Forked(stalled_after=20, limit=60, mode="always").run(lambda: value,
                                                       lambda: calls.append(1))
    assert got["rows"] == value["rows"] and got["empty"] == [] and got["short"] == [1, 2]
    assert np.array_equal(got["array"], value["array"])
    # 500 rows in frames of CHUNK_ITEMS, the inner lists longer than that, and the value
    assert len(calls) > 500 // F.CHUNK_ITEMS


def test_a_failing_child_falls_back_and_is_logged_once(caplog):
    def fails() -> int:
        if os.getpid() != parent:
            raise ValueError("only in the child")
        return 7

    parent = os.getpid()
    forked = Forked(stalled_after=20, limit=60, mode="always")
    with caplog.at_level(logging.WARNING, logger="ai_analytics.daemon"):
        assert forked.run(fails) == 7
        assert forked.run(fails) == 7
    assert (forked.in_child, forked.failures, forked.enabled) == (0, 2, True)
    warnings = [r for r in caplog.records if "child process" in r.getMessage()]
    assert len(warnings) == 1 and "ValueError: only in the child" in warnings[0].getMessage()
    assert forked.run(os.getpid) != parent  # a success ends the run of failures
    assert forked.in_child == 1


def test_a_child_stuck_on_a_lock_held_at_the_fork_is_killed_and_forks_stop(caplog):
    """The hazard of forking a process with threads: a lock another thread holds at the fork
    stays held in the child for good. That child stands still; it is killed and reaped, the
    work is done here once the lock is free, and there are no more forks in this run."""
    lock = threading.Lock()
    holding = threading.Event()
    forked = Forked(stalled_after=1.0, limit=60, mode="always")

    def hold() -> None:
        with lock:
            holding.set()
            wait_for(lambda: forked.failures >= 1, timeout=60.0, what="the child to be killed")

    def work() -> int:
        with lock:
            return os.getpid()

    holder = threading.Thread(target=hold)
    holder.start()
    holding.wait(10)
    started = time.monotonic()
    with caplog.at_level(logging.ERROR, logger="ai_analytics.daemon"):
        assert forked.run(work) == os.getpid()
    holder.join(10)
    assert (forked.failures, forked.enabled) == (1, False)
    assert time.monotonic() - started < 30
    assert any("stood still" in r.getMessage() for r in caplog.records)
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)
    assert forked.run(os.getpid) == os.getpid()  # no more forks


def test_auto_forks_once_the_work_costs_more_than_its_budget():
    """"auto": here while the last run cost less CPU than the budget (the first run counts
    as free); in a child once it cost more; here again once the child's own CPU is back
    under it. "never" stays here, "always" forks whatever the cost."""
    def burn(seconds: float) -> int:
        end = time.thread_time() + seconds
        while time.thread_time() < end:
            pass
        return os.getpid()

    here = os.getpid()
    forked = Forked(stalled_after=20, limit=60, mode="auto")
    assert forked.run(lambda: burn(0.05), budget=0.02) == here  # the first: nothing known
    assert forked.last_cost >= 0.05
    assert forked.run(lambda: burn(0.001), budget=0.02) != here  # it cost 50 ms last time
    assert forked.in_child == 1 and forked.last_cost < 0.02
    assert forked.run(lambda: burn(0.001), budget=0.02) == here
    forked.mode = "never"
    assert forked.run(lambda: burn(0.05), budget=0.0) == here
    assert forked.run(lambda: burn(0.05), budget=0.0) == here
    forked.mode = "always"
    assert forked.run(os.getpid, budget=math.inf) != here
