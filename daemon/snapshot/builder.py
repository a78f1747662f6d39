"""The snapshot document: everything the daemon knows, in the shape docs/snapshot.md states.

Written to state.json at every snapshot, shown by ``ai-analytics status --json``, returned by
``get_performance_snapshot()``; the next daemon restores its counters from ``restore``.

The parts that produce a section (lanes, statistics, resources, caches, breakers) return plain
JSON-ready dicts; this is where each becomes its ``ai_analytics.core.document`` type, so the
casts below are the one place that states their shape. tests/unit/test_document.py checks that
the document a real daemon builds has exactly the keys of ``SnapshotDocument``.
"""

from __future__ import annotations

import os
from typing import cast

from ai_analytics.core.document import (
    CacheEntry,
    CardinalitySection,
    EventCounts,
    LaneEntry,
    LanesSummary,
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
from ai_analytics.daemon.ingest.segment_dir import Space, lane_bytes, lanes_that_fit
from ai_analytics.daemon.resources import ResourceSampler
from ai_analytics.daemon.sinks.writer import Sinks
from ai_analytics.daemon.snapshot.capture import Capture
from ai_analytics.daemon.snapshot.forked import Forked
from ai_analytics.daemon.snapshot.models import model_summary
from ai_analytics.daemon.stats.edge_counts import histogram_section


def build_document(capture: Capture, resources: ResourceSampler, sinks: Sinks,
                   forked: Forked) -> SnapshotDocument:
    """The document of ``capture``, with the latest resource samples, the sinks' states and
    how many statistics came from a forked child.
    Runs on the snapshot thread: it reads only the capture (taken on the loop, never changed
    afterwards), the resource sampler's published samples and the sinks, which belong to the
    snapshot thread."""
    cfg = capture.config
    stats = capture.stats
    lanes = cast(list[LaneEntry], capture.lanes)
    sampled = cast(ResourcesSection, resources.snapshot())
    operations = cast(list[OperationEntry], stats.operations())
    restore = cast(RestoreSection, {**capture.restore,
                                    "cardinality_overflow": dict(stats.overflow)})
    drain = capture.drain
    return {
        "schema_version": SCHEMA_VERSION,
        "written_at": iso_utc(capture.written_unix),
        "written_unix": capture.written_unix,
        "namespace": cfg.namespace,
        "daemon": {
            "pid": os.getpid(), "version": package_version(), "running": capture.running,
            "started_unix": capture.started_unix,
            "uptime_seconds": capture.uptime_seconds,
            "on_full": cfg.on_full, "max_queue_size": cfg.max_queue_size,
            "names_per_lane": cfg.names_per_lane,
            "batch_size": cfg.batch_size, "batch_timeout_seconds": cfg.batch_timeout_seconds,
            "snapshot_interval_seconds": cfg.snapshot_interval_seconds,
            "insight_window": cfg.insight_window,
            **sampled["daemon"],
        },
        "events": _counts(capture.totals),
        "events_by_uid": {uid: _counts(outcome)
                          for uid, outcome in capture.totals_by_uid.items()},
        "lanes": lanes,
        "lanes_summary": cast(LanesSummary, capture.lanes_summary),
        "segment_dir": _segment_dir(cfg.segment_dir, cfg.max_queue_size, cfg.names_per_lane,
                                    capture.peak_lanes),
        "operations": operations,
        "models": model_summary(operations, capture.lane_models, stats.names,
                                resources.rss_by_pid(), resources.gpu_memory_by_pid()),
        "caches": cast(list[CacheEntry], capture.caches),
        "cardinality": cast(CardinalitySection, stats.cardinality()),
        "event_path": {
            "max_fill": max((lane["fill"] for lane in lanes), default=0.0),
            "drain_lag_seconds": capture.drain_lag_seconds,
            "rates_per_s": cast(OutcomeRates, capture.rates),
            "records_per_batch": cast("float | None", drain["records_per_batch"]),
        },
        "drain": {
            "batches": cast(int, drain["batches"]), "records": cast(int, drain["records"]),
            "last_batch": cast(int, drain["last_batch"]),
            "series_overflow_events": stats.overflow["series"],
            "state_writes_failed": sinks.failures["state"],
            "history_writes_failed": sinks.failures["history"],
            "snapshots_delayed": cast(int, drain["snapshots_delayed"]),
            "stats_in_child": forked.in_child,
            "stats_child_failures": forked.failures,
        },
        "sinks": cast(SinksSection, sinks.states()),
        "resources": sampled,
        "histograms": histogram_section(stats),
        "restore": restore,
    }


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


__all__ = ["build_document"]
