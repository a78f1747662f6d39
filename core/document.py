"""The snapshot document: its type, and the tolerant readers of a document that may be damaged.

``SnapshotDocument`` is the shape ``build_document`` returns, the daemon writes to state.json
and serves at /status, and docs/snapshot.md describes (tests/unit/test_document.py checks that the
two name the same fields, and that a real daemon's document has exactly these keys). Every
key is always present except the ``NotRequired`` ones: the findings and recommendations,
which a snapshot gets from the bottleneck rules after it is built, and the fields a resource
probe leaves out when it has no value to give.

Written by the daemon, the document has this shape. Read back from a file, it is typed the
same way, but the file may be damaged, hand-edited or written by another release: a reader
that must not fail on that (``ai-analytics status``, ``/metrics``) reads it through
``lookup``, ``mapping``, ``sequence``, ``mappings`` and ``number``, which turn a missing key or
a value of the wrong type into an empty or None value instead of raising.

The module does without ``from __future__ import annotations``: with it, the annotations stay
strings, and ``TypedDict`` cannot see ``NotRequired`` in them at run time (every key would be
listed in ``__required_keys__``, which tests/unit/test_document.py reads).
"""

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal, NotRequired, TypedDict

from ai_analytics.core.config import InsightWindow, OnFull

# The statistics windows; rates have no since_start window.
RateWindow = Literal["10s", "1m", "5m"]
Window = Literal["10s", "1m", "5m", "since_start"]
LaneState = Literal["live", "retired", "dead"]
CircuitState = Literal["closed", "open", "half_open", "disabled"]
Severity = Literal["info", "warning", "critical"]


class EventCounts(TypedDict):
    """Where events ended: ``events``, each uid's in ``events_by_uid``, each lane's."""

    received: int
    dropped: int
    overwritten: int
    invalid: int
    lost_on_restart: int
    pending: int
    no_lane: int


class DaemonUsage(TypedDict):
    """The daemon's own CPU and memory; ``cpu_percent`` is None until the second sample."""

    cpu_percent: float | None
    rss_bytes: int | None


class DaemonSection(DaemonUsage):
    pid: int
    version: str
    running: bool
    started_unix: float
    uptime_seconds: float
    on_full: OnFull
    max_queue_size: int
    names_per_lane: int
    batch_size: int
    batch_timeout_seconds: float
    snapshot_interval_seconds: float
    insight_window: InsightWindow


class LaneEntry(EventCounts):
    """One lane being drained, with the outcome counters of that lane alone."""

    name: str
    process: str
    pid: int | None  # in the daemon's PID namespace; None where the daemon cannot see it
    worker_pid: int
    pid_namespace: int
    same_pid_namespace: bool
    uid: int
    thread_id: int
    state: LaneState
    ring: bool
    capacity: int
    on_full: OnFull
    fill: float
    head: int
    tail: int


class LanesSummary(TypedDict):
    live: int
    retired: int
    dead: int
    without_ring: int
    reclaimed: int
    waiting: int
    rejected_segments: int
    outdated: int


class SegmentDirSection(TypedDict):
    path: str
    size_bytes: int | None
    free_bytes: int | None
    lane_bytes: int
    lanes_that_fit: int | None
    peak_lanes: int


class Distribution(TypedDict):
    """Milliseconds; every value None when the window has no data."""

    mean: float | None
    min: float | None
    max: float | None
    p50: float | None
    p90: float | None
    p95: float | None
    p99: float | None
    p999: float | None


class CountedDistribution(Distribution):
    """A distribution of a field that not every event passes (TTFT, queue time)."""

    count: int


class QualityStats(TypedDict):
    count: int
    mean: float | None
    min: float | None
    p10: float | None


class CacheStats(TypedDict):
    lookups: int
    hits: int
    hit_rate: float | None


class TokenStats(TypedDict):
    in_total: int
    out_total: int
    in_per_s: float
    out_per_s: float


class WindowStats(TypedDict):
    """One series over one window; also one interval's row in the history."""

    count: int
    successes: int
    errors: int
    error_rate: float | None
    throughput_per_s: float
    latency_ms: Distribution
    quality: QualityStats
    cache: CacheStats
    ttft_ms: CountedDistribution
    queue_ms: CountedDistribution
    tokens: TokenStats


class OperationEntry(TypedDict):
    operation: str
    model: str
    count: int
    windows: dict[Window, WindowStats]


class ModelWindowStats(TypedDict):
    count: int
    errors: int
    error_rate: float | None
    inference_ms_mean: float | None


class ModelProcess(TypedDict):
    pid: int
    rss_bytes: int | None
    gpu_memory_mb: float | None


class ModelEntry(TypedDict):
    model: str
    windows: dict[Window, ModelWindowStats]
    processes: list[ModelProcess]
    processes_not_visible: int
    rss_bytes: int | None
    gpu_memory_mb: float | None


class CacheEntry(TypedDict):
    name: str
    size: float | None
    reporting_lanes: int
    evictions_total: int
    evictions_per_s: dict[RateWindow, float]


class CardinalitySection(TypedDict):
    operations: int
    models: int
    series: int
    max_operations: int
    max_models: int
    max_series: int
    overflow_events: dict[str, int]  # by cap: operations, models, series


class OutcomeRates(TypedDict):
    """Events per second by outcome, per window."""

    received: dict[RateWindow, float]
    dropped: dict[RateWindow, float]
    overwritten: dict[RateWindow, float]
    invalid: dict[RateWindow, float]
    no_lane: dict[RateWindow, float]


class EventPathSection(TypedDict):
    max_fill: float
    drain_lag_seconds: float
    rates_per_s: OutcomeRates
    records_per_batch: float | None


class DrainSection(TypedDict):
    batches: int
    records: int
    last_batch: int
    series_overflow_events: int
    state_writes_failed: int
    history_writes_failed: int
    snapshots_delayed: int
    stats_in_child: int
    stats_child_failures: int


class SinkState(TypedDict):
    """One sink's circuit breaker."""

    state: CircuitState
    failures: int
    consecutive_failures: int
    skipped: int
    last_error: str | None
    opened_unix: float | None
    retry_in_seconds: float | None
    write_running_seconds: float | None


class HistoryBacklog(TypedDict):
    snapshots: int
    series_rows: int
    dropped_snapshots: int
    dropped_series_rows: int


class HistorySinkState(SinkState):
    backlog: HistoryBacklog


class SinksSection(TypedDict):
    state: SinkState
    history: HistorySinkState


class HistogramRow(TypedDict):
    """One series' since-start counts: cumulative at each edge, in all, and their sum (s)."""

    operation: str
    model: str
    buckets: list[int]
    count: int
    sum: float


class HistogramsSection(TypedDict):
    le_seconds: list[float]
    request_duration_seconds: list[HistogramRow]
    time_to_first_token_seconds: list[HistogramRow]
    queue_duration_seconds: list[HistogramRow]


class SystemSample(TypedDict):
    cpu_percent: float | None
    memory_total_bytes: int | None
    memory_used_bytes: int | None
    memory_available_bytes: int | None
    memory_percent: float | None
    age_seconds: float | None
    stale: bool


class ProcessSample(TypedDict):
    """A worker process: ``rss_bytes``, or an ``error`` when it is gone or unreadable;
    ``gpu_memory_mb`` where a GPU reports the process."""

    pid: int
    rss_bytes: NotRequired[int]
    gpu_memory_mb: NotRequired[float]
    error: NotRequired[str]


class GpuDevice(TypedDict):
    """A field the device does not support is None; a device that cannot be read at all
    has an ``error`` too."""

    index: int
    name: str
    utilization_percent: float | None
    memory_used_mb: float | None
    memory_total_mb: float | None
    temperature_c: float | None
    power_w: float | None
    error: NotRequired[str]


class GpuSection(TypedDict):
    available: bool | None  # None until the first sample
    reason: str | None
    devices: list[GpuDevice]
    age_seconds: float | None
    stale: bool
    processes_age_seconds: float | None
    processes_stale: bool


class ResourcesSection(TypedDict):
    system: SystemSample
    daemon: DaemonUsage
    processes: list[ProcessSample]
    processes_age_seconds: float | None
    processes_stale: bool
    gpu: GpuSection


class Subject(TypedDict):
    type: str
    name: str


class Finding(TypedDict):
    id: str
    kind: str
    subject: Subject
    severity: Severity
    window: InsightWindow
    # The numbers of the rule that opened it; their names depend on the kind.
    evidence: dict[str, Any]
    threshold: float
    started_unix: float
    message: str


class Recommendation(TypedDict):
    id: str
    category: str
    finding: str | None
    subject: Subject
    message: str
    config_key: str | None
    suggested_value: float | None


class InsightsResult(TypedDict):
    """What the bottleneck rules add to a snapshot."""

    findings: list[Finding]
    recommendations: list[Recommendation]


class RestoreLane(TypedDict):
    name: str
    created_ns: int
    tail: int
    dropped: int
    no_lane: int
    overwritten: int
    invalid: int
    received: int
    lost_on_restart: int
    uid: int


class RestoreSection(TypedDict):
    """What the next daemon needs to resume exactly."""

    lanes: list[RestoreLane]
    folded: EventCounts
    folded_by_uid: dict[str, EventCounts]
    folded_count: int
    folded_unlinked: list[list[str | int]]  # [name, created_ns] of each lane
    cardinality_overflow: dict[str, int]


class SnapshotDocument(TypedDict):
    schema_version: int
    written_at: str
    written_unix: float
    namespace: str
    daemon: DaemonSection
    events: EventCounts
    events_by_uid: dict[str, EventCounts]
    lanes: list[LaneEntry]
    lanes_summary: LanesSummary
    segment_dir: SegmentDirSection
    operations: list[OperationEntry]
    models: list[ModelEntry]
    caches: list[CacheEntry]
    cardinality: CardinalitySection
    event_path: EventPathSection
    drain: DrainSection
    sinks: SinksSection
    resources: ResourcesSection
    histograms: HistogramsSection
    restore: RestoreSection
    # Added by the bottleneck rules once the document is built.
    findings: NotRequired[list[Finding]]
    recommendations: NotRequired[list[Recommendation]]


# -- reading a document that may be damaged ---------------------------------------------------

def lookup(value: object, *keys: str) -> object:
    """``value[k1][k2]...``, or None where a level is missing or not a mapping."""
    for key in keys:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def mapping(value: object) -> Mapping[str, object]:
    """``value`` if it is a mapping, else an empty one."""
    return value if isinstance(value, Mapping) else {}


def sequence(value: object) -> Sequence[object]:
    """``value`` if it is a list, else an empty one; its items are not checked."""
    return value if isinstance(value, list) else []


def mappings(value: object) -> list[Mapping[str, object]]:
    """The items of ``value`` that are mappings, if it is a list (others are left out)."""
    return [item for item in value if isinstance(item, Mapping)] if isinstance(
        value, list) else []


def number(value: object) -> float | None:
    """``value`` as a float if it is an int or a float other than NaN (a bool is not a
    number here), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return None if math.isnan(value) else float(value)


__all__ = [
    "CacheEntry", "CacheStats", "CardinalitySection", "CircuitState", "CountedDistribution",
    "DaemonSection", "DaemonUsage", "Distribution", "DrainSection", "EventCounts",
    "EventPathSection", "Finding", "GpuDevice", "GpuSection", "HistogramRow",
    "HistogramsSection", "HistoryBacklog", "HistorySinkState", "InsightsResult", "LaneEntry",
    "LaneState", "LanesSummary", "ModelEntry", "ModelProcess", "ModelWindowStats",
    "OperationEntry", "OutcomeRates", "ProcessSample", "QualityStats", "RateWindow",
    "Recommendation", "ResourcesSection", "RestoreLane", "RestoreSection", "SegmentDirSection",
    "Severity", "SinkState", "SinksSection", "SnapshotDocument", "Subject", "SystemSample",
    "TokenStats", "Window", "WindowStats", "lookup", "mapping", "mappings", "number",
    "sequence",
]
