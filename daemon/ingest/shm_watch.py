"""Notice a new segment of the namespace in the segment directory as it is created.

A lane is drained only once the daemon has attached it. Found at the next discovery scan (1 s
by default), a thread that writes faster than its ring holds per second loses events before it
is ever read. With inotify the drain loop's sleep ends when the segment is created, so the lane
is attached within milliseconds. Other programs' segments (a busy /dev/shm has many) are read
off the event queue and ignored, without a scan.

Where inotify cannot be had (no watches left, an unusual kernel), a stat of the directory at
each wake-up stands in: new lanes are then found at the loop's next wake-up.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import struct

log = logging.getLogger(__name__)

# <sys/inotify.h>
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_Q_OVERFLOW = 0x00004000
EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then len bytes of NUL-padded name
READ_SIZE = 64 * 1024


class ShmWatch:
    def __init__(self, directory: str, prefix: str) -> None:
        self.directory = directory
        self.prefix = os.fsencode(prefix)
        self.mtime_ns = 0  # the stand-in's last view of the directory
        self.fd = -1
        try:
            self.fd = _inotify_watch(directory, IN_CREATE | IN_MOVED_TO)
        except (OSError, AttributeError) as exc:
            log.warning("inotify unavailable (%s): new lanes are found when the drain loop "
                        "wakes, not when they are created", exc)
        self.changed()  # from now on: what is created after this call is news

    def fileno(self) -> int:
        """What the drain loop's sleep also waits on; -1 without inotify."""
        return self.fd

    def changed(self) -> bool:
        """Whether a segment with the prefix appeared since the last call."""
        if self.fd < 0:
            return self._directory_changed()
        news = False
        while True:
            try:
                data = os.read(self.fd, READ_SIZE)
            except (BlockingIOError, InterruptedError):
                return news
            except OSError as exc:  # not expected; scanning is always safe
                log.warning("reading inotify events failed: %s", exc)
                return True
            news = news or _names_a_segment(data, self.prefix)

    def _directory_changed(self) -> bool:
        try:
            mtime = os.stat(self.directory).st_mtime_ns
        except OSError:
            return False
        if mtime == self.mtime_ns:
            return False
        self.mtime_ns = mtime
        return True

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)


def _names_a_segment(data: bytes, prefix: bytes) -> bool:
    offset = 0
    while offset + EVENT.size <= len(data):
        _wd, mask, _cookie, length = EVENT.unpack_from(data, offset)
        offset += EVENT.size
        if mask & IN_Q_OVERFLOW or data[offset : offset + length].startswith(prefix):
            return True  # an overflowed queue may have lost ours: scan
        offset += length
    return False


def _inotify_watch(directory: str, mask: int) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    if fd < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"inotify_init1: {os.strerror(errno)}")
    if libc.inotify_add_watch(fd, os.fsencode(directory), ctypes.c_uint32(mask)) < 0:
        errno = ctypes.get_errno()
        os.close(fd)
        raise OSError(errno, f"inotify_add_watch {directory}: {os.strerror(errno)}")
    return fd
