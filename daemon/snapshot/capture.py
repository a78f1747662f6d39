"""What a snapshot takes on the drain loop: the figures of the parts that the loop changes.

The loop owns the lanes, the statistics, the caches, the counter rates and the drainer, and
changes them without a lock. A snapshot document is built on the snapshot thread, so what it
needs of them is taken here, on the loop, into plain values that nobody changes afterwards:
the statistics as one ``StatsCapture`` (which closes the history interval), and the lanes'
statuses and counters, the caches and rates as fresh dicts and lists. Each costs O(lanes),
O(caches) or what ``Statistics.capture()`` costs, nothing per event.
"""

from __future__ import annotations

import collections
import dataclasses
import time
from collections.abc import Iterable

from ai_analytics.core.config import Config
from ai_analytics.daemon.ingest.lanes import TrackedLane
from ai_analytics.daemon.snapshot.sources import SnapshotSources
from ai_analytics.daemon.stats.statistics import StatsCapture


@dataclasses.dataclass(frozen=True)
class LaneModels:
    """Which models one lane emitted for, and whose process it is (for ``model_summary``)."""

    models: frozenset[int]  # daemon-wide name ids
    visible_pid: int | None  # None: its process is not visible from here
    producer: tuple[int, int]  # (PID namespace, pid) as the producer wrote them


@dataclasses.dataclass(frozen=True)
class Capture:
    """One snapshot's figures as of the moment the loop took them. Read-only by convention
    (the dicts and lists inside are this capture's own): the snapshot thread reads it while
    the loop goes on."""

    running: bool
    written_unix: float
    now: int  # the daemon's clock, whole seconds
    uptime_seconds: float
    started_unix: float
    config: Config
    stats: StatsCapture
    lanes: list[dict[str, object]]  # TrackedLane.status() of each lane
    lane_models: list[LaneModels]
    totals: dict[str, int]
    totals_by_uid: dict[str, dict[str, int]]
    lanes_summary: dict[str, int]
    peak_lanes: int
    drain_lag_seconds: float
    fill_seconds: float  # the least time a lane takes to fill at its rate (LaneSet.fill_seconds)
    caches: list[dict[str, object]]
    rates: dict[str, dict[str, float]]
    drain: dict[str, object]
    restore: dict[str, object]
    # The reclaimed lanes this capture's totals count, awaiting unlink: the loop unlinks them
    # once a state file written from this capture is on disk. Loop-only objects: the
    # snapshot thread never touches them.
    finished: tuple[TrackedLane, ...]


def take(sources: SnapshotSources, running: bool, snapshots_delayed: int = 0,
         close: bool = True) -> Capture:
    """Take a capture; on the loop's thread (or of a daemon that does not run). ``close``:
    close the statistics' history interval (a snapshot that is saved); otherwise it stays
    open and the capture's ``stats.interval()`` is empty (a document only looked at)."""
    now_unix = time.time()
    clock_now = sources.clock()
    stats = sources.stats.capture() if close else sources.stats.view()
    lane_set = sources.lanes
    lanes = list(lane_set)
    statuses = [lane.status() for lane in lanes]
    states = collections.Counter(lane.state for lane in lanes)
    drainer = sources.drainer
    uptime = max(1, int(clock_now) - int(sources.started) + 1)
    return Capture(
        running=running, written_unix=now_unix, now=int(clock_now),
        uptime_seconds=round(clock_now - sources.started, 3), started_unix=sources.started_unix,
        config=sources.config, stats=stats, lanes=statuses,
        lane_models=[LaneModels(frozenset(lane.models_seen), lane.visible_pid,
                                (lane.ident.pid_namespace, lane.ident.pid)) for lane in lanes],
        totals=lane_set.totals().as_dict(),
        totals_by_uid={str(uid): outcome.as_dict()
                       for uid, outcome in lane_set.totals_by_uid().items()},
        lanes_summary={
            "live": states["live"], "retired": states["retired"], "dead": states["dead"],
            "without_ring": sum(1 for lane in lanes
                                if lane.state == "live" and not lane.ident.has_ring),
            "reclaimed": lane_set.folded_count, "waiting": lane_set.waiting,
            "rejected_segments": len(lane_set.rejected), "outdated": len(lane_set.outdated),
        },
        peak_lanes=lane_set.peak,
        drain_lag_seconds=_drain_lag(lanes),
        fill_seconds=lane_set.fill_seconds(),
        caches=sources.caches.snapshot(int(clock_now), uptime),
        rates=sources.outcome_rates.rates(int(clock_now), uptime),
        drain={
            "batches": drainer.batches, "records": drainer.records,
            "last_batch": drainer.last_batch,
            "records_per_batch": round(drainer.records / drainer.batches, 1)
            if drainer.batches else None,
            "snapshots_delayed": snapshots_delayed,
        },
        restore=lane_set.saved_state(),
        finished=tuple(lane_set.finished),
    )


def _drain_lag(lanes: Iterable[TrackedLane]) -> float:
    """Age in seconds of the oldest record not drained yet (0 when every lane is empty)."""
    now_ns = time.monotonic_ns()
    oldest = [ts for ts in (lane.reader.oldest_unread_ns() for lane in lanes) if 0 < ts <= now_ns]
    return round((now_ns - min(oldest)) / 1e9, 6) if oldest else 0.0


__all__ = ["Capture", "LaneModels", "take"]
