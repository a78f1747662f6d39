"""Keeps the snapshot thread's Python work out of the drain loop's passes.

Two threads of one process take turns at the GIL: while the snapshot thread computes, a drain
pass gets the interpreter only every other switch interval (5 ms), and waits again after each
numpy call that let it go. A pass of 8 ms then took 20 to 40 ms, past the time a busy lane
takes to fill. The loop is idle most of the time (it sleeps until a lane is about half full),
so the snapshot thread does its work in steps, each started only while no pass runs: a pass
that begins during a step shares the GIL with that one step at most.

A step waits at most ``max_wait`` seconds: a loop that drains without pause (a rate beyond
what it keeps up with) must not hold snapshots back for good.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


def no_wait() -> None:
    """The wait of work that shares its process with no drain loop (a test, a tool): none."""


class DrainGate:
    """``passing()`` around each drain pass (the loop); ``wait()`` before each step of
    snapshot work (the snapshot thread)."""

    def __init__(self, max_wait: float) -> None:
        self.max_wait = max_wait
        self._cond = threading.Condition()
        self._passing = False

    @contextmanager
    def passing(self) -> Iterator[None]:
        with self._cond:
            self._passing = True
        try:
            yield
        finally:
            with self._cond:
                self._passing = False
                self._cond.notify_all()

    def wait(self) -> None:
        """Until no pass runs (at most ``max_wait`` seconds)."""
        with self._cond:
            self._cond.wait_for(lambda: not self._passing, self.max_wait)


__all__ = ["DrainGate", "no_wait"]
