"""The set of lanes of one namespace: discovery, liveness, accounting and reclaim.

Every record a producer publishes ends in exactly one per-lane counter: ``received``,
``invalid``, ``overwritten`` or ``lost_on_restart`` (drained by a daemon that died before
saving it); events refused at a full lane are the producer's ``dropped``. A lane whose
producer is gone (thread ended, or process dead: pid and start time checked) is drained to
the end, folded into the namespace totals, and unlinked only after a state file that
records the fold has been written, so a crash at any point neither loses nor double-counts it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Iterator

from ai_analytics.client._proc import is_alive
from ai_analytics.client._segments import SHM_DIR, lane_prefix

from .lane_reader import BadSegment, LaneReader, NotReady

log = logging.getLogger("ai_analytics.daemon")

# How long a segment may stay half-made (no magic yet) before it is reported as garbage.
CREATION_GRACE_SECONDS = 5.0
# A half-made segment younger than this is being finished right now: look again very soon.
SETTLE_SECONDS = 0.1


@dataclasses.dataclass
class Outcomes:
    """Where events ended. Their sum is every emit call made in the namespace."""

    received: int = 0
    dropped: int = 0
    overwritten: int = 0
    invalid: int = 0
    lost_on_restart: int = 0
    pending: int = 0

    def add(self, other: Outcomes) -> None:
        for field in dataclasses.fields(self):
            setattr(self, field.name, getattr(self, field.name) + getattr(other, field.name))

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Outcomes:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: int(v) for k, v in data.items() if k in names})  # type: ignore[call-overload]


@dataclasses.dataclass
class SavedLane:
    """A lane as the last state file saw it: the baseline for counting a restart's gap."""

    tail: int = 0
    dropped: int = 0
    overwritten: int = 0
    invalid: int = 0
    received: int = 0
    lost_on_restart: int = 0


class TrackedLane:
    """A lane being drained, with the daemon's counters for it."""

    def __init__(self, reader: LaneReader, saved: SavedLane) -> None:
        self.reader = reader
        self.ident = reader.identity
        self.state = "live"  # live → retired | dead → (drained) finished
        self.received = saved.received
        # Shared memory holds the truth for these two (the daemon writes them after the tail).
        self.overwritten = reader.shared_overwritten()
        self.invalid = reader.shared_invalid()
        # Whatever an earlier daemon drained past its last saved state is counted, not lost.
        gap = (reader.tail - saved.tail) - (self.overwritten - saved.overwritten)
        gap -= self.invalid - saved.invalid
        self.lost_on_restart = saved.lost_on_restart + max(0, gap)
        self.rate = 0.0  # records/s, smoothed: decides how soon the drain loop wakes
        self.attached = self.last_drain = time.monotonic()
        self.drained_since = 0
        self.models_seen: set[int] = set()  # name ids of the models it emitted for

    def outcomes(self) -> Outcomes:
        return Outcomes(
            received=self.received, dropped=self.reader.dropped(), overwritten=self.overwritten,
            invalid=self.invalid, lost_on_restart=self.lost_on_restart,
            pending=self.reader.pending(),
        )

    def saved(self) -> dict[str, object]:
        """What a state file keeps of this lane."""
        return {
            "name": self.ident.name, "created_ns": self.ident.created_ns,
            "tail": self.reader.tail, "dropped": self.reader.dropped(),
            "overwritten": self.overwritten, "invalid": self.invalid,
            "received": self.received, "lost_on_restart": self.lost_on_restart,
        }

    def status(self) -> dict[str, object]:
        head = self.reader.head()
        cap = self.ident.capacity
        unread = max(0, head - self.reader.tail)
        return {
            "name": self.ident.name, "pid": self.ident.pid, "thread_id": self.ident.thread_id,
            "state": self.state, "capacity": cap, "on_full": "overwrite" if self.ident.overwrite
            else "drop", "fill": round(min(unread, cap) / cap, 4), "head": head,
            "tail": self.reader.tail, **self.outcomes().as_dict(),
        }


class LaneSet:
    """All lanes of a namespace that this daemon drains."""

    def __init__(
        self, namespace: str, trusted_uids: frozenset[int], max_lanes: int,
        saved_lanes: dict[tuple[str, int], SavedLane],
        folded_unlinked: set[tuple[str, int]], folded: Outcomes, folded_count: int,
    ) -> None:
        self.prefix = lane_prefix(namespace)
        self.trusted_uids = trusted_uids
        self.max_lanes = max_lanes
        self.lanes: dict[str, TrackedLane] = {}
        self.saved = dict(saved_lanes)
        # Lanes folded into the totals by a state file but perhaps not yet unlinked.
        self.folded_keys = set(folded_unlinked)
        self.folded = folded
        self.folded_count = folded_count
        self.finished: list[TrackedLane] = []
        self.rejected: dict[str, tuple[int, int]] = {}
        # Folded (counted) lanes we could not unlink (e.g. no right to in a sticky /dev/shm):
        # name -> (inode, key). Never attached again, listed in every state file.
        self.retained: dict[str, tuple[int, tuple[str, int]]] = {}
        self.unready_since: dict[str, float] = {}
        self.waiting = 0
        self._cap_logged = False
        self._first_scan = True

    def __iter__(self) -> Iterator[TrackedLane]:
        return iter(self.lanes.values())

    def __len__(self) -> int:
        return len(self.lanes)

    # -- discovery -------------------------------------------------------------------------
    def settling(self, now: float) -> bool:
        """Whether a segment seen half-made is young enough to be finished any moment."""
        return any(now - first < SETTLE_SECONDS for first in self.unready_since.values())

    def scan(self) -> None:
        """Attach new segments, notice producers that are gone."""
        try:
            names = [n for n in os.listdir(SHM_DIR) if n.startswith(self.prefix)]
        except OSError as exc:
            log.error("cannot list %s: %s", SHM_DIR, exc)
            names = []
        self.waiting = 0
        finished = {lane.ident.name for lane in self.finished}  # folded, awaiting unlink
        for name in names:
            if name not in self.lanes and name not in finished:
                self._consider(name)
        for lane in self.lanes.values():
            if lane.state == "live":
                if lane.reader.retired():
                    lane.state = "retired"
                elif not is_alive(lane.ident.pid, lane.ident.pid_start_ticks):
                    lane.state = "dead"
        if self._first_scan:
            self._first_scan = False
            self._fold_vanished()

    def _consider(self, name: str) -> None:
        path = os.path.join(SHM_DIR, name)
        try:
            info = os.stat(path, follow_symlinks=False)
        except OSError:
            return
        if self.rejected.get(name) == (info.st_ino, info.st_mtime_ns):
            return
        if name in self.retained and self.retained[name][0] == info.st_ino:
            return
        if len(self.lanes) >= self.max_lanes:
            self.waiting += 1
            if not self._cap_logged:
                self._cap_logged = True
                log.warning("max_lanes (%d) reached: new lanes wait until others are "
                            "reclaimed (their events stay counted in shared memory)",
                            self.max_lanes)
            return
        try:
            _check_name(name, self.prefix)
            pid_text = name[len(self.prefix) :].split(".")[0]
            # Asked before the segment is read: a creator gone by then can no longer finish
            # it, so "half-made" is final. Asked after, the creator might have finished the
            # lane, emitted into it and died in between, and a whole lane would be removed.
            creator_alive = is_alive(int(pid_text), 0)
            reader = LaneReader(path, self.trusted_uids)
            if str(reader.identity.pid) != pid_text:
                reader.close()
                raise BadSegment("pid in the header does not match the name")
        except NotReady as exc:
            if not creator_alive:
                self._remove_half_made(name, info)
                return
            first = self.unready_since.setdefault(name, time.monotonic())
            if time.monotonic() - first < CREATION_GRACE_SECONDS:
                return
            self._reject(name, info, f"still incomplete after {CREATION_GRACE_SECONDS:g} s ({exc})")
            return
        except BadSegment as exc:
            self._reject(name, info, str(exc))
            return
        except OSError as exc:
            self._reject(name, info, f"cannot open: {exc}")
            return
        self.unready_since.pop(name, None)
        key = (name, reader.identity.created_ns)
        if key in self.folded_keys:  # counted already; a crash came before its unlink
            self.folded_keys.discard(key)
            self._unlink_or_retain(reader, key)
            return
        lane = TrackedLane(reader, self.saved.pop(key, SavedLane()))
        self.lanes[name] = lane
        log.info("attached lane %s (pid %d, capacity %d)", name, lane.ident.pid,
                 lane.ident.capacity)

    def _remove_half_made(self, name: str, info: os.stat_result) -> None:
        """Its producer died while creating it (killed before the magic): nobody will finish
        it, and no event was ever published in it (emit writes only to a whole lane)."""
        self.unready_since.pop(name, None)
        path = os.path.join(SHM_DIR, name)
        try:
            if os.stat(path, follow_symlinks=False).st_ino == info.st_ino:
                os.unlink(path)
        except FileNotFoundError:
            return
        except OSError as exc:
            self._reject(name, info, f"half-made by a dead process, cannot remove it: {exc}")
            return
        log.info("removed segment %s: its process died before the lane was complete", name)

    def _reject(self, name: str, info: os.stat_result, reason: str) -> None:
        self.unready_since.pop(name, None)
        self.rejected[name] = (info.st_ino, info.st_mtime_ns)
        log.warning("ignoring segment %s: %s", name, reason)

    def _fold_vanished(self) -> None:
        """Lanes the last state file knew that are gone from shared memory."""
        for (name, _created), saved in self.saved.items():
            log.warning("lane %s from the last state is gone from %s; keeping its counts",
                        name, SHM_DIR)
            self.folded.add(Outcomes(received=saved.received, dropped=saved.dropped,
                                     overwritten=saved.overwritten,
                                     invalid=saved.invalid,
                                     lost_on_restart=saved.lost_on_restart))
            self.folded_count += 1
        self.saved.clear()
        self.folded_keys.clear()

    # -- reclaim ---------------------------------------------------------------------------
    def finish_drained(self) -> list[TrackedLane]:
        """Fold lanes whose producer is gone and which are empty; unlink after the next save.
        Returns the lanes folded now."""
        folded = []
        for name, lane in list(self.lanes.items()):
            if lane.state != "live" and lane.reader.pending() == 0:
                outcome = lane.outcomes()
                self.folded.add(outcome)
                self.folded_count += 1
                self.finished.append(lane)
                folded.append(lane)
                del self.lanes[name]
                log.info("reclaimed lane %s (%s): received %d, dropped %d", name, lane.state,
                         outcome.received, outcome.dropped)
        return folded

    def unlink_finished(self) -> None:
        """Called once a state file that includes the folded counts is on disk."""
        for lane in self.finished:
            self._unlink_or_retain(lane.reader, (lane.ident.name, lane.ident.created_ns))
        self.finished.clear()

    def _unlink_or_retain(self, reader: LaneReader, key: tuple[str, int]) -> None:
        """Remove a counted lane; if that fails, remember it so it is never counted again."""
        try:
            reader.unlink()
        except OSError as exc:
            log.warning("cannot unlink %s (%s); it is counted and will be ignored",
                        reader.path, exc)
            self.retained[key[0]] = (reader.inode[1], key)
        reader.close()

    def close(self) -> None:
        for lane in self.lanes.values():
            lane.reader.close()
        self.lanes.clear()

    # -- accounting ------------------------------------------------------------------------
    def totals(self) -> Outcomes:
        total = Outcomes()
        total.add(self.folded)
        for lane in self.lanes.values():
            total.add(lane.outcomes())
        return total

    def saved_state(self) -> dict[str, object]:
        return {
            "lanes": [lane.saved() for lane in self.lanes.values()],
            "folded": self.folded.as_dict(),
            "folded_count": self.folded_count,
            "folded_unlinked": [[lane.ident.name, lane.ident.created_ns] for lane in self.finished]
            + [list(key) for _inode, key in self.retained.values()],
        }


def _check_name(name: str, prefix: str) -> None:
    rest = name[len(prefix) :].split(".")
    if len(rest) != 2 or not all(part.isascii() and part.isdigit() for part in rest):
        raise BadSegment("name does not match <namespace>.lane.<pid>.<serial>")
