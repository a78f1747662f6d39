"""The set of lanes of one namespace: discovery, liveness, accounting and reclaim.

Every record a producer publishes ends in exactly one per-lane counter: ``received``,
``invalid``, ``overwritten`` or ``lost_on_restart`` (drained by a daemon that died before
saving it); events refused at a full lane are the producer's ``dropped``, and those refused
by a thread that could not get a whole lane (the ``dropped`` of its no-ring lane) are
``no_lane``.

A lane's producer is alive while it holds its lock on the lane file (``flock``: the kernel
drops it when the thread retires the lane or the process dies, whatever PID namespace either
side is in; ``LaneHeader.producer_alive`` has the details). A lane whose producer is gone
is drained to the end, folded into the namespace totals, and unlinked only after a state
file that records the fold has been written, so a crash at any point neither loses nor
double-counts it.
"""

from __future__ import annotations

import dataclasses
import fcntl
import logging
import math
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from ai_analytics.client._lane import still_named
from ai_analytics.client._proc import is_alive
from ai_analytics.client._segments import lane_prefix, parse_lane_name, pid_namespace
from ai_analytics.core.config import Config
from ai_analytics.core.lane_header import BadSegment, NotReady, Outdated, process_text
from ai_analytics.core.outcomes import Outcomes
from ai_analytics.core.proc_locks import flock_holders
from ai_analytics.daemon.ingest.lane_reader import LaneReader

log = logging.getLogger("ai_analytics.daemon")

# How long a segment may stay half-made (no magic yet) before it is reported as garbage.
CREATION_GRACE_SECONDS = 5.0
# How full a lane may get, at its observed rate, before the drain loop wakes to drain it.
WAKE_FILL = 0.5
# The same while a snapshot is being made (a tenth of the time): passes then run slower (the
# page faults that follow its fork, the GIL shared with the snapshot thread's steps), so the
# loop starts them earlier. At 250,000 events/s per lane over 500 series this took the drops
# of a 60 s run from 4,279 to 0, at the same CPU (one run each, bench/endtoend.py).
SNAPSHOT_WAKE_FILL = 0.3
# A half-made segment younger than this is being finished right now: look again very soon.
SETTLE_SECONDS = 0.1


@dataclasses.dataclass
class SavedLane:
    """A lane as the last state file saw it: the baseline for counting a restart's gap."""

    tail: int = 0
    dropped: int = 0
    overwritten: int = 0
    invalid: int = 0
    received: int = 0
    lost_on_restart: int = 0
    no_lane: int = 0
    uid: int = 0

    @classmethod
    def from_dict(cls, row: Mapping[str, object]) -> SavedLane:
        """From a state file's row; fields an earlier release did not write are 0."""
        return cls(**{f.name: int(row.get(f.name, 0)) for f in dataclasses.fields(cls)})  # type: ignore[call-overload]

    def outcomes(self) -> Outcomes:
        return Outcomes(received=self.received, dropped=self.dropped,
                        overwritten=self.overwritten, invalid=self.invalid,
                        lost_on_restart=self.lost_on_restart, no_lane=self.no_lane)


class TrackedLane:
    """A lane being drained, with the daemon's counters for it."""

    def __init__(self, reader: LaneReader, saved: SavedLane, visible_pid: int | None,
                 same_pid_namespace: bool) -> None:
        self.reader = reader
        self.ident = reader.identity
        self.uid = reader.uid
        # The producer's pid as this daemon sees it (None: not visible from here), and
        # whether the header's pid and start time can be checked in /proc here.
        self.visible_pid = visible_pid
        self.same_pid_namespace = same_pid_namespace
        self.lock_noted = False
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
        dropped = self.reader.dropped()
        ring = self.ident.has_ring
        return Outcomes(
            received=self.received, dropped=dropped if ring else 0,
            overwritten=self.overwritten, invalid=self.invalid,
            lost_on_restart=self.lost_on_restart, pending=self.reader.pending(),
            no_lane=0 if ring else dropped,
        )

    def producer_alive(self) -> tuple[bool, str | None]:
        """Whether the producer lives (``LaneHeader.producer_alive``)."""
        return self.ident.producer_alive(self.reader.producer_holds_lock(),
                                         self.same_pid_namespace)

    def process(self) -> str:
        return process_text(self.visible_pid, self.ident.pid, self.ident.pid_namespace,
                            self.same_pid_namespace)

    def saved(self) -> dict[str, object]:
        """What a state file keeps of this lane."""
        out = self.outcomes()
        return {
            "name": self.ident.name, "created_ns": self.ident.created_ns,
            "tail": self.reader.tail, "dropped": out.dropped, "no_lane": out.no_lane,
            "overwritten": self.overwritten, "invalid": self.invalid,
            "received": self.received, "lost_on_restart": self.lost_on_restart,
            "uid": self.uid,
        }

    def status(self) -> dict[str, object]:
        head = self.reader.head()
        cap = self.ident.capacity
        unread = max(0, head - self.reader.tail)
        return {
            "name": self.ident.name, "process": self.process(), "pid": self.visible_pid,
            "worker_pid": self.ident.pid,
            "pid_namespace": self.ident.pid_namespace,
            "same_pid_namespace": self.same_pid_namespace, "uid": self.uid,
            "thread_id": self.ident.thread_id, "state": self.state, "ring": cap > 0,
            "capacity": cap, "on_full": "overwrite" if self.ident.overwrite else "drop",
            "fill": round(min(unread, cap) / cap, 4) if cap else 0.0, "head": head,
            "tail": self.reader.tail, **self.outcomes().as_dict(),
        }


class LaneSet:
    """All lanes of a namespace that this daemon drains."""

    def __init__(self, namespace: str, directory: str, trusted_uids: frozenset[int],
                 max_lanes: int) -> None:
        self.prefix = lane_prefix(namespace)
        self.directory = directory
        self.pid_namespace = pid_namespace()
        self.trusted_uids = trusted_uids
        self.max_lanes = max_lanes
        self.lanes: dict[str, TrackedLane] = {}
        # What the last state file counted of each lane (name, created_ns): the baseline
        # from which a lane drained past that state is counted, not lost.
        self.saved: dict[tuple[str, int], SavedLane] = {}
        # Lanes folded into the totals by a state file but perhaps not yet unlinked.
        self.folded_keys: set[tuple[str, int]] = set()
        self.folded = Outcomes()
        self.folded_count = 0
        # The same folded totals by the uid that owned each lane: a lane can lie about its
        # own events only, and this shows whose events are whose (docs/security.md).
        self.folded_by_uid: dict[int, Outcomes] = {}
        self.finished: list[TrackedLane] = []
        self.rejected: dict[str, tuple[int, int]] = {}
        # Lanes of an earlier layout version, refused: name -> (pid, start ticks) of their
        # producer, which held no lock, so only a pid in our namespace tells when it is gone.
        self.outdated: dict[str, tuple[int, int]] = {}
        self._outdated_unremovable: set[int] = set()  # pids whose lanes we may not remove
        # Folded (counted) lanes we could not unlink (e.g. no right to in a sticky /dev/shm):
        # name -> (inode, key). Never attached again, listed in every state file.
        self.retained: dict[str, tuple[int, tuple[str, int]]] = {}
        self.unready_since: dict[str, float] = {}
        self.waiting = 0
        # The most lanes attached at once (whole or not), since start: the room the segment
        # directory must have, which the segment_dir_full finding sizes it by.
        self.peak = 0
        self._holders: dict[tuple[int, int], int] | None = None
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
            names = [n for n in os.listdir(self.directory) if n.startswith(self.prefix)]
        except OSError as exc:
            log.error("cannot list %s: %s", self.directory, exc)
            names = []
        self.waiting = 0
        self._holders = None
        finished = {lane.ident.name for lane in self.finished}  # folded, awaiting unlink
        for name in names:
            if name not in self.lanes and name not in finished:
                self._consider(name)
        for lane in self.lanes.values():
            if lane.state != "live":
                continue
            if lane.reader.retired():
                lane.state = "retired"
                continue
            alive, note = lane.producer_alive()
            if note and not lane.lock_noted:
                lane.lock_noted = True
                log.warning("lane %s: %s", lane.ident.name, note)
            if not alive:
                lane.state = "dead"
        self.peak = max(self.peak, len(self.lanes) + self.waiting)
        self._forget_outdated()
        if self._first_scan:
            self._first_scan = False
            self._fold_vanished()

    def _forget_outdated(self) -> None:
        """Remove outdated lanes whose producer is gone (its events were never read: they
        were refused, and logged, when found); forget those removed by others."""
        for name, (pid, start_ticks) in list(self.outdated.items()):
            path = os.path.join(self.directory, name)
            if not os.path.lexists(path):
                del self.outdated[name]
            elif not is_alive(pid, start_ticks):
                try:
                    os.unlink(path)
                except OSError as exc:  # it stays counted; tried again at each scan
                    if pid not in self._outdated_unremovable:
                        self._outdated_unremovable.add(pid)
                        log.warning("cannot remove the outdated lane %s: %s", name, exc)
                    continue
                del self.outdated[name]
                log.info("removed outdated lane %s: pid %d, which wrote it, is gone", name, pid)

    def _consider(self, name: str) -> None:
        path = os.path.join(self.directory, name)
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
            reader = LaneReader(path, self.prefix, self.trusted_uids)
        except NotReady as exc:
            self._half_made(name, path, info, str(exc))
            return
        except Outdated as exc:
            self.outdated[name] = (exc.pid, exc.pid_start_ticks)
            self._reject(name, info, str(exc))
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
        ident = reader.identity
        same = ident.in_pid_namespace(self.pid_namespace)
        lane = TrackedLane(reader, self.saved.pop(key, SavedLane()),
                           ident.pid if same else self._holder(reader.inode), same)
        self.lanes[name] = lane
        shape = (f"capacity {ident.capacity}" if ident.has_ring
                 else "no ring: its thread could not get a whole lane")
        log.info("attached lane %s (%s, uid %d, %s)", name, lane.process(), reader.uid, shape)

    def _holder(self, inode: tuple[int, int]) -> int | None:
        """The pid, in our PID namespace, of the process holding a lane's lock (/proc/locks,
        read at most once per scan); None where that process is not visible from here."""
        if self._holders is None:
            self._holders = flock_holders()
        return self._holders.get(inode)

    def _half_made(self, name: str, path: str, info: os.stat_result, reason: str) -> None:
        """A segment without magic: being made (its creator holds its lock, or is about to
        take it: a creator is looked at only after SETTLE_SECONDS), or abandoned by a creator
        that died before finishing it."""
        now = time.monotonic()
        first = self.unready_since.setdefault(name, now)
        if (now - first >= SETTLE_SECONDS and parse_lane_name(name, self.prefix) is not None
                and _remove_if_abandoned(path)):
            self.unready_since.pop(name, None)
            log.info("removed segment %s: its process died before the lane was complete", name)
            return
        if now - first >= CREATION_GRACE_SECONDS:
            self._reject(name, info, f"still incomplete after {CREATION_GRACE_SECONDS:g} s "
                                     f"({reason})")

    def _reject(self, name: str, info: os.stat_result, reason: str) -> None:
        self.unready_since.pop(name, None)
        self.rejected[name] = (info.st_ino, info.st_mtime_ns)
        log.warning("ignoring segment %s: %s", name, reason)

    def _fold_vanished(self) -> None:
        """Lanes the last state file knew that are gone from shared memory."""
        for (name, _created), saved in self.saved.items():
            log.warning("lane %s from the last state is gone from %s; keeping its counts",
                        name, self.directory)
            self._fold(saved.uid, saved.outcomes())
        self.saved.clear()
        self.folded_keys.clear()

    def _fold(self, uid: int, outcome: Outcomes) -> None:
        self.folded.add(outcome)
        self.folded_by_uid.setdefault(uid, Outcomes()).add(outcome)
        self.folded_count += 1

    # -- reclaim ---------------------------------------------------------------------------
    def finish_drained(self) -> list[TrackedLane]:
        """Fold lanes whose producer is gone and which are empty; unlink after the next save.
        Returns the lanes folded now."""
        folded = []
        for name, lane in list(self.lanes.items()):
            if lane.state != "live" and lane.reader.pending() == 0:
                outcome = lane.outcomes()
                self._fold(lane.uid, outcome)
                self.finished.append(lane)
                folded.append(lane)
                del self.lanes[name]
                log.info("reclaimed lane %s (%s): received %d, dropped %d%s", name, lane.state,
                         outcome.received, outcome.dropped,
                         f", no_lane {outcome.no_lane}" if outcome.no_lane else "")
        return folded

    def unlink_finished(self, lanes: Iterable[TrackedLane] | None = None) -> None:
        """Called once a state file that includes the folded counts is on disk: unlink
        ``lanes`` (those that state file counts; every folded lane by default)."""
        done = list(self.finished if lanes is None else lanes)
        for lane in done:
            self._unlink_or_retain(lane.reader, (lane.ident.name, lane.ident.created_ns))
        gone = {id(lane) for lane in done}
        self.finished = [lane for lane in self.finished if id(lane) not in gone]

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

    def totals_by_uid(self) -> dict[int, Outcomes]:
        """``totals`` split by the uid that owns each lane."""
        by_uid = {uid: Outcomes(**outcome.as_dict()) for uid, outcome in
                  self.folded_by_uid.items()}
        for lane in self.lanes.values():
            by_uid.setdefault(lane.uid, Outcomes()).add(lane.outcomes())
        return dict(sorted(by_uid.items()))

    @classmethod
    def from_config(cls, config: Config, saved_state: Mapping[str, Any] | None = None
                    ) -> LaneSet:
        """The lanes of ``config``'s namespace, resuming the counts of ``saved_state`` (the
        "restore" section of a state file, as ``saved_state`` writes it). KeyError, TypeError
        or ValueError where that section is damaged."""
        lanes = cls(config.namespace, config.segment_dir, trusted_uids(config), config.max_lanes)
        if saved_state is not None:
            for row in saved_state["lanes"]:
                lanes.saved[(str(row["name"]), int(row["created_ns"]))] = SavedLane.from_dict(row)
            lanes.folded = Outcomes.from_dict(saved_state["folded"])
            lanes.folded_by_uid = {int(uid): Outcomes.from_dict(outcome) for uid, outcome
                                   in saved_state.get("folded_by_uid", {}).items()}
            lanes.folded_count = int(saved_state["folded_count"])
            lanes.folded_keys = {(str(n), int(c)) for n, c in saved_state["folded_unlinked"]}
        return lanes

    def apply_config(self, config: Config) -> None:
        """A reload: a lowered max_lanes keeps the lanes beyond it attached; changed
        trusted_uids get the segments refused so far looked at again."""
        self.max_lanes = config.max_lanes
        trusted = trusted_uids(config)
        if trusted != self.trusted_uids:
            self.trusted_uids = trusted
            self.rejected.clear()

    def fill_seconds(self) -> float:
        """The least time a lane takes to fill from empty at its observed rate (inf while
        no lane is being written)."""
        return min((lane.ident.capacity / lane.rate for lane in self.lanes.values()
                    if lane.rate > 0), default=math.inf)

    def time_to_drain(self, longest: float, shortest: float, fill: float = WAKE_FILL
                      ) -> float:
        """How long the drain loop may sleep, at most ``longest``: until the first lane,
        at its observed rate, would be ``fill`` full."""
        wait = longest
        now = time.monotonic()
        for lane in self.lanes.values():
            if lane.rate > 0:
                room = fill * lane.ident.capacity - lane.reader.pending()
                wait = min(wait, room / lane.rate)
            # A new thread may start at any rate, and its first milliseconds (creating the
            # lane) make a poor measure of it: a young lane is looked at again after its own
            # age (2 ms, 4 ms, 8 ms ...), which finds its rate before it can fill.
            wait = min(wait, max(now - lane.attached, shortest))
        return wait

    def saved_state(self) -> dict[str, object]:
        return {
            "lanes": [lane.saved() for lane in self.lanes.values()],
            "folded": self.folded.as_dict(),
            "folded_by_uid": {str(uid): outcome.as_dict()
                              for uid, outcome in sorted(self.folded_by_uid.items())},
            "folded_count": self.folded_count,
            "folded_unlinked": [[lane.ident.name, lane.ident.created_ns] for lane in self.finished]
            + [list(key) for _inode, key in self.retained.values()],
        }


def trusted_uids(config: Config) -> frozenset[int]:
    """Whose lane segments are drained: root, the daemon's own uid and ``trusted_uids``."""
    return frozenset({os.getuid(), 0, *config.trusted_uids})


def _remove_if_abandoned(path: str) -> bool:
    """Remove a half-made segment whose creator is gone, only while holding its lock
    ourselves: a creator that has opened but not yet locked it then fails to lock it and
    takes another name, and one that locked it first keeps it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # held: its creator is at work
        os.close(fd)
        return False
    try:
        if any(os.pread(fd, 8, 0)):
            return False  # finished after all: attached at the next look
        if not still_named(fd, path):
            return False
        os.unlink(path)
        return True
    except OSError as exc:
        log.warning("cannot remove the abandoned segment %s: %s", path, exc)
        return False
    finally:
        os.close(fd)  # and with it our lock
