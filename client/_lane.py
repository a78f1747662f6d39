"""A producer's lane: one single-producer/single-consumer ring per thread.

Creating a lane is the slow path (a few syscalls, once per thread); everything a call to
``emit`` touches afterwards is an attribute of ``Lane`` and one ``pack_into``. The byte layout
is in ``_layout``; the protocol is in docs/ring-format.md.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import logging
import mmap
import os
import stat
import threading
import time
import weakref

from . import _layout as L
from ._compiled import store_release_u64
from ._proc import start_ticks
from ._segments import (
    DAEMON_UID_ENV,
    SEGMENT_MODE,
    control_name,
    lane_name,
    new_instance,
    pid_namespace,
    segment_dir_from_env,
)

log = logging.getLogger("ai_analytics.client")

_serials = itertools.count()
_instance = new_instance()
NO_LIMIT = 1 << 63
# A new name is tried when the daemon removed the file as abandoned before our lock was on it
# (see _create_locked); more than a few in a row means something else is wrong.
_CREATE_ATTEMPTS = 64
# Lanes of this process that hold their file descriptor (and so its lock): a forked child
# closes the copies it inherits, or it would keep its parent's lanes alive after the parent.
_locked_lanes: weakref.WeakSet[Lane] = weakref.WeakSet()
_control_refusal_logged = False


class LaneGeometry:
    """What a new lane looks like: published by the daemon, or the documented defaults."""

    __slots__ = ("capacity", "names_capacity", "overwrite")

    def __init__(self, capacity: int, names_capacity: int, overwrite: bool) -> None:
        self.capacity = capacity
        self.names_capacity = names_capacity
        self.overwrite = overwrite


def read_geometry(namespace: str, directory: str | None = None) -> LaneGeometry:
    """Read the daemon's control segment; fall back to defaults when it is absent, bad, or
    written by a user this process does not trust (see ``_control_problem``)."""
    default = LaneGeometry(L.DEFAULT_CAPACITY, L.DEFAULT_NAMES_CAPACITY, False)
    path = os.path.join(directory or segment_dir_from_env(), control_name(namespace))
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return default
    try:
        problem = _control_problem(os.fstat(fd))
        raw = b"" if problem else os.read(fd, L.CONTROL_SIZE)
    except OSError:
        return default
    finally:
        os.close(fd)
    if problem:
        _log_control_refusal(path, problem)
        return default
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


def _control_problem(info: os.stat_result) -> str | None:
    """Why a control segment must not be followed, None if it may. Whoever writes it chooses
    every new lane's size and drop policy, so only root, this process's own uid and the uid
    in $AI_ANALYTICS_DAEMON_UID may, and nobody else may be able to change it."""
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file"
    trusted = {0, os.getuid()}
    daemon_uid = os.environ.get(DAEMON_UID_ENV, "")
    if daemon_uid.isascii() and daemon_uid.isdigit():
        trusted.add(int(daemon_uid))
    if info.st_uid not in trusted:
        named = f"${DAEMON_UID_ENV}={daemon_uid}" if daemon_uid else f"${DAEMON_UID_ENV} (unset)"
        return (f"owned by uid {info.st_uid}, which is not root, this process's uid or "
                f"{named}")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"writable by others (mode {stat.S_IMODE(info.st_mode):o})"
    return None


def _log_control_refusal(path: str, problem: str) -> None:
    global _control_refusal_logged
    if not _control_refusal_logged:
        _control_refusal_logged = True
        log.warning("ai_analytics: ignoring %s: %s; new lanes use the defaults", path, problem)


class Lane:
    """The calling thread's ring, mapped read-write; only that thread writes it.

    With ``ring=False`` it is a no-ring lane (the header alone): every event is refused and
    counted in its ``dropped``, which the daemon reports as ``no_lane``.
    """

    __slots__ = (
        "__weakref__",
        "base",
        "buf",
        "capacity",
        "dropped",
        "fd",
        "head",
        "interning",
        "limit",
        "models",
        "name",
        "names_capacity",
        "names_count",
        "next_retry",
        "no_ring",
        "ops",
        "pid",
        "q",
        "scratch",
        "tally",
    )

    def __init__(self, namespace: str, geometry: LaneGeometry, *, directory: str | None = None,
                 ring: bool = True) -> None:
        self.pid = os.getpid()
        self.no_ring = not ring
        self.capacity = geometry.capacity if ring else 0
        self.names_capacity = geometry.names_capacity if ring else 0
        directory = directory or segment_dir_from_env()
        size = L.lane_size(self.capacity, self.names_capacity)
        flags = (L.FLAG_OVERWRITE if geometry.overwrite and ring else 0) | (
            0 if ring else L.FLAG_NO_RING)
        for _ in range(_CREATE_ATTEMPTS):
            fd, self.name = _create_locked(directory, namespace, size)
            try:
                populate = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)  # no first-lap faults
                self.buf: mmap.mmap | bytearray = mmap.mmap(fd, size, flags=populate)
            except BaseException:
                _discard(fd, os.path.join(directory, self.name))
                raise
            L.HEADER_FIXED.pack_into(
                self.buf, L.OFF_VERSION, L.VERSION, L.HEADER_SIZE, L.RECORD_SIZE, self.capacity,
                self.names_capacity, L.NAME_ENTRY_SIZE, self.pid, flags, start_ticks(self.pid),
                time.time_ns(), threading.get_native_id(),
            )
            self.q = memoryview(self.buf).cast("B").cast("Q")
            self.q[L.Q_PID_NAMESPACE] = pid_namespace()
            # Magic last: until it is there, the daemon treats the segment as "not ready yet".
            publish(self.q, self.buf, L.OFF_MAGIC, L.LANE_MAGIC)
            if still_named(fd, os.path.join(directory, self.name)):
                break
            self.q.release()  # removed as abandoned before our lock: make another
            self.buf.close()
            os.close(fd)
        else:
            raise OSError(f"could not create a lane in {directory} in {_CREATE_ATTEMPTS} tries")
        self.fd = fd
        _locked_lanes.add(self)
        self.base = L.records_offset(self.names_capacity)
        self.dropped = 0
        if ring:
            self.head = 0
            self.limit = NO_LIMIT if geometry.overwrite else self.capacity
        else:  # every event takes the full path (head 1 >= limit 1) and is counted dropped
            self.head = self.limit = 1
        # Names already in the table, by the object the caller passed (str or enum member).
        self.ops: dict[object, int] = {}
        self.models: dict[object, int] = {"": 0}
        self.names_count = 0
        self.interning = False
        self.scratch = bytearray(L.RECORD_SIZE)
        self.next_retry = 0.0
        self.tally: list[int] | None = None

    def refresh_limit(self) -> None:
        """The cached tail says full: read the daemon's tail once (one shared read a lap)."""
        if not self.no_ring:
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
            # publish after the entry is whole
            publish(self.q, self.buf, L.OFF_NAMES_COUNT, self.names_count)
            return index + 1
        finally:
            self.interning = False

    def retire(self) -> None:
        """Tell the daemon this thread is gone (it drains the lane and unlinks it), then let
        go of the lock."""
        self.q[L.Q_RETIRED] = 1
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)

    def __del__(self, _getpid=os.getpid) -> None:
        # Runs when the owning thread ends (its thread-local dies). A forked child that drops
        # its parent's lane must not retire it: the parent still writes there.
        try:
            if _getpid() == self.pid:
                self.retire()
        # An exception in __del__ is only printed to stderr by the interpreter, in the middle
        # of the worker's output; a lane that fails to retire is seen as dead by the daemon.
        except Exception:  # noqa: S110
            pass


def publish(q: memoryview, buf: mmap.mmap | bytearray, offset: int, value: int) -> None:
    """Store ``value`` at ``offset`` after every store before it is visible: a plain aligned
    store on x86-64, the compiled release store elsewhere (docs/ring-format.md)."""
    if store_release_u64 is None:
        q[offset // 8] = value
    else:
        store_release_u64(buf, offset, value)


def _create_locked(directory: str, namespace: str, size: int) -> tuple[int, str]:
    """Create a fresh segment, lock it, reserve its pages; return its fd and name.

    Between ``open`` and ``flock`` the file exists unlocked, which to the daemon looks like a
    lane whose creator died before finishing it. The daemon removes such a file only while
    holding its lock itself, so either our ``flock`` fails (take another name) or the removal
    happened before it (the caller sees the name gone once the lane is made, and retries).
    """
    for _ in range(_CREATE_ATTEMPTS):
        name = lane_name(namespace, _instance, next(_serials))
        path = os.path.join(directory, name)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                         SEGMENT_MODE)
        except FileExistsError:  # 64 random bits make this all but impossible
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # the daemon is removing it as abandoned
            os.close(fd)
            continue
        try:
            os.fchmod(fd, SEGMENT_MODE)  # the umask must not strip the group bits
            # Reserve the pages now: on a full tmpfs this fails here with ENOSPC instead of
            # raising SIGBUS on some later store inside emit.
            os.posix_fallocate(fd, 0, size)
        except BaseException:
            _discard(fd, path)
            raise
        return fd, name
    raise FileExistsError(f"no free lane name in {directory} for namespace {namespace!r}")


def _discard(fd: int, path: str) -> None:
    """Remove a segment this process created and could not finish."""
    try:
        if still_named(fd, path):
            os.unlink(path)
    finally:
        os.close(fd)


def still_named(fd: int, path: str) -> bool:
    """Whether ``path`` is still the file open as ``fd``."""
    try:
        named, opened = os.stat(path, follow_symlinks=False), os.fstat(fd)
    except OSError:
        return False
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)


def after_fork_in_child() -> None:
    """A forked child gets a new instance token for its lanes, and closes the descriptors
    of its parent's lanes so that their locks go when the parent goes."""
    global _instance
    _instance = new_instance()
    for lane in list(_locked_lanes):
        fd, lane.fd = lane.fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)
    _locked_lanes.clear()
