"""A read-only look at a namespace's shared memory, with or without a daemon.

What ``ai-analytics lanes`` prints, and what ``ai-analytics status`` shows when no daemon
runs: every lane segment's header (docs/ring-format.md), the control segment and who holds
the namespace lock. Segments are read with ``os.pread`` on a read-only descriptor: never
mapped, never written, never unlinked, so looking cannot disturb a producer or the daemon
(whether a producer lives is asked with a shared-lock probe, released at once). Nothing read
is trusted: a header goes through the daemon's own parser (``lane_header``), and a segment
that fails is listed as unreadable with the reason instead of raising. Stdlib only.
"""

from __future__ import annotations

import dataclasses
import os
import stat
import struct

from ai_analytics.cli.tables import iso_utc
from ai_analytics.client import _layout as L
from ai_analytics.client._segments import (
    DEFAULT_SEGMENT_DIR,
    control_name,
    fd_lock_held,
    lane_prefix,
    parse_lane_name,
    pid_namespace,
)
from ai_analytics.core.lane_header import BadSegment, NotReady, parse_header
from ai_analytics.core.namespace_lock import LockView, read_lock
from ai_analytics.core.proc_locks import flock_holders

_COUNTERS = struct.Struct("<QQQQ")  # head, dropped, names_count, retired (offset 64)
_CONSUMER = struct.Struct("<QQQQ")  # tail, overwritten, invalid, consumer_pid (offset 128)
_MAX_NAMES_READ = 4096  # name entries decoded per lane at most (the rest are only counted)


@dataclasses.dataclass(frozen=True)
class LaneView:
    """One lane's header as read now; counts are the raw shared counters."""

    name: str
    pid: int | None  # the producer's pid in the reader's PID namespace; None: not visible
    worker_pid: int  # the producer's pid in its own PID namespace
    pid_namespace: int
    same_pid_namespace: bool
    alive: bool
    uid: int
    thread_id: int
    ring: bool
    capacity: int
    on_full: str
    head: int
    tail: int
    dropped: int
    overwritten: int
    invalid: int
    names_count: int
    names_capacity: int
    names: tuple[str, ...]
    retired: bool
    consumer_pid: int
    created_ns: int
    size_bytes: int

    @property
    def pending(self) -> int:
        """Published and not consumed yet (head - tail; 0 when the tail is ahead)."""
        return max(0, self.head - self.tail)

    @property
    def fill(self) -> float:
        return min(self.pending, self.capacity) / self.capacity if self.capacity else 0.0

    @property
    def lapped(self) -> int:
        """Overwrite lanes: records lapped since the last drain, not yet in ``overwritten``
        (the next daemon adds them on its first drain; see ring-format.md)."""
        if self.on_full != "overwrite":
            return 0
        return max(0, self.pending - (self.capacity - 1))

    @property
    def created(self) -> str:
        return iso_utc(self.created_ns / 1e9)

    def as_dict(self) -> dict[str, object]:
        fields = dataclasses.asdict(self)
        fields["names"] = list(self.names)
        fields.update(pending=self.pending, fill=round(self.fill, 4), lapped=self.lapped,
                      created=self.created)
        return fields


@dataclasses.dataclass(frozen=True)
class Unreadable:
    """A segment with the lane prefix that is not a lane we can read, and why."""

    name: str
    reason: str


@dataclasses.dataclass(frozen=True)
class ControlView:
    """The control segment: what new lanes are told to look like, and by which daemon."""

    present: bool
    error: str | None = None
    capacity: int | None = None
    on_full: str | None = None
    names_capacity: int | None = None
    daemon_pid: int | None = None  # in the daemon's own PID namespace
    owner_uid: int | None = None


@dataclasses.dataclass(frozen=True)
class ShmView:
    namespace: str
    shm_dir: str
    lanes: list[LaneView]
    unreadable: list[Unreadable]
    control: ControlView
    lock: LockView

    def totals(self) -> dict[str, int]:
        """Sums over the readable lanes."""
        return {
            "lanes": len(self.lanes),
            "producers_alive": len({_producer(lane) for lane in self.lanes if lane.alive}),
            "retired": sum(lane.retired for lane in self.lanes),
            "pending": sum(lane.pending for lane in self.lanes),
            "dropped": sum(lane.dropped for lane in self.lanes if lane.ring),
            "no_lane": sum(lane.dropped for lane in self.lanes if not lane.ring),
            "overwritten": sum(lane.overwritten + lane.lapped for lane in self.lanes),
            "invalid": sum(lane.invalid for lane in self.lanes),
            "published": sum(lane.head for lane in self.lanes),
            "unreadable": len(self.unreadable),
        }

    @property
    def empty(self) -> bool:
        return not self.lanes and not self.unreadable and not self.control.present

    def as_dict(self) -> dict[str, object]:
        return {
            "namespace": self.namespace,
            "shm_dir": self.shm_dir,
            "lock": dataclasses.asdict(self.lock),
            "control": dataclasses.asdict(self.control),
            "totals": self.totals(),
            "lanes": [lane.as_dict() for lane in self.lanes],
            "unreadable": [dataclasses.asdict(u) for u in self.unreadable],
        }


def read_namespace(namespace: str, shm_dir: str = DEFAULT_SEGMENT_DIR) -> ShmView:
    """Everything the namespace has in shared memory right now (lanes sorted by name)."""
    prefix = lane_prefix(namespace)
    try:
        names = [n for n in os.listdir(shm_dir) if n.startswith(prefix)]
    except OSError as exc:
        return ShmView(namespace, shm_dir, [], [Unreadable(shm_dir, f"cannot list: {exc}")],
                       ControlView(False), LockView(False, False, None, None))
    lanes: list[LaneView] = []
    unreadable: list[Unreadable] = []
    holders = flock_holders()
    own_namespace = pid_namespace()
    for name in sorted(names, key=lambda n: (parse_lane_name(n, prefix) is None, n)):
        result = read_lane(os.path.join(shm_dir, name), prefix, holders, own_namespace)
        if isinstance(result, LaneView):
            lanes.append(result)
        else:
            unreadable.append(result)
    return ShmView(namespace, shm_dir, lanes, unreadable,
                   read_control(os.path.join(shm_dir, control_name(namespace))),
                   read_lock(namespace, shm_dir))


def read_lane(path: str, prefix: str, holders: dict[tuple[int, int], int] | None = None,
              own_namespace: int | None = None) -> LaneView | Unreadable:
    """One lane's header, or why it cannot be read as one. ``holders`` (flock_holders) and
    ``own_namespace`` (pid_namespace) are looked up when not given."""
    name = os.path.basename(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        return Unreadable(name, f"cannot open: {exc.strerror or exc}")
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return Unreadable(name, "not a regular file")
        raw = os.pread(fd, L.HEADER_SIZE, 0)
        try:
            header = parse_header(name, prefix, raw, info.st_size)
        except (NotReady, BadSegment) as exc:
            return Unreadable(name, str(exc))
        head, dropped, names_count, retired = _COUNTERS.unpack_from(raw, L.OFF_HEAD)
        tail, overwritten, invalid, consumer_pid = _CONSUMER.unpack_from(raw, L.OFF_TAIL)
        names = _read_names(fd, min(names_count, header.names_capacity, _MAX_NAMES_READ))
        held = fd_lock_held(fd)
    except OSError as exc:
        return Unreadable(name, f"cannot read: {exc.strerror or exc}")
    finally:
        os.close(fd)
    same = header.in_pid_namespace(pid_namespace() if own_namespace is None else own_namespace)
    if same:
        visible: int | None = header.pid
    else:
        visible = (flock_holders() if holders is None else holders).get(
            (info.st_dev, info.st_ino))
    return LaneView(
        name=name, pid=visible, worker_pid=header.pid, pid_namespace=header.pid_namespace,
        same_pid_namespace=same, alive=header.producer_alive(held, same)[0], uid=info.st_uid,
        thread_id=header.thread_id, ring=header.has_ring, capacity=header.capacity,
        on_full="overwrite" if header.overwrite else "drop",
        head=head if header.has_ring else 0, tail=tail, dropped=dropped,
        overwritten=overwritten, invalid=invalid, names_count=names_count,
        names_capacity=header.names_capacity, names=names, retired=retired != 0,
        consumer_pid=consumer_pid, created_ns=header.created_ns, size_bytes=info.st_size,
    )


def _producer(lane: LaneView) -> tuple[int, int]:
    """Which process wrote a lane, as well as the header can say: (namespace, pid)."""
    return lane.pid_namespace, lane.worker_pid


def _read_names(fd: int, count: int) -> tuple[str, ...]:
    """The first ``count`` name-table entries as text ("?" for an unusable entry)."""
    if count <= 0:
        return ()
    raw = os.pread(fd, count * L.NAME_ENTRY_SIZE, L.HEADER_SIZE)
    names = []
    for index in range(len(raw) // L.NAME_ENTRY_SIZE):
        offset = index * L.NAME_ENTRY_SIZE
        length = raw[offset]
        text = "?"
        if 1 <= length <= L.MAX_NAME_BYTES:
            try:
                decoded = raw[offset + 1 : offset + 1 + length].decode("utf-8")
            except UnicodeDecodeError:
                decoded = ""
            if decoded.isprintable() and decoded:
                text = decoded
        names.append(text)
    return tuple(names)


def read_control(path: str) -> ControlView:
    """The control segment, validated like a producer validates it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return ControlView(False)
    except OSError as exc:
        return ControlView(True, f"cannot open: {exc.strerror or exc}")
    try:
        owner = os.fstat(fd).st_uid
        raw = os.pread(fd, L.CONTROL_SIZE, 0)
    except OSError as exc:
        return ControlView(True, f"cannot read: {exc.strerror or exc}")
    finally:
        os.close(fd)
    if len(raw) != L.CONTROL_SIZE:
        return ControlView(True, f"{len(raw)} bytes, expected {L.CONTROL_SIZE}")
    magic, version, capacity, flags, names_capacity, daemon_pid = L.CONTROL.unpack(raw)
    if magic != L.CONTROL_MAGIC:
        return ControlView(True, f"bad magic {raw[:8]!r}")
    if version != L.VERSION:
        return ControlView(True, f"layout version {version}, this tool reads {L.VERSION}")
    if not (L.MIN_CAPACITY <= capacity <= L.MAX_CAPACITY
            and 1 <= names_capacity <= L.MAX_NAMES_CAPACITY):
        return ControlView(True, f"geometry {capacity}/{names_capacity} out of range "
                                 "(producers use the defaults)")
    return ControlView(
        True, None, capacity, "overwrite" if flags & L.FLAG_OVERWRITE else "drop",
        names_capacity, daemon_pid, owner,
    )
