"""A stop or reload request that a signal handler may make: no lock anywhere.

``threading.Event.set()`` takes the event's lock; if a signal arrives while the main thread
is inside ``Event.wait()`` holding that same lock, a handler calling ``set()`` deadlocks the
daemon for good (seen: a SIGTERM that never stopped it). Here a request is a flag and a byte
written to a pipe; the loop sleeps in ``select`` on the pipe, so it wakes at once.

A reload request (SIGHUP) is a second flag on the same pipe: a counter that only requesters
increase, and that the loop compares with the last value it took. A request that arrives while
the loop takes the previous one is therefore never lost.
"""

from __future__ import annotations

import contextlib
import os
import select


class StopRequest:
    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        self._requested = False
        self._reloads = 0  # increased by requesters only
        self._reloads_taken = 0  # written by the loop only

    def set(self) -> None:
        """Request the stop; safe from a signal handler and from any thread."""
        self._requested = True
        self._wake()

    def request_reload(self) -> None:
        """Request a reload; safe from a signal handler and from any thread."""
        self._reloads += 1
        self._wake()

    def take_reload(self) -> bool:
        """True if a reload was requested since the last call (for the loop's thread)."""
        requested = self._reloads
        if requested == self._reloads_taken:
            return False
        self._reloads_taken = requested
        return True

    def _wake(self) -> None:
        if self._write >= 0:
            with contextlib.suppress(BlockingIOError, OSError):
                os.write(self._write, b"!")  # a full pipe already wakes the loop

    def is_set(self) -> bool:
        return self._requested

    def wait(self, timeout: float, also: int = -1) -> bool:
        """Sleep up to ``timeout`` seconds, less if a stop or a reload is requested or the
        file descriptor ``also`` becomes readable (the caller reads it); True if a stop was."""
        if not self._requested and self._reloads == self._reloads_taken and self._read >= 0:
            with contextlib.suppress(InterruptedError):
                select.select([self._read] if also < 0 else [self._read, also], [], [], timeout)
            with contextlib.suppress(BlockingIOError, OSError):
                os.read(self._read, 4096)
        return self._requested

    def close(self) -> None:
        """Release the pipe; later requests only set the flag (the fds may be reused)."""
        read, write, self._read, self._write = self._read, self._write, -1, -1
        for fd in (read, write):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
