"""A read-only look at a namespace's shared memory, with or without a daemon.

What ``ai-analytics lanes`` prints, and what ``ai-analytics status`` shows when no daemon
runs: every lane segment's header (docs/ring-format.md), the control segment and who holds
the namespace lock. Segments are read with ``os.pread`` on a read-only descriptor: never
mapped, never written, never unlinked, so looking cannot disturb a producer or the daemon.
Nothing read is trusted: a header is checked like ``lane_reader`` checks it (magic, version,
sizes, geometry, total size, pid against the name), and a segment that fails is listed as
unreadable with the reason instead of raising. Stdlib only.
"""

from __future__ import annotations

import dataclasses
import os
import stat
import struct

from ai_analytics.client import _layout as L
from ai_analytics.client._proc import is_alive
from ai_analytics.client._segments import SHM_DIR, control_name, lane_prefix, lock_held

from .tables import iso_utc

_COUNTERS = struct.Struct("<QQQQ")  # head, dropped, names_count, retired (offset 64)
_CONSUMER = struct.Struct("<QQQQ")  # tail, overwritten, invalid, consumer_pid (offset 128)
_MAX_NAMES_READ = 4096  # name entries decoded per lane at most (the rest are only counted)


@dataclasses.dataclass(frozen=True)
class LaneView:
    """One lane's header as read now; counts are the raw shared counters."""

    name: str
    pid: int
    pid_alive: bool
    thread_id: int
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
        return min(self.pending, self.capacity) / self.capacity

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
    daemon_pid: int | None = None
    daemon_alive: bool | None = None


@dataclasses.dataclass(frozen=True)
class LockView:
    """The namespace lock: held by a running daemon, and the pid it recorded."""

    present: bool
    held: bool
    holder_pid: int | None  # from /proc/locks, where visible
    recorded_pid: int | None  # what the daemon wrote into the file


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
            "producers_alive": len({lane.pid for lane in self.lanes if lane.pid_alive}),
            "retired": sum(lane.retired for lane in self.lanes),
            "pending": sum(lane.pending for lane in self.lanes),
            "dropped": sum(lane.dropped for lane in self.lanes),
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


def read_namespace(namespace: str, shm_dir: str = SHM_DIR) -> ShmView:
    """Everything the namespace has in shared memory right now (lanes sorted by pid, serial)."""
    prefix = lane_prefix(namespace)
    try:
        names = [n for n in os.listdir(shm_dir) if n.startswith(prefix)]
    except OSError as exc:
        return ShmView(namespace, shm_dir, [], [Unreadable(shm_dir, f"cannot list: {exc}")],
                       ControlView(False), LockView(False, False, None, None))
    lanes: list[LaneView] = []
    unreadable: list[Unreadable] = []
    for name in sorted(names, key=lambda n: _sort_key(n, prefix)):
        result = read_lane(os.path.join(shm_dir, name), prefix)
        if isinstance(result, LaneView):
            lanes.append(result)
        else:
            unreadable.append(result)
    return ShmView(namespace, shm_dir, lanes, unreadable,
                   read_control(os.path.join(shm_dir, control_name(namespace))),
                   read_lock(os.path.join(shm_dir, f"{namespace}.daemon.lock")))


def _sort_key(name: str, prefix: str) -> tuple[int, int, str]:
    parts = name[len(prefix) :].split(".")
    try:
        return int(parts[0]), int(parts[1]), name
    except (IndexError, ValueError):
        return 1 << 62, 0, name


def read_lane(path: str, prefix: str) -> LaneView | Unreadable:
    """One lane's header, or why it cannot be read as one."""
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
        problem = _check_header(name, prefix, raw, info.st_size)
        if problem:
            return Unreadable(name, problem)
        (_, _, _, capacity, names_capacity, _, pid, flags, start_ticks, created_ns,
         thread_id) = L.HEADER_FIXED.unpack_from(raw, L.OFF_VERSION)
        head, dropped, names_count, retired = _COUNTERS.unpack_from(raw, L.OFF_HEAD)
        tail, overwritten, invalid, consumer_pid = _CONSUMER.unpack_from(raw, L.OFF_TAIL)
        names = _read_names(fd, min(names_count, names_capacity, _MAX_NAMES_READ))
    except OSError as exc:
        return Unreadable(name, f"cannot read: {exc.strerror or exc}")
    finally:
        os.close(fd)
    return LaneView(
        name=name, pid=pid, pid_alive=is_alive(pid, start_ticks), thread_id=thread_id,
        capacity=capacity, on_full="overwrite" if flags & L.FLAG_OVERWRITE else "drop",
        head=head, tail=tail, dropped=dropped, overwritten=overwritten, invalid=invalid,
        names_count=names_count, names_capacity=names_capacity, names=names,
        retired=retired != 0, consumer_pid=consumer_pid, created_ns=created_ns,
        size_bytes=info.st_size,
    )


def _check_header(name: str, prefix: str, raw: bytes, size: int) -> str | None:
    """The first reason ``raw`` is not a usable lane header, None if it is one."""
    rest = name[len(prefix) :].split(".")
    if len(rest) != 2 or not all(part.isdigit() for part in rest):
        return "name does not match <namespace>.lane.<pid>.<serial>"
    if len(raw) < L.HEADER_SIZE:
        return f"only {size} bytes: header not written yet"
    magic = raw[L.OFF_MAGIC : L.OFF_MAGIC + 8]
    if magic == bytes(8):
        return "no magic yet (being created, or abandoned during creation)"
    if int.from_bytes(magic, "little") != L.LANE_MAGIC:
        return f"bad magic {magic!r}"
    (version, header_size, record_size, capacity, names_capacity, entry_size, pid, _flags,
     _start, _created, _thread) = L.HEADER_FIXED.unpack_from(raw, L.OFF_VERSION)
    if version != L.VERSION:
        return f"layout version {version}, this tool reads {L.VERSION}"
    if (header_size, record_size, entry_size) != (L.HEADER_SIZE, L.RECORD_SIZE, L.NAME_ENTRY_SIZE):
        return f"sizes {header_size}/{record_size}/{entry_size} do not match the layout"
    if not L.MIN_CAPACITY <= capacity <= L.MAX_CAPACITY:
        return f"capacity {capacity} out of range"
    if not 1 <= names_capacity <= L.MAX_NAMES_CAPACITY:
        return f"name table size {names_capacity} out of range"
    expected = L.lane_size(capacity, names_capacity)
    if size != expected:
        return f"{size} bytes, expected {expected} for its geometry"
    if pid <= 0 or str(pid) != rest[0]:
        return f"pid {pid} in the header does not match the name"
    return None


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
        names_capacity, daemon_pid, daemon_pid > 0 and is_alive(daemon_pid, 0),
    )


def read_lock(path: str) -> LockView:
    """Who holds the namespace lock: /proc/locks first (passive), else a shared-lock probe."""
    try:
        info = os.stat(path, follow_symlinks=False)
    except OSError:
        return LockView(False, False, None, None)
    recorded: int | None = None
    try:
        with open(path, "rb") as f:
            text = f.read(32).decode("ascii", "replace").strip()
        recorded = int(text) if text.isdigit() else None
    except OSError:
        pass
    holder = lock_holder(info)
    return LockView(True, holder is not None or lock_held(path), holder, recorded)


def lock_holder(info: os.stat_result, locks_path: str = "/proc/locks") -> int | None:
    """The pid holding an exclusive flock on the file ``info`` describes, per /proc/locks
    (None when no such lock is listed, or the holder is outside our pid namespace)."""
    device = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
    try:
        with open(locks_path, encoding="ascii", errors="replace") as f:
            lines = f.readlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 3696 00:1a:12345 0 EOF"; waiters have "->" after the id.
        if len(fields) < 6 or fields[1] == "->" or fields[1] != "FLOCK" or fields[3] != "WRITE":
            continue
        if fields[5] == device and fields[4].isdigit() and int(fields[4]) > 0:
            return int(fields[4])
    return None
