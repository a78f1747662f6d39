"""The snapshot document: everything the daemon knows, in the shape docs/snapshot.md states.

Written to state.json at every snapshot, shown by ``ai-analytics status --json``, returned by
``get_performance_snapshot()``; the next daemon restores its counters from ``restore``.

The parts that produce a section (lanes, statistics, resources, caches, breakers) return plain
JSON-ready dicts; this is where each becomes its ``ai_analytics.core.document`` type, so the
casts below are the one place that states their shape. tests/unit/test_document.py checks that
the document a real daemon builds has exactly the keys of ``SnapshotDocument``.
"""

from __future__ import annotations

import collections
import os
import time
from collections.abc import Iterable
from typing import cast

from ai_analytics.core.document import (
    CacheEntry,
    CardinalitySection,
    EventCounts,
    LaneEntry,
    OperationEntry,
    OutcomeRates,
    ResourcesSection,
    RestoreSection,
    SegmentDirSection,
    SinksSection,
    SnapshotDocument,
)
from ai_analytics.core.state import SCHEMA_VERSION
from ai_analytics.core.times import iso_utc
from ai_analytics.core.version import package_version
from ai_analytics.daemon.ingest.lanes import TrackedLane
from ai_analytics.daemon.ingest.segment_dir import Space, lane_bytes, lanes_that_fit
from ai_analytics.daemon.snapshot.models import model_summary
from ai_analytics.daemon.snapshot.sources import SnapshotSources
from ai_analytics.daemon.stats.edge_counts import histogram_section


def build_document(sources: SnapshotSources, running: bool) -> SnapshotDocument:
    now_unix = time.time()
    now = int(sources.clock())
    uptime = max(1, now - int(sources.started) + 1)
    cfg = sources.config
    lanes = list(sources.lanes)
    resources = cast(ResourcesSection, sources.resources.snapshot())
    operations = cast(list[OperationEntry], sources.stats.operations())
    restore = cast(RestoreSection, {
        **sources.lanes.saved_state(),
        "cardinality_overflow": dict(sources.stats.registry.overflow),
    })
    drainer = sources.drainer
    states = collections.Counter(lane.state for lane in lanes)
    return {
        "schema_version": SCHEMA_VERSION,
        "written_at": iso_utc(now_unix),
        "written_unix": now_unix,
        "namespace": cfg.namespace,
        "daemon": {
            "pid": os.getpid(), "version": package_version(), "running": running,
            "started_unix": sources.started_unix,
            "uptime_seconds": round(sources.clock() - sources.started, 3),
            "on_full": cfg.on_full, "max_queue_size": cfg.max_queue_size,
            "names_per_lane": cfg.names_per_lane,
            "batch_size": cfg.batch_size, "batch_timeout_seconds": cfg.batch_timeout_seconds,
            "snapshot_interval_seconds": cfg.snapshot_interval_seconds,
            "insight_window": cfg.insight_window,
            **resources["daemon"],
        },
        "events": _counts(sources.lanes.totals().as_dict()),
        "events_by_uid": {str(uid): _counts(outcome.as_dict())
                          for uid, outcome in sources.lanes.totals_by_uid().items()},
        "lanes": [_status(lane) for lane in lanes],
        "lanes_summary": {
            "live": states["live"], "retired": states["retired"], "dead": states["dead"],
            "without_ring": sum(1 for lane in lanes
                                if lane.state == "live" and not lane.ident.has_ring),
            "reclaimed": sources.lanes.folded_count, "waiting": sources.lanes.waiting,
            "rejected_segments": len(sources.lanes.rejected),
            "outdated": len(sources.lanes.outdated),
        },
        "segment_dir": _segment_dir(cfg.segment_dir, cfg.max_queue_size, cfg.names_per_lane,
                                    sources.lanes.peak),
        "operations": operations,
        "models": model_summary(
            operations, lanes, sources.stats.registry, sources.resources.rss_by_pid(),
            sources.resources.gpu_memory_by_pid(),
        ),
        "caches": cast(list[CacheEntry], sources.caches.snapshot(now, uptime)),
        "cardinality": cast(CardinalitySection, sources.stats.cardinality()),
        "event_path": {
            "max_fill": max((_status(lane)["fill"] for lane in lanes), default=0.0),
            "drain_lag_seconds": _drain_lag(lanes),
            "rates_per_s": cast(OutcomeRates, sources.outcome_rates.rates(now, uptime)),
            "records_per_batch": round(drainer.records / drainer.batches, 1)
            if drainer.batches else None,
        },
        "drain": {
            "batches": drainer.batches, "records": drainer.records,
            "last_batch": drainer.last_batch,
            "series_overflow_events": sources.stats.registry.overflow["series"],
            "state_writes_failed": sources.sinks.failures["state"],
            "history_writes_failed": sources.sinks.failures["history"],
        },
        "sinks": cast(SinksSection, sources.sinks.states()),
        "resources": resources,
        "histograms": histogram_section(sources.stats),
        "restore": restore,
    }


def _status(lane: TrackedLane) -> LaneEntry:
    return cast(LaneEntry, lane.status())


def _counts(outcomes: dict[str, int]) -> EventCounts:
    return cast(EventCounts, outcomes)


def _segment_dir(directory: str, max_queue_size: int, names_per_lane: int, peak_lanes: int
                 ) -> SegmentDirSection:
    """The segment directory's room, how many lanes of the configured shape it holds, and
    the most lanes attached at once."""
    space = Space.of(directory)
    one_lane = lane_bytes(max_queue_size, names_per_lane)
    return {
        "path": directory, "size_bytes": space.size if space else None,
        "free_bytes": space.free if space else None, "lane_bytes": one_lane,
        "lanes_that_fit": lanes_that_fit(space, one_lane) if space else None,
        "peak_lanes": peak_lanes,
    }


def _drain_lag(lanes: Iterable[TrackedLane]) -> float:
    """Age in seconds of the oldest record not drained yet (0 when every lane is empty)."""
    now_ns = time.monotonic_ns()
    oldest = [ts for ts in (lane.reader.oldest_unread_ns() for lane in lanes) if 0 < ts <= now_ns]
    return round((now_ns - min(oldest)) / 1e9, 6) if oldest else 0.0


__all__ = ["build_document"]
