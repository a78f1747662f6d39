"""The snapshot document: everything the daemon knows, in the shape docs/snapshot.md states.

Written to state.json at every snapshot, shown by ``ai-analytics status --json``, returned by
``get_performance_snapshot()``; the next daemon restores its counters from ``restore``.
"""

from __future__ import annotations

import os
import time

from ai_analytics.core.state import SCHEMA_VERSION
from ai_analytics.core.times import iso_utc
from ai_analytics.core.version import package_version
from ai_analytics.daemon.ingest.segment_dir import Space, lane_bytes, lanes_that_fit
from ai_analytics.daemon.snapshot.models import model_summary
from ai_analytics.daemon.snapshot.sources import SnapshotSources
from ai_analytics.daemon.stats.edge_counts import histogram_section


def build_document(sources: SnapshotSources, running: bool) -> dict[str, object]:
    now_unix = time.time()
    now = int(sources.clock())
    uptime = max(1, now - int(sources.started) + 1)
    cfg = sources.config
    lanes = list(sources.lanes)
    resources = sources.resources.snapshot()
    operations = sources.stats.operations()
    restore = sources.lanes.saved_state()
    restore["cardinality_overflow"] = dict(sources.stats.registry.overflow)
    drainer = sources.drainer
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
        "events": sources.lanes.totals().as_dict(),
        "events_by_uid": {str(uid): outcome.as_dict()
                          for uid, outcome in sources.lanes.totals_by_uid().items()},
        "lanes": [lane.status() for lane in lanes],
        "lanes_summary": {
            **{s: sum(1 for lane in lanes if lane.state == s) for s in ("live", "retired", "dead")},
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
        "caches": sources.caches.snapshot(now, uptime),
        "cardinality": sources.stats.cardinality(),
        "event_path": {
            "max_fill": max((lane.status()["fill"] for lane in lanes), default=0.0),
            "drain_lag_seconds": _drain_lag(lanes),
            "rates_per_s": sources.outcome_rates.rates(now, uptime),
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
        "sinks": sources.sinks.states(),
        "resources": resources,
        "histograms": histogram_section(sources.stats),
        "restore": restore,
    }


def _segment_dir(directory: str, max_queue_size: int, names_per_lane: int, peak_lanes: int
                 ) -> dict[str, object]:
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


def _drain_lag(lanes: list) -> float:
    """Age in seconds of the oldest record not drained yet (0 when every lane is empty)."""
    now_ns = time.monotonic_ns()
    oldest = [ts for ts in (lane.reader.oldest_unread_ns() for lane in lanes) if 0 < ts <= now_ns]
    return round((now_ns - min(oldest)) / 1e9, 6) if oldest else 0.0


