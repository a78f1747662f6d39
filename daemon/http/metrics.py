"""Prometheus exposition of the snapshot document: what ``GET /metrics`` serves.

``SnapshotCollector`` is a prometheus_client custom collector over a callable that returns the
daemon's latest snapshot document (docs/snapshot.md). Each ``collect()`` builds fresh metric
families from that one document and reads nothing else, so it is safe on the HTTP server's
threads: the daemon replaces its published document with a new dict and never mutates one it
has published. ``render(document)`` writes the text format with ``generate_latest`` on a
private ``CollectorRegistry`` (never the global one: nothing of the process leaks in), and
``MetricsEndpoint`` is the ``/metrics`` callback for ``StatusServer``, rendering each published
document at most once however many scrapers ask.

Names follow the Prometheus conventions (docs/metrics.md lists them): the ``ai_analytics_``
prefix, base units (seconds, bytes, ratios 0-1), ``_total`` on counters, ``operation`` and
``model`` labels whose values the daemon caps (``max_operations``, ``max_models``,
``max_series``; past a cap, events count under ``other``). A section the document lacks (no
GPU, no caches, no ``sinks`` yet) gives no samples.

Histograms: the document's ``"histograms"`` section holds since-start counts on fixed edges,
computed when the document is built (daemon/stats/edge_counts.py states their error); the
collector turns them into histogram families and computes nothing from the statistics.

Every value is read through the tolerant readers of ``ai_analytics.core.document``: a missing
or odd value gives no sample rather than an error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from ai_analytics.core.document import SnapshotDocument, mapping, mappings, number
from ai_analytics.core.outcomes import SETTLED
from ai_analytics.daemon.stats.edge_counts import HISTOGRAMS

PREFIX = "ai_analytics_"
_HELP = {
    "request_duration_seconds": "Inference latency since the daemon started.",
    "time_to_first_token_seconds": "Time to first token since the daemon started.",
    "queue_duration_seconds": "Time requests waited in the worker's queue since the daemon "
                              "started.",
}
MIB = 1024 * 1024
CIRCUIT_STATES = {"closed": 0, "half_open": 1, "open": 2}
SEVERITIES = ("info", "warning", "critical")
LANE_STATES = ("live", "retired", "dead", "waiting")


# -- from the document to metric families (on any thread) -------------------------------------
class SnapshotCollector(Collector):
    """Fresh metric families per scrape from ``document()``, the latest snapshot or None."""

    def __init__(self, document: Callable[[], SnapshotDocument | None]) -> None:
        self._document = document

    def collect(self) -> Iterator[Metric]:
        document = self._document()
        if document is None:
            return
        for family in _families(document):
            if family.samples:
                yield family


def render(document: SnapshotDocument | None) -> bytes:
    """The Prometheus text format (0.0.4) of one snapshot document; empty for None."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(lambda: document))
    return generate_latest(registry)


class MetricsEndpoint:
    """``render`` as ``StatusServer``'s ``metrics`` argument, for callers that name the
    document's source: the server reads the document itself (``snapshot`` or ``publish``),
    calls this with it, and keeps what it returns for as long as that document is served."""

    def __init__(self, snapshot: Callable[[], SnapshotDocument | None] | None = None) -> None:
        self.snapshot = snapshot

    def __call__(self, document: SnapshotDocument | None) -> bytes:
        return render(document)


def _families(doc: SnapshotDocument) -> Iterator[Metric]:
    yield from _request_families(doc)
    yield from _histogram_families(doc)
    yield from _event_path_families(doc)
    yield from _cache_families(doc)
    yield from _resource_families(doc)
    yield from _daemon_families(doc)


def _request_families(doc: SnapshotDocument) -> Iterator[Metric]:
    series = ["operation", "model"]
    requests = CounterMetricFamily(
        f"{PREFIX}requests", "Inference requests since the daemon started, by outcome.",
        labels=[*series, "outcome"])
    tokens = CounterMetricFamily(
        f"{PREFIX}tokens", "Tokens since the daemon started; direction in (prompt) or out "
        "(generated).", labels=[*series, "direction"])
    hits = CounterMetricFamily(f"{PREFIX}cache_hits",
                               "Requests that hit a cache, since the daemon started.",
                               labels=series)
    misses = CounterMetricFamily(f"{PREFIX}cache_misses",
                                 "Requests that missed a cache, since the daemon started.",
                                 labels=series)
    quality = GaugeMetricFamily(f"{PREFIX}quality_score_mean",
                                "Mean quality score (0-1) over the last minute.", labels=series)
    for row in mappings(doc.get("operations")):
        labels = [str(row.get("operation")), str(row.get("model"))]
        windows = mapping(row.get("windows"))
        since = mapping(windows.get("since_start"))
        _add(requests, [*labels, "success"], since.get("successes"))
        _add(requests, [*labels, "error"], since.get("errors"))
        token_totals = mapping(since.get("tokens"))
        _add(tokens, [*labels, "in"], token_totals.get("in_total"))
        _add(tokens, [*labels, "out"], token_totals.get("out_total"))
        cache = mapping(since.get("cache"))
        lookups, hit_count = number(cache.get("lookups")), number(cache.get("hits"))
        if lookups is not None and hit_count is not None:
            _add(hits, labels, hit_count)
            _add(misses, labels, lookups - hit_count)
        _add(quality, labels, mapping(mapping(windows.get("1m")).get("quality")).get("mean"))
    yield from (requests, tokens, hits, misses, quality)


def _histogram_families(doc: SnapshotDocument) -> Iterator[Metric]:
    section = mapping(doc.get("histograms"))
    raw_edges = section.get("le_seconds")
    edges = [number(e) for e in raw_edges] if isinstance(raw_edges, list) else []
    if not edges or None in edges:
        return
    names = [floatToGoString(e) for e in edges]
    for name in HISTOGRAMS:
        family = HistogramMetricFamily(f"{PREFIX}{name}", _HELP[name],
                                       labels=["operation", "model"])
        for row in mappings(section.get(name)):
            counts, count = row.get("buckets"), number(row.get("count"))
            total = number(row.get("sum"))
            if not isinstance(counts, list) or len(counts) != len(edges) or count is None:
                continue
            buckets = [*zip(names, counts, strict=True), ("+Inf", count)]
            family.add_metric([str(row.get("operation")), str(row.get("model"))], buckets,
                              total)
        yield family


def _event_path_families(doc: SnapshotDocument) -> Iterator[Metric]:
    events = mapping(doc.get("events"))
    family = CounterMetricFamily(
        f"{PREFIX}events", "Events by where they ended, since the first daemon ran with this "
        "state directory.", labels=["outcome"])
    for outcome in SETTLED:
        _add(family, [outcome], events.get(outcome))
    yield family
    by_uid = CounterMetricFamily(
        f"{PREFIX}events_by_uid", "The same, by the uid that owns each lane: a lane can only "
        "misreport its own events, and this shows whose events are whose.",
        labels=["uid", "outcome"])
    for uid, counts in mapping(doc.get("events_by_uid")).items():
        for outcome in SETTLED:
            _add(by_uid, [str(uid), outcome], mapping(counts).get(outcome))
    yield by_uid
    yield _gauge("events_pending", "Events published by producers and not drained yet.",
                 events.get("pending"))
    path = mapping(doc.get("event_path"))
    yield _gauge("lane_fill_ratio_max", "Fill (0-1) of the fullest lane.", path.get("max_fill"))
    yield _gauge("drain_lag_seconds", "Age of the oldest record not drained yet.",
                 path.get("drain_lag_seconds"))
    fill = GaugeMetricFamily(f"{PREFIX}lane_fill_ratio",
                             "Fill (0-1) of each lane being drained (one per producer thread).",
                             labels=["lane"])
    for lane in mappings(doc.get("lanes")):
        _add(fill, [str(lane.get("name"))], lane.get("fill"))
    yield fill
    lanes = GaugeMetricFamily(f"{PREFIX}lanes", "Lanes by state; waiting: producers waiting "
                              "for a slot under max_lanes.", labels=["state"])
    summary = mapping(doc.get("lanes_summary"))
    for state in LANE_STATES:
        _add(lanes, [state], summary.get(state))
    yield lanes
    yield _gauge("threads_without_lane", "Producer threads that found no room for a lane in "
                 "the segment directory: their events count as no_lane.",
                 summary.get("without_ring"))
    yield _gauge("lanes_outdated", "Lanes of an earlier layout version (workers that run an "
                 "earlier release), refused.", summary.get("outdated"))
    room = mapping(doc.get("segment_dir"))
    yield _gauge("segment_dir_size_bytes", "Size of the file system of the segment directory.",
                 room.get("size_bytes"))
    yield _gauge("segment_dir_free_bytes", "Free space there.", room.get("free_bytes"))
    yield _gauge("lane_size_bytes", "Room one new lane takes there.", room.get("lane_bytes"))


def _cache_families(doc: SnapshotDocument) -> Iterator[Metric]:
    size = GaugeMetricFamily(f"{PREFIX}cache_size", "Size of each cache, in the unit its "
                             "workers report, summed over the live lanes reporting it.",
                             labels=["cache"])
    evictions = CounterMetricFamily(f"{PREFIX}cache_evictions",
                                    "Cache evictions reported by workers, since the daemon "
                                    "started.", labels=["cache"])
    for cache in mappings(doc.get("caches")):
        name = [str(cache.get("name"))]
        _add(size, name, cache.get("size"))
        _add(evictions, name, cache.get("evictions_total"))
    yield from (size, evictions)


def _resource_families(doc: SnapshotDocument) -> Iterator[Metric]:
    resources = mapping(doc.get("resources"))
    system = mapping(resources.get("system"))
    yield _gauge("system_cpu_ratio", "CPU busy (0-1) over all cores of the node.",
                 _ratio(system.get("cpu_percent")))
    yield _gauge("system_memory_used_bytes", "Memory in use on the node.",
                 system.get("memory_used_bytes"))
    yield _gauge("system_memory_total_bytes", "Memory of the node.",
                 system.get("memory_total_bytes"))
    gpu = mapping(resources.get("gpu"))
    age = GaugeMetricFamily(f"{PREFIX}resource_sample_age_seconds",
                            "Age of the latest resource sample; a hung driver call shows up "
                            "here.", labels=["source"])
    for source, value in (("system", system.get("age_seconds")),
                          ("processes", resources.get("processes_age_seconds")),
                          ("gpu", gpu.get("age_seconds") if gpu.get("available") else None)):
        _add(age, [source], value)
    yield age
    per_gpu = {
        "gpu_utilization_ratio": ("GPU busy (0-1).", "utilization_percent", 0.01),
        "gpu_memory_used_bytes": ("GPU memory in use (from MiB, 0.1 MiB resolution).",
                                  "memory_used_mb", MIB),
        "gpu_memory_total_bytes": ("GPU memory (from MiB).", "memory_total_mb", MIB),
        "gpu_temperature_celsius": ("GPU temperature.", "temperature_c", 1),
        "gpu_power_watts": ("GPU power draw.", "power_w", 1),
    }
    devices = mappings(gpu.get("devices")) if gpu.get("available") else []
    for name, (help_text, field, scale) in per_gpu.items():
        family = GaugeMetricFamily(f"{PREFIX}{name}", help_text, labels=["gpu"])
        for device in devices:
            value = number(device.get(field))
            _add(family, [str(device.get("index"))], None if value is None else value * scale)
        yield family
    rss = GaugeMetricFamily(f"{PREFIX}model_resident_memory_bytes", "Resident memory of the "
                            "live worker processes serving each model.", labels=["model"])
    gpu_memory = GaugeMetricFamily(f"{PREFIX}model_gpu_memory_bytes", "GPU memory of the live "
                                   "worker processes serving each model (where the GPU "
                                   "reports it).", labels=["model"])
    for model in mappings(doc.get("models")):
        labels = [str(model.get("model"))]
        _add(rss, labels, model.get("rss_bytes"))
        megabytes = number(model.get("gpu_memory_mb"))
        _add(gpu_memory, labels, None if megabytes is None else megabytes * MIB)
    yield from (rss, gpu_memory)


def _daemon_families(doc: SnapshotDocument) -> Iterator[Metric]:
    daemon = mapping(doc.get("daemon"))
    info = GaugeMetricFamily(f"{PREFIX}build_info", "The daemon's version (always 1).",
                             labels=["version"])
    if daemon.get("version") is not None:
        info.add_metric([str(daemon["version"])], 1)
    yield info
    yield _gauge("daemon_start_time_seconds", "When the daemon started, in Unix seconds.",
                 daemon.get("started_unix"))
    yield _gauge("snapshot_timestamp_seconds", "When the served snapshot was taken, in Unix "
                 "seconds.", doc.get("written_unix"))
    yield _gauge("snapshot_interval_seconds", "How often the daemon takes a snapshot (what "
                 "/metrics serves).", daemon.get("snapshot_interval_seconds"))
    yield _gauge("daemon_cpu_ratio", "CPU used by the daemon; 1.0 is one core busy.",
                 _ratio(daemon.get("cpu_percent")))
    yield _gauge("daemon_resident_memory_bytes", "Resident memory of the daemon.",
                 daemon.get("rss_bytes"))
    findings = GaugeMetricFamily(f"{PREFIX}findings",
                                 "Open findings of the bottleneck rules, by severity.",
                                 labels=["severity"])
    if "findings" in doc:
        open_findings = mappings(doc.get("findings"))
        for severity in SEVERITIES:
            findings.add_metric([severity], sum(1 for f in open_findings
                                                if f.get("severity") == severity))
    yield findings
    circuit = GaugeMetricFamily(f"{PREFIX}sink_circuit_state", "Circuit breaker of each "
                                "snapshot sink: 0 closed, 1 half-open, 2 open.",
                                labels=["sink"])
    skipped = CounterMetricFamily(f"{PREFIX}sink_skipped_writes", "Snapshot writes skipped "
                                  "because the sink's circuit was open, since the daemon "
                                  "started.", labels=["sink"])
    for sink, state in sorted(mapping(doc.get("sinks")).items()):
        breaker = mapping(state)  # a disabled breaker has no circuit: no state sample
        _add(circuit, [str(sink)], CIRCUIT_STATES.get(str(breaker.get("state"))))
        _add(skipped, [str(sink)], breaker.get("skipped"))
    yield from (circuit, skipped)
    failures = CounterMetricFamily(f"{PREFIX}sink_write_failures", "Failed snapshot writes "
                                   "since the daemon started, by sink (skipped writes not "
                                   "included: see sink_skipped_writes).", labels=["sink"])
    for sink, state in sorted(mapping(doc.get("sinks")).items()):
        _add(failures, [str(sink)], mapping(state).get("failures"))
    yield failures
    cardinality = mapping(doc.get("cardinality"))
    yield _gauge("series", "Distinct (operation, model) series now.", cardinality.get("series"))
    yield _gauge("series_limit", "The cap on distinct series (max_series).",
                 cardinality.get("max_series"))
    overflow = CounterMetricFamily(f"{PREFIX}cardinality_overflow_events", "Events counted "
                                   "under 'other' because a cardinality cap was reached.",
                                   labels=["cap"])
    for cap, value in sorted(mapping(cardinality.get("overflow_events")).items()):
        _add(overflow, [str(cap)], value)
    yield overflow


# -- small readers that turn a missing or odd value into "no sample" -------------------------
def _gauge(name: str, help_text: str, value: object) -> GaugeMetricFamily:
    family = GaugeMetricFamily(f"{PREFIX}{name}", help_text, labels=[])
    _add(family, [], value)
    return family


def _add(family: Metric, labels: list[str], value: object) -> None:
    sample = number(value)
    if sample is not None:
        family.add_metric(labels, sample)  # type: ignore[attr-defined]


def _ratio(percent: object) -> float | None:
    fraction = number(percent)
    return None if fraction is None else fraction / 100.0


__all__ = ["MetricsEndpoint", "SnapshotCollector", "render"]
