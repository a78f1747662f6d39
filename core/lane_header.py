"""A lane's name and header, read and checked: the one parser that the daemon
(``lane_reader``) and the read-only views (``shm_view``) share. Stdlib only.

Nothing in a segment is trusted: every field is checked against the layout
(``client/_layout.py``), and the name against the format producers give it
(``client/_segments.py``). A segment that is not (yet) a usable lane raises ``NotReady`` or
``BadSegment`` with a reason that fits in one log line.
"""

from __future__ import annotations

import dataclasses
import struct

from ai_analytics.client import _layout as L
from ai_analytics.client._proc import is_alive
from ai_analytics.client._segments import parse_lane_name

NAME_FORMAT = "<namespace>.lane.<16 hex digits>.<serial>"


class NotReady(Exception):
    """The segment is still being created (no magic yet): look again later."""


class BadSegment(Exception):
    """The segment is not a lane we can use; the message says why."""


class Outdated(BadSegment):
    """A lane in an earlier layout version: written by workers that run an older release.
    Every version so far keeps ``pid`` and ``pid_start_ticks`` where version 2 has them."""

    def __init__(self, message: str, pid: int, pid_start_ticks: int) -> None:
        super().__init__(message)
        self.pid = pid
        self.pid_start_ticks = pid_start_ticks


@dataclasses.dataclass(frozen=True)
class LaneHeader:
    """What the producer wrote at creation: enough to tell one lane from its successors."""

    name: str
    instance: str
    pid: int  # in the producer's own PID namespace
    pid_start_ticks: int
    pid_namespace: int  # inode of that namespace; 0 = unknown
    created_ns: int
    thread_id: int
    capacity: int  # 0 for a no-ring lane
    names_capacity: int
    overwrite: bool

    @property
    def has_ring(self) -> bool:
        return self.capacity > 0

    def in_pid_namespace(self, pid_namespace: int) -> bool:
        """Whether ``pid`` means the same process to a reader in ``pid_namespace``."""
        return self.pid_namespace != 0 and self.pid_namespace == pid_namespace

    def producer_alive(self, lock_held: bool, same_pid_namespace: bool
                       ) -> tuple[bool, str | None]:
        """Whether the producer lives, and a note when its lock and its pid disagree.

        The lock (held from creation until the thread retires the lane or the process dies)
        decides across PID namespaces. In the reader's own namespace, the pid and its start
        time decide: a process that closed the lane's descriptor by mistake still lives, and
        a dead one whose descriptor leaked into a child process is still dead."""
        if not same_pid_namespace:
            return lock_held, None
        alive = is_alive(self.pid, self.pid_start_ticks)
        if lock_held == alive:
            return alive, None
        if alive:
            return True, (f"its lock is released but pid {self.pid} still runs (did it close "
                          "the lane's file descriptor?); kept while that process lives")
        return False, (f"pid {self.pid} is gone but its lock is still held (a child process "
                       "kept the descriptor?); counted as dead")


def check_name(name: str, prefix: str) -> str:
    """The instance token of a lane name; BadSegment if the name is not one of ours."""
    parsed = parse_lane_name(name, prefix)
    if parsed is None:
        raise BadSegment(f"name does not match {NAME_FORMAT}")
    return parsed[0]


def parse_header(name: str, prefix: str, raw: bytes, size: int) -> LaneHeader:
    """Check the name, the ``raw`` header bytes and the file's ``size``; return the header.

    A name that is not ours is refused at once, whatever the file holds, unless the header
    says it is a lane of an earlier release (whose names followed another format)."""
    magic = int.from_bytes(raw[L.OFF_MAGIC : L.OFF_MAGIC + 8], "little") if len(raw) >= 8 else 0
    version = int.from_bytes(raw[L.OFF_VERSION : L.OFF_VERSION + 4], "little") \
        if len(raw) >= L.OFF_VERSION + 4 else 0
    if magic == L.LANE_MAGIC and 0 < version < L.VERSION and len(raw) >= L.HEADER_SIZE:
        pid, pid_start = struct.unpack_from("<IxxxxQ", raw, L.OFF_PID)
        raise Outdated(f"layout version {version}, written by an earlier release of "
                       f"ai_analytics; restart the workers that use this namespace so that "
                       f"they write version {L.VERSION} (its events are not read)",
                       pid, pid_start)
    instance = check_name(name, prefix)
    if len(raw) < L.HEADER_SIZE:
        raise NotReady(f"only {size} bytes: header not written yet")
    if magic == 0:
        raise NotReady("no magic yet (being created, or abandoned during creation)")
    if magic != L.LANE_MAGIC:
        raise BadSegment(f"bad magic {raw[:8]!r}")
    (version, header_size, record_size, capacity, names_capacity, entry_size, pid, flags,
     pid_start, created_ns, thread_id) = L.HEADER_FIXED.unpack_from(raw, L.OFF_VERSION)
    if version != L.VERSION:
        raise BadSegment(f"layout version {version}, this release reads {L.VERSION}")
    if (header_size, record_size, entry_size) != (L.HEADER_SIZE, L.RECORD_SIZE, L.NAME_ENTRY_SIZE):
        raise BadSegment(f"sizes {header_size}/{record_size}/{entry_size} do not match the layout")
    if flags & L.FLAG_NO_RING:
        if capacity or names_capacity or flags & L.FLAG_OVERWRITE:
            raise BadSegment("a no-ring lane with a ring geometry or on_full flag")
    else:
        if not L.MIN_CAPACITY <= capacity <= L.MAX_CAPACITY:
            raise BadSegment(f"capacity {capacity} out of range")
        if not 1 <= names_capacity <= L.MAX_NAMES_CAPACITY:
            raise BadSegment(f"name table size {names_capacity} out of range")
    expected = L.lane_size(capacity, names_capacity)
    if size != expected:
        raise BadSegment(f"{size} bytes, expected {expected} for its geometry")
    if pid <= 0:
        raise BadSegment(f"bad pid {pid}")
    pid_namespace = int.from_bytes(
        raw[L.OFF_PID_NAMESPACE : L.OFF_PID_NAMESPACE + 8], "little")
    return LaneHeader(name, instance, pid, pid_start, pid_namespace, created_ns, thread_id,
                      capacity, names_capacity, bool(flags & L.FLAG_OVERWRITE))


def process_text(visible_pid: int | None, worker_pid: int, pid_namespace: int,
                 same_pid_namespace: bool) -> str:
    """A lane's process as a reader can name it: the pid in the reader's PID namespace,
    and the worker's own pid and namespace where those differ."""
    if same_pid_namespace:
        return f"pid {worker_pid}"
    theirs = f"pid {worker_pid} in PID namespace {pid_namespace or 'unknown'}"
    if visible_pid is None:
        return f"{theirs} (not visible here)"
    return f"pid {visible_pid} ({theirs})"
