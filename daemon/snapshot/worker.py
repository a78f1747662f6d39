"""The snapshot thread: builds each snapshot off the drain loop.

The loop hands over a ``Capture`` (``submit``) and goes on draining; this thread turns it
into a document, runs the insights, publishes it, and writes the sinks, however long that
takes (a slow disk, a big /metrics render). One job at a time: ``submit`` refuses a capture
while the previous job runs, and the loop takes its snapshot later (counted in
``drain.snapshots_delayed``). The job's result comes back through ``take_result``, which the
loop polls: it is how the loop learns that a state file counting some reclaimed lanes is on
disk, so that it may unlink them.

Handing over is one ``threading.Condition``: ``submit`` never blocks on the job itself (the
lock is held only to store the capture and notify), and ``busy`` is set by ``submit`` on the
loop's thread and cleared by this thread when the job and its result are done, so a loop that
reads ``busy`` False knows the thread is idle until its own next ``submit``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger("ai_analytics.daemon")

J = TypeVar("J")
R = TypeVar("R")


class SnapshotThread(Generic[J, R]):
    """Runs ``job(capture)`` for each submitted capture on one daemon thread."""

    def __init__(self, job: Callable[[J], R], name: str = "ai-analytics-snapshot") -> None:
        self._job = job
        self._cond = threading.Condition()
        self._pending: J | None = None
        self._result: tuple[J, R] | None = None
        self._closing = False
        self.busy = False
        self.failures = 0  # jobs that raised (logged; the next capture is taken as usual)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, capture: J) -> bool:
        """Hand ``capture`` over; False (and nothing done) while the previous job runs."""
        if self.busy:
            return False
        self.busy = True
        with self._cond:
            self._pending = capture
            self._cond.notify()
        return True

    def take_result(self) -> tuple[J, R] | None:
        """The last finished job's (capture, result), once; None if there is none new. For
        the thread that submits: while a job runs it is None (that job may be storing its
        own), so a result is never taken and overwritten at once."""
        if self.busy:
            return None
        result, self._result = self._result, None
        return result

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._closing:
                    self._cond.wait()
                if self._pending is None:
                    return
                capture, self._pending = self._pending, None
            try:
                self._result = (capture, self._job(capture))
            except Exception:
                # A bug in a document's build must not end snapshots for good: logged, and
                # the next interval tries again from a fresh capture.
                self.failures += 1
                log.exception("the snapshot failed; the next one is taken as usual")
            finally:
                self.busy = False

    def close(self, timeout: float) -> bool:
        """Let the job under way finish (at most ``timeout`` seconds) and end the thread;
        True if it ended."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout)
        return not self._thread.is_alive()


__all__ = ["SnapshotThread"]
