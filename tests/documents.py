"""Snapshot documents for tests: the one factory, typed with ``ai_analytics.core.document``.

``snapshot()`` returns a complete document of a busy, healthy namespace: every key the daemon
writes, one live lane, one series, one model, a GPU half busy, and no findings (as
``build_document`` returns it, before the bottleneck rules run). Each section has a builder
of its own whose keyword arguments are the numbers tests vary; a test that needs anything
else passes its own sections to ``snapshot()`` or assigns into the result.
tests/unit/test_document.py checks that the default document has exactly the keys and types of
``SnapshotDocument``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

from ai_analytics.core.config import InsightWindow
from ai_analytics.core.document import (
    CacheEntry,
    CardinalitySection,
    CountedDistribution,
    DaemonSection,
    Distribution,
    DrainSection,
    EventCounts,
    EventPathSection,
    Finding,
    GpuDevice,
    GpuSection,
    HistogramsSection,
    LaneEntry,
    LanesSummary,
    LaneState,
    ModelEntry,
    ModelProcess,
    OperationEntry,
    OutcomeRates,
    ProcessSample,
    QualityStats,
    RateWindow,
    Recommendation,
    ResourcesSection,
    RestoreSection,
    SegmentDirSection,
    Severity,
    SinksSection,
    SnapshotDocument,
    SystemSample,
    TokenStats,
    Window,
    WindowStats,
)
from ai_analytics.core.times import iso_utc

NAMESPACE = "svc"
T0 = 1_700_000_000.0
RATE_WINDOWS: tuple[RateWindow, ...] = ("10s", "1m", "5m")
WINDOWS: tuple[Window, ...] = (*RATE_WINDOWS, "since_start")
PID = 100
BUCKET_EDGES = [0.005, 0.05, 0.5, 5.0]


# -- one series ------------------------------------------------------------------------------

def distribution(mean: float | None, p99: float | None = None,
                 p95: float | None = None) -> Distribution:
    """Milliseconds: p50 at the mean, p90 and p95 at ``p95``, p99 and p999 at ``p99`` (each
    defaults to the one above it, ``p99`` to the mean), min half the mean; all None
    without a mean (no data)."""
    if mean is None:
        return {"mean": None, "min": None, "max": None, "p50": None, "p90": None, "p95": None,
                "p99": None, "p999": None}
    top = mean if p99 is None else p99
    middle = top if p95 is None else p95
    return {"mean": mean, "min": mean / 2, "max": max(mean, top), "p50": mean, "p90": middle,
            "p95": middle, "p99": top, "p999": top}


def exact_distribution(values: Sequence[float]) -> Distribution:
    """Every value given, in the order mean, min, max, p50, p90, p95, p99, p999."""
    mean, low, high, p50, p90, p95, p99, p999 = values
    return {"mean": mean, "min": low, "max": high, "p50": p50, "p90": p90, "p95": p95,
            "p99": p99, "p999": p999}


def counted(count: int, mean: float | None = None, p99: float | None = None,
            values: Distribution | None = None) -> CountedDistribution:
    """A field not every event passes (TTFT, queue time): ``count`` events passed it."""
    shape = values if values is not None else distribution(mean if count else None, p99)
    return {"count": count, **shape}


def quality_stats(count: int, mean: float, low: float | None = None,
                  p10: float | None = None) -> QualityStats:
    return {"count": count, "mean": mean, "min": mean if low is None else low,
            "p10": mean if p10 is None else p10}


def token_stats(in_total: int = 0, out_total: int = 0, in_per_s: float = 0.0,
                out_per_s: float = 0.0) -> TokenStats:
    return {"in_total": in_total, "out_total": out_total, "in_per_s": in_per_s,
            "out_per_s": out_per_s}


def window_stats(count: int = 0, errors: int = 0, mean_ms: float | None = None,
                 p99_ms: float | None = None, *, lookups: int = 0, hits: int = 0,
                 throughput_per_s: float | None = None, latency_ms: Distribution | None = None,
                 quality: QualityStats | None = None, ttft_ms: CountedDistribution | None = None,
                 queue_ms: CountedDistribution | None = None,
                 tokens: TokenStats | None = None) -> WindowStats:
    """One window of one series. With events and no latency given, the mean is 100 ms; the
    rate is per minute; quality, TTFT, queue time and tokens are absent unless given."""
    if count and mean_ms is None:
        mean_ms = 100.0
    return {
        "count": count, "successes": count - errors, "errors": errors,
        "error_rate": round(errors / count, 6) if count else None,
        "throughput_per_s": count / 60 if throughput_per_s is None else throughput_per_s,
        "latency_ms": latency_ms if latency_ms is not None else distribution(mean_ms, p99_ms),
        "quality": quality if quality is not None else {
            "count": 0, "mean": None, "min": None, "p10": None},
        "cache": {"lookups": lookups, "hits": hits,
                  "hit_rate": round(hits / lookups, 6) if lookups else None},
        "ttft_ms": ttft_ms if ttft_ms is not None else counted(0),
        "queue_ms": queue_ms if queue_ms is not None else counted(0),
        "tokens": tokens if tokens is not None else token_stats(),
    }


def series(operation: str = "chat", model: str = "llama", every: WindowStats | None = None,
           **per_window: WindowStats) -> OperationEntry:
    """A series with ``every`` in each window, except the windows named in ``per_window``
    ("10s", "1m", "5m", "since_start": pass them as ``**{"10s": ...}``)."""
    every = every if every is not None else window_stats()
    windows: dict[Window, WindowStats] = {
        w: copy.deepcopy(per_window.get(w, every)) for w in WINDOWS}
    return {"operation": operation, "model": model, "count": windows["since_start"]["count"],
            "windows": windows}


def model(name: str = "llama", count: int = 200, errors: int = 2, mean_ms: float = 200.0,
          processes: Sequence[ModelProcess] = ()) -> ModelEntry:
    """A model with the same numbers in every window; its memory is its processes' sum."""
    rss = [p["rss_bytes"] for p in processes if p["rss_bytes"] is not None]
    gpu_mb = [p["gpu_memory_mb"] for p in processes if p["gpu_memory_mb"] is not None]
    return {
        "model": name,
        "windows": {w: {"count": count, "errors": errors,
                        "error_rate": round(errors / count, 6) if count else None,
                        "inference_ms_mean": mean_ms if count else None} for w in WINDOWS},
        "processes": list(processes),
        "processes_not_visible": 0,
        "rss_bytes": sum(rss) if rss else None,
        "gpu_memory_mb": sum(gpu_mb) if gpu_mb else None,
    }


def cache(name: str, size: float | None = None, reporting_lanes: int = 1,
          evictions_total: int = 0, evictions_per_s: Sequence[float] = (0.0, 0.0, 0.0)
          ) -> CacheEntry:
    """``evictions_per_s`` over 10 s, 1 min and 5 min."""
    return {"name": name, "size": size, "reporting_lanes": reporting_lanes,
            "evictions_total": evictions_total,
            "evictions_per_s": dict(zip(RATE_WINDOWS, evictions_per_s, strict=True))}


# -- lanes and the event path ----------------------------------------------------------------

def events(received: int = 0, dropped: int = 0, overwritten: int = 0, invalid: int = 0,
           lost_on_restart: int = 0, pending: int = 0, no_lane: int = 0) -> EventCounts:
    return {"received": received, "dropped": dropped, "overwritten": overwritten,
            "invalid": invalid, "lost_on_restart": lost_on_restart, "pending": pending,
            "no_lane": no_lane}


def lane(name: str = f"{NAMESPACE}.lane.100.0", pid: int = PID, state: LaneState = "live",
         fill: float = 0.0, capacity: int = 8192, pending: int | None = None,
         tail: int = 5000, received: int = 5000, dropped: int = 0, invalid: int = 0,
         thread_id: int = 1, uid: int = 0) -> LaneEntry:
    """A lane whose producer is ``pid``; unread records are ``fill`` of its capacity unless
    ``pending`` says otherwise. A capacity of 0 is a no-ring lane."""
    unread = round(fill * capacity) if pending is None else pending
    return {"name": name, "process": f"pid {pid}", "pid": pid, "worker_pid": pid,
            "pid_namespace": 4026531836, "same_pid_namespace": True, "uid": uid,
            "thread_id": thread_id, "state": state, "ring": capacity > 0, "capacity": capacity,
            "on_full": "drop", "fill": fill, "head": tail + unread, "tail": tail,
            **events(received=received, dropped=dropped, invalid=invalid, pending=unread)}


def lanes_summary(live: int = 1, retired: int = 0, dead: int = 0, without_ring: int = 0,
                  reclaimed: int = 0, waiting: int = 0, rejected_segments: int = 0,
                  outdated: int = 0) -> LanesSummary:
    return {"live": live, "retired": retired, "dead": dead, "without_ring": without_ring,
            "reclaimed": reclaimed, "waiting": waiting, "rejected_segments": rejected_segments,
            "outdated": outdated}


def segment_dir(path: str = "/dev/shm", size_bytes: int | None = 64 * 2**20,
                free_bytes: int | None = 60 * 2**20, lane_bytes: int = 561152,
                lanes_that_fit: int | None = 119, peak_lanes: int = 1) -> SegmentDirSection:
    return {"path": path, "size_bytes": size_bytes, "free_bytes": free_bytes,
            "lane_bytes": lane_bytes, "lanes_that_fit": lanes_that_fit,
            "peak_lanes": peak_lanes}


def rates(received: float = 100.0, dropped: float = 0.0, overwritten: float = 0.0,
          invalid: float = 0.0, no_lane: float = 0.0) -> OutcomeRates:
    """event_path.rates_per_s with the same rates over every window."""
    def each(value: float) -> dict[RateWindow, float]:
        return dict.fromkeys(RATE_WINDOWS, value)

    return {"received": each(received), "dropped": each(dropped),
            "overwritten": each(overwritten), "invalid": each(invalid),
            "no_lane": each(no_lane)}


def event_path(max_fill: float = 0.0, drain_lag_seconds: float = 0.0,
               rates_per_s: OutcomeRates | None = None,
               records_per_batch: float | None = 50.0) -> EventPathSection:
    return {"max_fill": max_fill, "drain_lag_seconds": drain_lag_seconds,
            "rates_per_s": rates_per_s if rates_per_s is not None else rates(),
            "records_per_batch": records_per_batch}


def drain(batches: int = 1200, records: int = 60000, last_batch: int = 50,
          state_writes_failed: int = 0, history_writes_failed: int = 0,
          snapshots_delayed: int = 0) -> DrainSection:
    return {"batches": batches, "records": records, "last_batch": last_batch,
            "series_overflow_events": 0, "state_writes_failed": state_writes_failed,
            "history_writes_failed": history_writes_failed,
            "snapshots_delayed": snapshots_delayed, "stats_in_child": 12,
            "stats_child_failures": 0}


def sinks() -> SinksSection:
    """Both sinks' breakers closed, nothing failed, no backlog."""
    return {
        "state": {"state": "closed", "failures": 0, "consecutive_failures": 0, "skipped": 0,
                  "last_error": None, "opened_unix": None, "retry_in_seconds": None,
                  "write_running_seconds": None},
        "history": {"state": "closed", "failures": 0, "consecutive_failures": 0,
                    "skipped": 0, "last_error": None, "opened_unix": None,
                    "retry_in_seconds": None, "write_running_seconds": None,
                    "backlog": {"snapshots": 0, "series_rows": 0, "dropped_snapshots": 0,
                                "dropped_series_rows": 0}},
    }


def cardinality(operations: int = 1, models: int = 1, series: int = 1) -> CardinalitySection:
    return {"operations": operations, "models": models, "series": series,
            "max_operations": 256, "max_models": 256, "max_series": 1024,
            "overflow_events": {"operations": 0, "models": 0, "series": 0}}


def histograms(operations: Sequence[OperationEntry] = ()) -> HistogramsSection:
    """The latency of each series on a few edges, as if every event took 1 ms."""
    return {"le_seconds": list(BUCKET_EDGES),
            "request_duration_seconds": [
                {"operation": row["operation"], "model": row["model"],
                 "buckets": [row["count"]] * len(BUCKET_EDGES), "count": row["count"],
                 "sum": row["count"] / 1000} for row in operations],
            "time_to_first_token_seconds": [], "queue_duration_seconds": []}


# -- resources -------------------------------------------------------------------------------

def system(cpu_percent: float | None = 12.5, memory_total_bytes: int | None = 2**34,
           memory_used_bytes: int | None = 2**32,
           memory_available_bytes: int | None = 2**33, memory_percent: float | None = 25.0,
           age_seconds: float | None = 0.4, stale: bool = False) -> SystemSample:
    return {"cpu_percent": cpu_percent, "memory_total_bytes": memory_total_bytes,
            "memory_used_bytes": memory_used_bytes,
            "memory_available_bytes": memory_available_bytes, "memory_percent": memory_percent,
            "age_seconds": age_seconds, "stale": stale}


def gpu_device(index: int, utilization_percent: float | None, name: str = "NVIDIA H200",
               memory_used_mb: float | None = 1000.0, memory_total_mb: float | None = 143771.0,
               temperature_c: float | None = 40, power_w: float | None = 100.0) -> GpuDevice:
    return {"index": index, "name": name, "utilization_percent": utilization_percent,
            "memory_used_mb": memory_used_mb, "memory_total_mb": memory_total_mb,
            "temperature_c": temperature_c, "power_w": power_w}


def gpu(*utilizations: float | None, available: bool = True,
        devices: list[GpuDevice] | None = None) -> GpuSection:
    """One device per utilization (or ``devices``); none and a reason when not available."""
    if devices is None:
        devices = [gpu_device(i, u) for i, u in enumerate(utilizations)] if available else []
    return {"available": available, "reason": None if available else "no NVIDIA driver",
            "devices": devices, "age_seconds": 0.5, "stale": False,
            "processes_age_seconds": 1.0, "processes_stale": False}


def resources(system_sample: SystemSample | None = None, cpu_percent: float | None = 1.0,
              rss_bytes: int | None = 60_000_000,
              processes: list[ProcessSample] | None = None,
              gpu_section: GpuSection | None = None) -> ResourcesSection:
    """``cpu_percent`` and ``rss_bytes`` are the daemon's own; the worker processes default
    to one, ``PID``."""
    return {
        "system": system_sample if system_sample is not None else system(),
        "daemon": {"cpu_percent": cpu_percent, "rss_bytes": rss_bytes},
        "processes": processes if processes is not None else [
            {"pid": PID, "rss_bytes": 40_000_000, "gpu_memory_mb": 1536.0}],
        "processes_age_seconds": 1.2, "processes_stale": False,
        "gpu": gpu_section if gpu_section is not None else gpu(50.0),
    }


# -- the daemon, findings, recommendations, restore ------------------------------------------

def daemon(pid: int = 10, started_unix: float = T0 - 600, uptime_seconds: float = 600.0,
           running: bool = True, cpu_percent: float | None = 1.0,
           rss_bytes: int | None = 60_000_000, insight_window: InsightWindow = "1m"
           ) -> DaemonSection:
    """The daemon, with the default settings of config.yaml but for a 64 Ki batch."""
    return {"pid": pid, "version": "0.1.0", "running": running, "started_unix": started_unix,
            "uptime_seconds": uptime_seconds, "on_full": "drop", "max_queue_size": 8192,
            "names_per_lane": 256, "batch_size": 65536, "batch_timeout_seconds": 1.0,
            "snapshot_interval_seconds": 5.0, "insight_window": insight_window,
            "cpu_percent": cpu_percent, "rss_bytes": rss_bytes}


def finding(kind: str, subject_type: str, name: str, severity: Severity = "warning",
            message: str = "", started_unix: float = T0, threshold: float = 0.0,
            evidence: dict[str, object] | None = None,
            window: InsightWindow = "1m") -> Finding:
    return {"id": f"{kind}:{subject_type}:{name}", "kind": kind,
            "subject": {"type": subject_type, "name": name}, "severity": severity,
            "window": window, "evidence": evidence if evidence is not None else {},
            "threshold": threshold, "started_unix": started_unix, "message": message}


def recommendation(category: str, subject_type: str, name: str, message: str = "",
                   finding: str | None = None, config_key: str | None = None,
                   suggested_value: float | None = None) -> Recommendation:
    return {"id": f"{category}:{subject_type}:{name}", "category": category,
            "finding": finding, "subject": {"type": subject_type, "name": name},
            "message": message, "config_key": config_key, "suggested_value": suggested_value}


def restore() -> RestoreSection:
    """Nothing folded yet, no lane baseline."""
    return {"lanes": [], "folded": events(), "folded_by_uid": {}, "folded_count": 0,
            "folded_unlinked": [],
            "cardinality_overflow": {"operations": 0, "models": 0, "series": 0}}


# -- the whole document ----------------------------------------------------------------------

def snapshot(namespace: str = NAMESPACE, written_unix: float = T0, *,
             lanes: list[LaneEntry] | None = None, operations: list[OperationEntry] | None = None,
             models: list[ModelEntry] | None = None, caches: list[CacheEntry] | None = None,
             findings: list[Finding] | None = None,
             recommendations: list[Recommendation] | None = None) -> SnapshotDocument:
    """A complete document (its sections from the builders above, with their defaults);
    ``findings`` and ``recommendations`` only when given, as a document has none before the
    bottleneck rules run. Other sections: assign your own into the result."""
    counts = events(received=60000)
    series_list = operations if operations is not None else [
        series(every=window_stats(count=200, errors=2, mean_ms=200.0, p99_ms=300.0))]
    document: SnapshotDocument = {
        "schema_version": 1,
        "written_at": iso_utc(written_unix),
        "written_unix": written_unix,
        "namespace": namespace,
        "daemon": daemon(),
        "events": counts,
        "events_by_uid": {"0": counts.copy()},
        "lanes": lanes if lanes is not None else [lane(f"{namespace}.lane.100.0")],
        "lanes_summary": lanes_summary(),
        "segment_dir": segment_dir(),
        "operations": series_list,
        "models": models if models is not None else [model()],
        "caches": caches if caches is not None else [],
        "cardinality": cardinality(),
        "event_path": event_path(),
        "drain": drain(),
        "sinks": sinks(),
        "resources": resources(),
        "histograms": histograms(series_list),
        "restore": restore(),
    }
    if findings is not None:
        document["findings"] = findings
    if recommendations is not None:
        document["recommendations"] = recommendations
    return document
