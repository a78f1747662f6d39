"""A producer's lane: one single-producer/single-consumer ring per thread.

Creating a lane is the slow path (a few syscalls, once per thread); everything a call to
``emit`` touches afterwards is an attribute of ``Lane`` and one ``pack_into``. The byte layout
is in ``_layout``; the protocol is in docs/ring-format.md.
"""

from __future__ import annotations

import itertools
import logging
import mmap
import os
import threading
import time

from . import _layout as L
from ._proc import start_ticks
from ._segments import SEGMENT_MODE, control_name, lane_name, shm_path

log = logging.getLogger("ai_analytics.client")

_serials = itertools.count()
NO_LIMIT = 1 << 63


class LaneGeometry:
    """What a new lane looks like: published by the daemon, or the documented defaults."""

    __slots__ = ("capacity", "names_capacity", "overwrite")

    def __init__(self, capacity: int, names_capacity: int, overwrite: bool) -> None:
        self.capacity = capacity
        self.names_capacity = names_capacity
        self.overwrite = overwrite


def read_geometry(namespace: str) -> LaneGeometry:
    """Read the daemon's control segment; fall back to defaults when it is absent or bad."""
    default = LaneGeometry(L.DEFAULT_CAPACITY, L.DEFAULT_NAMES_CAPACITY, False)
    try:
        fd = os.open(shm_path(control_name(namespace)), os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return default
    try:
        raw = os.read(fd, L.CONTROL_SIZE)
    except OSError:
        return default
    finally:
        os.close(fd)
    if len(raw) != L.CONTROL_SIZE:
        return default
    magic, version, capacity, flags, names_capacity, _pid = L.CONTROL.unpack(raw)
    if (
        magic != L.CONTROL_MAGIC
        or version != L.VERSION
        or not L.MIN_CAPACITY <= capacity <= L.MAX_CAPACITY
        or not 1 <= names_capacity <= L.MAX_NAMES_CAPACITY
    ):
        return default
    return LaneGeometry(capacity, names_capacity, bool(flags & L.FLAG_OVERWRITE))


class Lane:
    """The calling thread's ring, mapped read-write; only that thread writes it."""

    __slots__ = (
        "__weakref__",
        "base",
        "buf",
        "capacity",
        "dropped",
        "head",
        "interning",
        "limit",
        "models",
        "name",
        "names_capacity",
        "names_count",
        "ops",
        "pid",
        "q",
        "scratch",
    )

    def __init__(self, namespace: str, geometry: LaneGeometry) -> None:
        self.pid = os.getpid()
        self.capacity = geometry.capacity
        self.names_capacity = geometry.names_capacity
        size = L.lane_size(self.capacity, self.names_capacity)
        fd, self.name = _create_segment(namespace, self.pid, size)
        try:
            flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)  # no first-lap faults
            self.buf = mmap.mmap(fd, size, flags=flags)
        finally:
            os.close(fd)
        L.HEADER_FIXED.pack_into(
            self.buf,
            L.OFF_VERSION,
            L.VERSION,
            L.HEADER_SIZE,
            L.RECORD_SIZE,
            self.capacity,
            self.names_capacity,
            L.NAME_ENTRY_SIZE,
            self.pid,
            L.FLAG_OVERWRITE if geometry.overwrite else 0,
            start_ticks(self.pid),
            time.time_ns(),
            threading.get_native_id(),
        )
        self.q = memoryview(self.buf).cast("B").cast("Q")
        self.base = L.records_offset(self.names_capacity)
        self.head = 0
        self.dropped = 0
        self.limit = NO_LIMIT if geometry.overwrite else self.capacity
        # Names already in the table, by the object the caller passed (str or enum member).
        self.ops: dict[object, int] = {}
        self.models: dict[object, int] = {"": 0}
        self.names_count = 0
        self.interning = False
        self.scratch = bytearray(L.RECORD_SIZE)
        # Magic last: until it is there, the daemon treats the segment as "not ready yet".
        self.q[L.Q_MAGIC] = L.LANE_MAGIC

    def refresh_limit(self) -> None:
        """The cached tail says full: read the daemon's tail once (one shared read a lap)."""
        self.limit = self.q[L.Q_TAIL] + self.capacity

    def intern(self, name: str) -> int:
        """Give ``name`` an id in this lane's table (already validated by the caller)."""
        if self.interning:  # re-entered from a signal handler: do not race the outer call
            return L.NAME_ID_OVERFLOW
        self.interning = True
        try:
            index = self.names_count
            if index >= self.names_capacity:
                return L.NAME_ID_OVERFLOW
            raw = name.encode("utf-8")
            offset = L.HEADER_SIZE + index * L.NAME_ENTRY_SIZE
            self.buf[offset + 1 : offset + 1 + len(raw)] = raw
            self.buf[offset] = len(raw)
            self.names_count = index + 1
            self.q[L.Q_NAMES_COUNT] = self.names_count  # publish after the entry is whole
            return index + 1
        finally:
            self.interning = False

    def retire(self) -> None:
        """Tell the daemon this thread is gone: it drains the lane and unlinks it."""
        self.q[L.Q_RETIRED] = 1

    def __del__(self, _getpid=os.getpid) -> None:
        # Runs when the owning thread ends (its thread-local dies). A forked child that drops
        # its parent's lane must not retire it: the parent still writes there.
        try:
            if _getpid() == self.pid:
                self.retire()
        except Exception:
            pass


def _create_segment(namespace: str, pid: int, size: int) -> tuple[int, str]:
    """Create a fresh, fully reserved segment; return its fd and name."""
    for _ in range(64):
        name = lane_name(namespace, pid, next(_serials))
        try:
            fd = os.open(
                shm_path(name), os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, SEGMENT_MODE
            )
        except FileExistsError:  # a dead process with our pid left one behind
            continue
        try:
            os.fchmod(fd, SEGMENT_MODE)  # the umask must not strip the group bits
            # Reserve the pages now: on a full tmpfs this fails here with ENOSPC instead of
            # raising SIGBUS on some later store inside emit.
            os.posix_fallocate(fd, 0, size)
        except BaseException:
            os.close(fd)
            os.unlink(shm_path(name))
            raise
        return fd, name
    raise FileExistsError(f"no free lane name for pid {pid} in namespace {namespace!r}")
