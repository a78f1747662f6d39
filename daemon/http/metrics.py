"""Prometheus exposition of the snapshot document: what ``GET /metrics`` serves.

``render(document)`` writes the text format 0.0.4 of one snapshot document (docs/snapshot.md)
and reads nothing else, so it is safe on any thread: the daemon replaces its published
document with a new dict and never mutates one it has published. ``StatusServer`` calls it
once per document (on the thread that publishes it, or at the first request for it) and
serves the bytes it returns until the next document.

The text is written here directly, family by family, as prometheus_client's
``generate_latest`` writes it (HELP and TYPE lines, ``_total`` on counters, label names
sorted, label values escaped, numbers as Go prints them, histograms as ``_bucket`` lines
up to ``+Inf`` then ``_count`` and ``_sum``); tests/unit/test_metrics.py checks the bytes
against prometheus_client's own writer. Building a metric object per sample costs ~0.4 s
at 1,024 series; this writes the same text in a fraction of that (bench/HTTP.md).

Names follow the Prometheus conventions (docs/metrics.md lists them): the ``ai_analytics_``
prefix, base units (seconds, bytes, ratios 0-1), ``_total`` on counters, ``operation`` and
``model`` labels whose values the daemon caps (``max_operations``, ``max_models``,
``max_series``; past a cap, events count under ``other``). A section the document lacks (no
GPU, no caches, no ``sinks`` yet) gives no samples, a family without samples is left out,
and per series only what the series reports is written: tokens for series that passed
tokens, cache hits and misses for series that looked a cache up, the time to first token and
queue time histograms for series that passed them.

Histograms: the document's ``"histograms"`` section holds since-start counts on fixed edges,
computed when the document is built (daemon/stats/edge_counts.py states their error); they
are written as they are, nothing is computed from the statistics here.

Every value is read through the tolerant readers of ``ai_analytics.core.document``: a missing
or odd value gives no sample rather than an error.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence

from ai_analytics.core.document import SnapshotDocument, mapping, mappings, number
from ai_analytics.core.outcomes import SETTLED
from ai_analytics.daemon.ingest.gate import no_wait
from ai_analytics.daemon.stats.edge_counts import HISTOGRAMS

PREFIX = "ai_analytics_"
# Series rendered between two pauses of a render (about a millisecond of Python).
ROWS_PER_PAUSE = 64
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
COUNTER, GAUGE, HISTOGRAM = "counter", "gauge", "histogram"


# -- the text format ---------------------------------------------------------------------------
def go_float(value: float) -> str:
    """A number as the text format writes it (Go's formatting: ``1.0``, ``2.5e+06``,
    ``+Inf``), as prometheus_client's ``floatToGoString`` does."""
    if value == math.inf:
        return "+Inf"
    if value == -math.inf:
        return "-Inf"
    if value != value:
        return "NaN"
    text = repr(value)
    dot = text.find(".")
    if value > 0 and dot > 6:  # Go switches to an exponent sooner than Python
        mantissa = f"{text[0]}.{text[1:dot]}{text[dot + 1:]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return text


def _count_text(count: int) -> str:
    """``go_float`` of a non-negative int count, without the float for the usual sizes."""
    return f"{count}.0" if 0 <= count < 1_000_000 else go_float(float(count))


def escape(value: str) -> str:
    """A label value in the text format: backslash, double quote and newline escaped."""
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return value


def _labels(names: Sequence[str], values: Sequence[str]) -> str:
    """``name="value",...`` in label-name order."""
    return ",".join(f'{name}="{escape(value)}"'
                    for name, value in sorted(zip(names, values, strict=True)))


def _series_labels(row: Mapping[str, object]) -> str:
    """The (operation, model) labels of a row, in label-name order."""
    model, operation = escape(str(row.get("model"))), escape(str(row.get("operation")))
    return f'model="{model}",operation="{operation}"'


class Family:
    """One metric family's text: its HELP and TYPE lines and its sample lines."""

    __slots__ = ("head", "label_names", "lines", "name")

    def __init__(self, name: str, kind: str, help_text: str,
                 labels: Sequence[str] = ()) -> None:
        self.name = f"{PREFIX}{name}_total" if kind == COUNTER else f"{PREFIX}{name}"
        help_line = help_text.replace("\\", "\\\\").replace("\n", "\\n")
        self.head = f"# HELP {self.name} {help_line}\n# TYPE {self.name} {kind}\n"
        self.label_names = tuple(labels)
        self.lines: list[str] = []

    def add(self, values: Sequence[str], value: object) -> None:
        """A sample with these label values (in the order of ``labels``), unless ``value``
        is not a number."""
        sample = number(value)
        if sample is not None:
            self.sample(_labels(self.label_names, values), sample)

    def sample(self, labels: str, value: float) -> None:
        """A sample whose label text (``_labels``) is made already."""
        if labels:
            self.lines.append(f"{self.name}{{{labels}}} {go_float(value)}\n")
        else:
            self.lines.append(f"{self.name} {go_float(value)}\n")

    def text(self) -> str:
        return self.head + "".join(self.lines) if self.lines else ""


def render(document: SnapshotDocument | None, between: Callable[[], None] = no_wait) -> bytes:
    """The Prometheus text format (0.0.4) of one snapshot document; empty for None.
    ``between`` is called after each family is made and every ``ROWS_PER_PAUSE`` series
    within one (the daemon waits there for a drain pass to end: at hundreds of series a
    family is milliseconds of Python)."""
    if document is None:
        return b""
    texts = []
    for family in _families(document, between):
        texts.append(family.text())
        between()
    return "".join(texts).encode()


def _families(doc: SnapshotDocument, between: Callable[[], None]) -> Iterator[Family]:
    yield from _request_families(doc, between)
    yield from _histogram_families(doc, between)
    yield from _event_path_families(doc)
    yield from _cache_families(doc)
    yield from _resource_families(doc)
    yield from _daemon_families(doc)


def _paced(rows: list[Mapping[str, object]], between: Callable[[], None]
           ) -> Iterator[Mapping[str, object]]:
    """``rows``, with ``between()`` after every ``ROWS_PER_PAUSE`` of them."""
    for index, row in enumerate(rows, 1):
        yield row
        if index % ROWS_PER_PAUSE == 0:
            between()


def _request_families(doc: SnapshotDocument, between: Callable[[], None]) -> Iterator[Family]:
    requests = Family("requests", COUNTER,
                      "Inference requests since the daemon started, by outcome.")
    tokens = Family("tokens", COUNTER, "Tokens since the daemon started; direction in (prompt) "
                    "or out (generated).")
    hits = Family("cache_hits", COUNTER, "Requests that hit a cache, since the daemon started.")
    misses = Family("cache_misses", COUNTER,
                    "Requests that missed a cache, since the daemon started.")
    quality = Family("quality_score_mean", GAUGE,
                     "Mean quality score (0-1) over the last minute.")
    for row in _paced(mappings(doc.get("operations")), between):
        series = _series_labels(row)
        windows = mapping(row.get("windows"))
        since = mapping(windows.get("since_start"))
        for outcome, key in (("success", "successes"), ("error", "errors")):
            if (value := number(since.get(key))) is not None:
                requests.sample(f'{series},outcome="{outcome}"', value)
        token_totals = mapping(since.get("tokens"))
        tokens_in, tokens_out = (number(token_totals.get("in_total")),
                                 number(token_totals.get("out_total")))
        if tokens_in or tokens_out:  # a series that never passed tokens has none to show
            for direction, value in (("in", tokens_in), ("out", tokens_out)):
                if value is not None:
                    tokens.sample(f'direction="{direction}",{series}', value)
        cache = mapping(since.get("cache"))
        lookups, hit_count = number(cache.get("lookups")), number(cache.get("hits"))
        if lookups and hit_count is not None:  # no lookup: no hits or misses to show
            hits.sample(series, hit_count)
            misses.sample(series, lookups - hit_count)
        mean = number(mapping(mapping(windows.get("1m")).get("quality")).get("mean"))
        if mean is not None:
            quality.sample(series, mean)
    yield from (requests, tokens, hits, misses, quality)


def _histogram_families(doc: SnapshotDocument, between: Callable[[], None]
                        ) -> Iterator[Family]:
    section = mapping(doc.get("histograms"))
    raw_edges = section.get("le_seconds")
    edges = [number(e) for e in raw_edges] if isinstance(raw_edges, list) else []
    if not edges or None in edges:
        return
    for name in HISTOGRAMS:
        family = Family(name, HISTOGRAM, _HELP[name])
        bucket = f"{family.name}_bucket{{le="
        starts = [f'{bucket}"{go_float(e)}",' for e in edges]  # type: ignore[arg-type]
        infinity = f'{bucket}"+Inf",'
        count_name, sum_name = f"{family.name}_count{{", f"{family.name}_sum{{"
        lines = family.lines
        for row in _paced(mappings(section.get(name)), between):
            counts, count, total = row.get("buckets"), row.get("count"), number(row.get("sum"))
            if (not isinstance(counts, list) or len(counts) != len(edges) or total is None
                    or not all(type(c) is int for c in counts) or type(count) is not int):
                continue  # a damaged row: no samples rather than a wrong histogram
            series = _series_labels(row)
            tail = f"{series}}} "
            count_text = _count_text(count)
            lines.extend([f"{start}{tail}{_count_text(c)}\n"
                          for start, c in zip(starts, counts, strict=True)])
            lines.append(f"{infinity}{tail}{count_text}\n")
            lines.append(f"{count_name}{tail}{count_text}\n")
            lines.append(f"{sum_name}{tail}{go_float(total)}\n")
        yield family


def _event_path_families(doc: SnapshotDocument) -> Iterator[Family]:
    events = mapping(doc.get("events"))
    family = _counter(
        "events", "Events by where they ended, since the first daemon ran with this "
        "state directory.", labels=["outcome"])
    for outcome in SETTLED:
        _add(family, [outcome], events.get(outcome))
    yield family
    by_uid = _counter(
        "events_by_uid", "The same, by the uid that owns each lane: a lane can only "
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
    fill = _gauges("lane_fill_ratio",
                             "Fill (0-1) of each lane being drained (one per producer thread).",
                             labels=["lane"])
    for lane in mappings(doc.get("lanes")):
        _add(fill, [str(lane.get("name"))], lane.get("fill"))
    yield fill
    lanes = _gauges("lanes", "Lanes by state; waiting: producers waiting "
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


def _cache_families(doc: SnapshotDocument) -> Iterator[Family]:
    size = _gauges("cache_size", "Size of each cache, in the unit its "
                             "workers report, summed over the live lanes reporting it.",
                             labels=["cache"])
    evictions = _counter("cache_evictions",
                                    "Cache evictions reported by workers, since the daemon "
                                    "started.", labels=["cache"])
    for cache in mappings(doc.get("caches")):
        name = [str(cache.get("name"))]
        _add(size, name, cache.get("size"))
        _add(evictions, name, cache.get("evictions_total"))
    yield from (size, evictions)


def _resource_families(doc: SnapshotDocument) -> Iterator[Family]:
    resources = mapping(doc.get("resources"))
    system = mapping(resources.get("system"))
    yield _gauge("system_cpu_ratio", "CPU busy (0-1) over all cores of the node.",
                 _ratio(system.get("cpu_percent")))
    yield _gauge("system_memory_used_bytes", "Memory in use on the node.",
                 system.get("memory_used_bytes"))
    yield _gauge("system_memory_total_bytes", "Memory of the node.",
                 system.get("memory_total_bytes"))
    gpu = mapping(resources.get("gpu"))
    age = _gauges("resource_sample_age_seconds",
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
        family = _gauges(name, help_text, labels=["gpu"])
        for device in devices:
            value = number(device.get(field))
            _add(family, [str(device.get("index"))], None if value is None else value * scale)
        yield family
    rss = _gauges("model_resident_memory_bytes", "Resident memory of the "
                            "live worker processes serving each model.", labels=["model"])
    gpu_memory = _gauges("model_gpu_memory_bytes", "GPU memory of the live "
                                   "worker processes serving each model (where the GPU "
                                   "reports it).", labels=["model"])
    for model in mappings(doc.get("models")):
        labels = [str(model.get("model"))]
        _add(rss, labels, model.get("rss_bytes"))
        megabytes = number(model.get("gpu_memory_mb"))
        _add(gpu_memory, labels, None if megabytes is None else megabytes * MIB)
    yield from (rss, gpu_memory)


def _daemon_families(doc: SnapshotDocument) -> Iterator[Family]:
    daemon = mapping(doc.get("daemon"))
    info = _gauges("build_info", "The daemon's version (always 1).",
                             labels=["version"])
    if daemon.get("version") is not None:
        info.add([str(daemon["version"])], 1)
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
    findings = _gauges("findings",
                                 "Open findings of the bottleneck rules, by severity.",
                                 labels=["severity"])
    if "findings" in doc:
        open_findings = mappings(doc.get("findings"))
        for severity in SEVERITIES:
            findings.add([severity], sum(1 for f in open_findings
                                                if f.get("severity") == severity))
    yield findings
    circuit = _gauges("sink_circuit_state", "Circuit breaker of each "
                                "snapshot sink: 0 closed, 1 half-open, 2 open.",
                                labels=["sink"])
    skipped = _counter("sink_skipped_writes", "Snapshot writes skipped "
                                  "because the sink's circuit was open, since the daemon "
                                  "started.", labels=["sink"])
    for sink, state in sorted(mapping(doc.get("sinks")).items()):
        breaker = mapping(state)  # a disabled breaker has no circuit: no state sample
        _add(circuit, [str(sink)], CIRCUIT_STATES.get(str(breaker.get("state"))))
        _add(skipped, [str(sink)], breaker.get("skipped"))
    yield from (circuit, skipped)
    failures = _counter("sink_write_failures", "Failed snapshot writes "
                                   "since the daemon started, by sink (skipped writes not "
                                   "included: see sink_skipped_writes).", labels=["sink"])
    for sink, state in sorted(mapping(doc.get("sinks")).items()):
        _add(failures, [str(sink)], mapping(state).get("failures"))
    yield failures
    cardinality = mapping(doc.get("cardinality"))
    yield _gauge("series", "Distinct (operation, model) series now.", cardinality.get("series"))
    yield _gauge("series_limit", "The cap on distinct series (max_series).",
                 cardinality.get("max_series"))
    overflow = _counter("cardinality_overflow_events", "Events counted "
                                   "under 'other' because a cardinality cap was reached.",
                                   labels=["cap"])
    for cap, value in sorted(mapping(cardinality.get("overflow_events")).items()):
        _add(overflow, [str(cap)], value)
    yield overflow


# -- small readers that turn a missing or odd value into "no sample" -------------------------
def _counter(name: str, help_text: str, labels: Sequence[str]) -> Family:
    return Family(name, COUNTER, help_text, labels)


def _gauges(name: str, help_text: str, labels: Sequence[str]) -> Family:
    return Family(name, GAUGE, help_text, labels)


def _gauge(name: str, help_text: str, value: object) -> Family:
    family = Family(name, GAUGE, help_text)
    family.add((), value)
    return family


def _add(family: Family, labels: list[str], value: object) -> None:
    family.add(labels, value)


def _ratio(percent: object) -> float | None:
    fraction = number(percent)
    return None if fraction is None else fraction / 100.0


__all__ = ["Family", "escape", "go_float", "render"]
