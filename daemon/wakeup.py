"""A stop request that a signal handler may make: no lock anywhere.

``threading.Event.set()`` takes the event's lock; if a signal arrives while the main thread
is inside ``Event.wait()`` holding that same lock, a handler calling ``set()`` deadlocks the
daemon for good (seen: a SIGTERM that never stopped it). Here a request is a flag and a byte
written to a pipe; the loop sleeps in ``select`` on the pipe, so it wakes at once.
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

    def set(self) -> None:
        """Request the stop; safe from a signal handler and from any thread."""
        self._requested = True
        if self._write >= 0:
            with contextlib.suppress(BlockingIOError, OSError):
                os.write(self._write, b"!")  # a full pipe already wakes the loop

    def is_set(self) -> bool:
        return self._requested

    def wait(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` seconds, less if a stop is requested; True if it was."""
        if not self._requested and self._read >= 0:
            with contextlib.suppress(InterruptedError):
                select.select([self._read], [], [], timeout)
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
