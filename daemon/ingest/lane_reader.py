"""The daemon's side of one lane: attach and validate a segment, read names, drain records.

Nothing in a segment is trusted: the file's owner and mode are checked before mapping, every
header field is checked against the layout, and every index read from shared memory is
bounded before use. See docs/ring-format.md for the protocol this implements.
"""

from __future__ import annotations

import dataclasses
import mmap
import os
import stat

import numpy as np

from ai_analytics.client import _layout as L
from ai_analytics.client._compiled import extension
from ai_analytics.client._segments import fd_lock_held
from ai_analytics.core.lane_header import BadSegment, LaneHeader, NotReady, parse_header
from ai_analytics.daemon.ingest.records import RECORD_DTYPE, name_slots

_RAW_RECORD = np.dtype((np.void, L.RECORD_SIZE))
_U64_MASK = (1 << 64) - 1
# The head read with acquire ordering: the records read after it are at least as new as it
# says, on ARM64 too. Without the compiled module, the plain load through the "Q" view, which
# gives that order on x86-64 only (docs/ring-format.md, "Memory ordering").
# Where the client's compiled module is built, the shared counters that order the protocol
# are read with acquire and the tail stored with release ordering (docs/ring-format.md, "Memory
# ordering"): what ARM64 needs; on x86-64 the plain accesses below are already enough.
_load_acquire = extension.load_acquire_u64 if extension is not None else None
_store_release = extension.store_release_u64 if extension is not None else None

__all__ = ["BadSegment", "Drained", "LaneReader", "NotReady"]


@dataclasses.dataclass
class Drained:
    """One read of a lane: records copied out, and the slots lost to lapping before it."""

    records: np.ndarray
    first_index: int
    lapped: int


class LaneReader:
    """A mapped, validated lane segment, and a descriptor of our own on it: probing the
    producer's lock through it never counts as holding it."""

    def __init__(self, path: str, prefix: str, trusted_uids: frozenset[int]) -> None:
        self.path = path
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            info = os.fstat(fd)
            _check_file(info, trusted_uids)
            head = os.pread(fd, L.HEADER_SIZE, 0)
            self.identity: LaneHeader = parse_header(os.path.basename(path), prefix, head,
                                                     info.st_size)
            self.inode = (info.st_dev, info.st_ino)
            self.uid = info.st_uid
            self.mm = mmap.mmap(fd, info.st_size, flags=mmap.MAP_SHARED)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        ident = self.identity
        self.q = memoryview(self.mm).cast("B").cast("Q")
        # Records as opaque 64-byte items: copying those is one memcpy, where copying the
        # structured dtype (which has gaps) goes field by field, 20x slower.
        self.ring = np.frombuffer(
            self.mm, dtype=_RAW_RECORD, count=ident.capacity,
            offset=L.records_offset(ident.names_capacity),
        )
        self.tail = int(self.q[L.Q_TAIL])
        self.names: list[str | None] = []  # index i holds name id i + 1; None = unusable
        # Per name slot (see records.name_slots): usable? and the daemon-wide series id.
        self.names_ok = np.zeros(ident.names_capacity + 3, dtype=bool)
        self.names_ok[0] = self.names_ok[ident.names_capacity + 1] = True
        self.global_ids = np.zeros(ident.names_capacity + 3, dtype=np.int64)

    def producer_holds_lock(self) -> bool:
        """Whether the producer's lock on the lane is still held: the kernel drops it when
        the last descriptor of the producer's goes (thread retired, process dead)."""
        return fd_lock_held(self.fd)

    # -- shared counters -------------------------------------------------------------------
    def head(self) -> int:
        """Records published; a no-ring lane publishes none, whatever its header says."""
        if not self.identity.has_ring:
            return 0
        if _load_acquire is not None:
            return _load_acquire(self.mm, L.OFF_HEAD)
        return int(self.q[L.Q_HEAD])

    def dropped(self) -> int:
        return int(self.q[L.Q_DROPPED])

    def retired(self) -> bool:
        return self.q[L.Q_RETIRED] != 0

    def shared_overwritten(self) -> int:
        return int(self.q[L.Q_OVERWRITTEN])

    def shared_invalid(self) -> int:
        return int(self.q[L.Q_INVALID])

    def pending(self) -> int:
        return max(0, self.head() - self.tail)

    # -- names -----------------------------------------------------------------------------
    def new_names(self) -> list[tuple[int, str | None]]:
        """Read entries published since the last call: [(name id, text or None if unusable)]."""
        published = (_load_acquire(self.mm, L.OFF_NAMES_COUNT) if _load_acquire is not None
                     else int(self.q[L.Q_NAMES_COUNT]))
        count = min(published, self.identity.names_capacity)
        found = []
        for index in range(len(self.names), count):
            offset = L.HEADER_SIZE + index * L.NAME_ENTRY_SIZE
            size = self.mm[offset]
            text: str | None = None
            if 1 <= size <= L.MAX_NAME_BYTES:
                try:
                    text = self.mm[offset + 1 : offset + 1 + size].decode("utf-8")
                except UnicodeDecodeError:
                    text = None
                if text is not None and not text.isprintable():
                    text = None
            self.names.append(text)
            self.names_ok[index + 1] = text is not None
            found.append((index + 1, text))
        return found

    # -- records ---------------------------------------------------------------------------
    def read(self, limit: int) -> Drained | None:
        """Copy up to ``limit`` unread records out of the ring; None if there are none.

        The tail is not advanced here: the caller commits after it has counted the batch.
        """
        cap = self.identity.capacity
        head = self.head()
        tail = self.tail
        if head <= tail:
            return None
        start = max(tail, head - cap)  # anything older is gone for sure
        end = min(head, start + limit)
        first = start % cap
        count = end - start
        if first + count <= cap:
            raw = self.ring[first : first + count].copy()
        else:
            raw = np.concatenate((self.ring[first:], self.ring[: first + count - cap]))
        records = raw.view(RECORD_DTYPE)
        if self.identity.overwrite:
            # The producer may be writing slot `head` (of the newest head seen) right now,
            # which aliases index head - cap: trust only the capacity - 1 records behind it.
            newest = max(head, self.head())
            trusted = max(start, newest - cap + 1)
            if trusted > start:
                records = records[min(trusted - start, count) :]
                start = min(trusted, end)
        return Drained(records, start, start - tail)

    def oldest_unread_ns(self) -> int:
        """The producer's timestamp of the oldest unread record (0: none, or unknown)."""
        cap = self.identity.capacity
        head, tail = self.head(), self.tail
        if head <= tail:
            return 0
        index = max(tail, head - cap) % cap
        return int(self.ring[index : index + 1].view(RECORD_DTYPE)["ts_ns"][0])

    def commit(self, new_tail: int, overwritten: int, invalid: int) -> None:
        """Publish the new tail, then the daemon's counters (in that order: see docs)."""
        self.tail = new_tail
        if _store_release is not None:  # the records' reads are done before the slot is freed
            _store_release(self.mm, L.OFF_TAIL, new_tail)
        else:
            self.q[L.Q_TAIL] = new_tail
        # A writer that sets its counters near 2**64 can push these past 64 bits: store them
        # as the wrapping u64 counts they are rather than fail the drain loop.
        self.q[L.Q_OVERWRITTEN] = overwritten & _U64_MASK
        self.q[L.Q_INVALID] = invalid & _U64_MASK
        self.q[L.Q_CONSUMER_PID] = os.getpid()

    def slots(self, records: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cap = self.identity.names_capacity
        return name_slots(records["op_id"], cap), name_slots(records["model_id"], cap)

    def close(self) -> None:
        self.ring = None  # type: ignore[assignment]
        self.q.release()
        self.mm.close()
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)

    def still_linked(self) -> bool:
        """True while our segment is still the file at its path (not replaced or unlinked)."""
        try:
            info = os.stat(self.path, follow_symlinks=False)
        except OSError:
            return False
        return (info.st_dev, info.st_ino) == self.inode

    def unlink(self) -> None:
        """Remove the segment, but only if the path still names the file we mapped."""
        if self.still_linked():
            os.unlink(self.path)


def _check_file(info: os.stat_result, trusted_uids: frozenset[int]) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise BadSegment("not a regular file")
    if info.st_uid not in trusted_uids:
        raise BadSegment(f"owned by uid {info.st_uid}, which is not trusted")
    if info.st_mode & stat.S_IWOTH:
        raise BadSegment(f"world-writable (mode {stat.S_IMODE(info.st_mode):o})")
    if info.st_size < L.HEADER_SIZE:
        raise NotReady(f"only {info.st_size} bytes so far")
