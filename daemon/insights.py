"""Findings and recommendations: the bottleneck rules, read from the snapshot document.

``Insights(config).evaluate(document, now_unix)`` is called once per snapshot with the
document ``build_document`` returns (docs/snapshot.md) and gives
``{"findings": [...], "recommendations": [...]}``. It reads nothing but the document, so a
finding always agrees with what status shows. It keeps state between calls: the open
findings with the time each opened, and the counters of the previous document.

Findings (``insight_*`` thresholds from config.yaml, over ``insight_window`` unless named):

================  ===========  ==================================================  =========
kind              subject      opens when                                          severity
================  ===========  ==================================================  =========
queue_congestion  lane         the lane's ``fill`` > insight_queue_fill            W / C
event_loss        namespace    (dropped + overwritten) / all events >              W / C
                               insight_event_loss_ratio
model_errors      model        error_rate > insight_model_error_rate (>= 20 ev.)   W / C
slow_model        model        inference_ms_mean > insight_slow_model_ms (>= 20)   W / C
drain_lag         namespace    drain_lag_seconds > insight_drain_lag_seconds       W / C
producer_died     lane         a ``dead`` lane still holds pending records         info
sink_failing      sink         drain.<sink>_writes_failed grew since last time     W
gpu_saturated     gpu          utilization > insight_gpu_saturated_percent and     W
                               some series' p99 over 10 s > 1.2 x its p99 over 5 m
gpu_idle          gpu          utilization < insight_gpu_idle_percent while        W
                               requests queue (max_fill > 0.5 or a series' mean
                               queue_ms > 100)
cardinality_cap   cardinality  an ``overflow_events`` counter grew since last time W
segment_dir_full  directory    threads run without a lane (no room for one), or    C
                               events were counted ``no_lane`` in the window
outdated_workers  namespace    lanes of an earlier layout version were refused     W
poor_cache        series       hit_rate < recommend_cache_hit_rate (>= 20 lookups) W
================  ===========  ==================================================  =========

W / C: a warning, critical when the number is more than double its threshold (with the
default 0.8, a fill can never be: a full lane shows up as event_loss instead).

Hysteresis, so that findings do not flap: a rule on numbers opens when every one of its
numbers crosses its line (``> threshold``, or ``< threshold`` for gpu_idle's utilization) and
stays open while every number stays within the band: ``>= threshold x (1 - h)`` (``<=
threshold x (1 + h)`` for a "below" number), h = insight_hysteresis. A finding whose subject
is gone from the document, or whose number cannot be read (fewer than MIN_EVENTS events, a
GPU that reports no utilization), closes. The two rules on counters (sink_failing,
cardinality_cap) open when the counter grows and close after QUIET_EVALUATIONS evaluations
in a row without growth; the first evaluation only records the counters. ``started_unix``
is kept while a finding stays open; evidence, severity and message show the latest numbers.

Recommendations come from the findings (every kind but producer_died has one, naming the
config key and a suggested value where a setting helps) and from the statistics in three
categories, performance, caching and reliability, which cite the related open finding
(slow_model, model_errors) when there is one.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from typing import Any

from ai_analytics.client._layout import MAX_CAPACITY
from ai_analytics.core.config import Config, InsightWindow, setting_range
from ai_analytics.core.document import (
    CardinalitySection,
    Finding,
    GpuDevice,
    InsightsResult,
    OperationEntry,
    Recommendation,
    Severity,
    SnapshotDocument,
    Subject,
)
from ai_analytics.daemon.ingest.segment_dir import Space, mib, needed_bytes, sizing_advice

# Fewer events than this in the window are too few to judge a model or a series by.
MIN_EVENTS = 20
# Fewer cache lookups than this are too few to judge a hit rate by.
MIN_LOOKUPS = 20
# gpu_saturated: latency "rises" when a series' 10 s p99 is past this multiple of its 5 m p99.
LATENCY_RISE = 1.2
# gpu_idle: requests "queue" when the fullest lane is past this fill ...
QUEUED_FILL = 0.5
# ... or a series waits longer than this on average (queue_ms) before being processed.
QUEUED_MS = 100.0
# sink_failing, cardinality_cap: evaluations in a row without growth that close the finding.
QUIET_EVALUATIONS = 2
# Bounds of the settings the recommendations suggest: never one the config would refuse.
MAX_BATCH_SIZE = int(setting_range("batch_size")[1])
MIN_BATCH_TIMEOUT_SECONDS = setting_range("batch_timeout_seconds")[0]

SEVERITY_ORDER: dict[Severity, int] = {"critical": 0, "warning": 1, "info": 2}
_WINDOW_WORDS: dict[InsightWindow, str] = {"10s": "10 seconds", "1m": "minute",
                                           "5m": "5 minutes"}
_SINK_WORDS = {
    "state": ("the state file (state.json)",
              "status and a restarted daemon see the counts of the last good write"),
    "history": ("the history database (history.sqlite3)",
                "the history rows of those snapshots are missing"),
}

@dataclasses.dataclass(frozen=True)
class Check:
    """One number against its line: "above" numbers open past it, "below" numbers under it."""

    value: float
    threshold: float
    below: bool = False

    def crossed(self) -> bool:
        return self.value < self.threshold if self.below else self.value > self.threshold

    def holds(self, hysteresis: float) -> bool:
        """Still within the band that keeps an open finding open."""
        if self.below:
            return self.value <= self.threshold * (1 + hysteresis)
        # A threshold of 0 has no band: the finding closes when the number is back to 0.
        return self.value >= self.threshold * (1 - hysteresis) and self.value > 0


@dataclasses.dataclass
class Reading:
    """What one rule sees of one subject in this document."""

    kind: str
    subject_type: str
    subject_name: str
    evidence: dict[str, Any]
    message: str
    # Rules on numbers: every test crosses to open, every test holds to stay open. The first
    # one is the rule's own number: its threshold is the finding's, it decides "critical".
    tests: tuple[Check, ...] = ()
    # Rules on counters: did the counter grow since the previous evaluation?
    grew: bool | None = None
    critical_past_double: bool = False
    severity: Severity = "warning"

    @property
    def id(self) -> str:
        return f"{self.kind}:{self.subject_type}:{self.subject_name}"

    def finding(self, window: InsightWindow, started_unix: float) -> Finding:
        severity = self.severity
        threshold = self.tests[0].threshold if self.tests else 0
        if self.critical_past_double and self.tests:
            first = self.tests[0]
            if first.value > 2 * first.threshold:
                severity = "critical"
        return {
            "id": self.id, "kind": self.kind,
            "subject": {"type": self.subject_type, "name": self.subject_name},
            "severity": severity, "window": window, "evidence": dict(self.evidence),
            "threshold": threshold, "started_unix": started_unix, "message": self.message,
        }


class Insights:
    """The rules and their memory: call ``evaluate`` once per snapshot."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._started: dict[str, float] = {}  # open finding id -> when it opened
        self._quiet: dict[str, int] = {}  # counter finding id -> evaluations without growth
        self._counters: dict[tuple[str, str, str], int] | None = None

    def apply_config(self, config: Config) -> None:
        """New thresholds; the open findings and their memory stay."""
        self.config = config

    def evaluate(self, document: SnapshotDocument, now_unix: float) -> InsightsResult:
        """The findings and recommendations for this snapshot document (JSON-ready)."""
        cfg = self.config
        window = cfg.insight_window
        readings = [reading for rule in RULES for reading in rule(document, cfg, window)]
        readings.extend(self._counter_readings(document))
        started: dict[str, float] = {}
        findings: list[Finding] = []
        for reading in readings:
            if self._is_open(reading):
                started[reading.id] = self._started.get(reading.id, now_unix)
                findings.append(reading.finding(window, started[reading.id]))
        self._started = started
        self._quiet = {key: n for key, n in self._quiet.items() if key in started}
        findings.sort(key=lambda f: (SEVERITY_ORDER[f["severity"]], f["kind"], f["id"]))
        return {"findings": findings,
                "recommendations": recommendations(document, cfg, findings)}

    def _is_open(self, reading: Reading) -> bool:
        was_open = reading.id in self._started
        if reading.grew is not None:
            if reading.grew:
                self._quiet[reading.id] = 0
                return True
            if not was_open:
                return False
            self._quiet[reading.id] = self._quiet.get(reading.id, 0) + 1
            return self._quiet[reading.id] < QUIET_EVALUATIONS
        if was_open:
            return all(test.holds(self.config.insight_hysteresis) for test in reading.tests)
        return all(test.crossed() for test in reading.tests)

    def _counter_readings(self, document: SnapshotDocument) -> list[Reading]:
        """sink_failing and cardinality_cap: counters compared with the previous document."""
        drain, cardinality = document["drain"], document["cardinality"]
        failed = {"state": drain["state_writes_failed"],
                  "history": drain["history_writes_failed"]}
        counters = {("sink_failing", "sink", sink): int(failed[sink]) for sink in _SINK_WORDS}
        for name, total in cardinality["overflow_events"].items():
            counters["cardinality_cap", "cardinality", name] = int(total)
        previous, self._counters = self._counters, counters
        if previous is None:
            return []
        readings = []
        for key, total in counters.items():
            kind, subject_type, name = key
            grown = max(0, total - previous.get(key, total))
            evidence: dict[str, Any] = {"since_previous": grown, "total": total}
            if kind == "sink_failing":
                what, consequence = _SINK_WORDS[name]
                message = (f"Writing {what} has failed {total} times since the daemon started, "
                           f"{grown} of them since the previous snapshot; draining goes on, but "
                           f"{consequence}.")
            else:
                cap = _cap(cardinality, name)
                evidence.update({"distinct": _distinct(cardinality, name), f"max_{name}": cap})
                message = (f"{grown} events since the previous snapshot ({total} in all) were "
                           f"counted under 'other' because the cap of {cap} distinct {name} "
                           f"(max_{name}) is reached.")
            readings.append(Reading(kind, subject_type, name, evidence, message,
                                    grew=grown > 0))
        return readings


# -- the rules on numbers ------------------------------------------------------------------
Rule = Callable[[SnapshotDocument, Config, InsightWindow], Iterator[Reading]]


def queue_congestion(document: SnapshotDocument, cfg: Config,
                     window: InsightWindow) -> Iterator[Reading]:
    threshold = cfg.insight_queue_fill
    for lane in document["lanes"]:
        fill, capacity = float(lane["fill"]), int(lane["capacity"])
        yield Reading(
            "queue_congestion", "lane", lane["name"],
            {"fill": fill, "capacity": capacity, "pid": lane["pid"]},
            f"Lane {lane['name']} of {lane['process']} is {_pct(fill)} full "
            f"({round(fill * capacity)} of {capacity} records not drained yet; threshold "
            f"{_pct(threshold)}).",
            (Check(fill, threshold),), critical_past_double=True,
        )


def event_loss(document: SnapshotDocument, cfg: Config,
               window: InsightWindow) -> Iterator[Reading]:
    rates = _rates(document, window)
    total = sum(rates[name] for name in ("received", "dropped", "overwritten", "invalid"))
    if total <= 0:
        return
    # A full lane loses an event as "dropped" (on_full: drop) or "overwritten" (overwrite).
    lost = rates["dropped"] + rates["overwritten"]
    ratio = lost / total
    threshold = cfg.insight_event_loss_ratio
    namespace = document["namespace"]
    yield Reading(
        "event_loss", "namespace", namespace,
        {"ratio": round(ratio, 6), "dropped_per_s": rates["dropped"],
         "overwritten_per_s": rates["overwritten"], "events_per_s": round(total, 3)},
        f"Namespace {namespace} lost {_pct(ratio)} of its events over the last "
        f"{_WINDOW_WORDS[window]} ({lost:g} of {total:g} events/s dropped or overwritten because "
        f"lanes were full; threshold {_pct(threshold)}).",
        (Check(ratio, threshold),), critical_past_double=True,
    )


def model_errors(document: SnapshotDocument, cfg: Config,
                 window: InsightWindow) -> Iterator[Reading]:
    threshold = cfg.insight_model_error_rate
    for model in document["models"]:
        stats = model["windows"][window]
        if stats["count"] < MIN_EVENTS or stats["error_rate"] is None:  # None: no events
            continue
        rate = float(stats["error_rate"])
        yield Reading(
            "model_errors", "model", model["model"],
            {"error_rate": rate, "errors": stats["errors"], "count": stats["count"]},
            f"Model {_quote(model['model'])} failed {stats['errors']} of its {stats['count']} "
            f"inferences ({_pct(rate)}) over the last {_WINDOW_WORDS[window]} (threshold "
            f"{_pct(threshold)}).",
            (Check(rate, threshold),), critical_past_double=True,
        )


def slow_model(document: SnapshotDocument, cfg: Config,
               window: InsightWindow) -> Iterator[Reading]:
    threshold = cfg.insight_slow_model_ms
    for model in document["models"]:
        stats = model["windows"][window]
        if stats["count"] < MIN_EVENTS or stats["inference_ms_mean"] is None:  # None: no events
            continue
        mean = float(stats["inference_ms_mean"])
        yield Reading(
            "slow_model", "model", model["model"],
            {"inference_ms_mean": mean, "count": stats["count"]},
            f"Model {_quote(model['model'])} took {mean:.0f} ms per inference on average over "
            f"the last {_WINDOW_WORDS[window]} ({stats['count']} inferences; threshold "
            f"{threshold:g} ms).",
            (Check(mean, threshold),), critical_past_double=True,
        )


def poor_cache(document: SnapshotDocument, cfg: Config,
               window: InsightWindow) -> Iterator[Reading]:
    """A series whose cache lookups mostly miss (below recommend_cache_hit_rate)."""
    threshold = cfg.recommend_cache_hit_rate
    for row in document["operations"]:
        cache = row["windows"][window]["cache"]
        if cache["lookups"] < MIN_LOOKUPS or cache["hit_rate"] is None:  # None: no lookups
            continue
        rate = float(cache["hit_rate"])
        name = _series_name(row)
        yield Reading(
            "poor_cache", "series", name,
            {"hit_rate": rate, "lookups": cache["lookups"], "hits": cache["hits"]},
            f"Series {name} found its result in the cache for only {_pct(rate)} of its "
            f"{cache['lookups']} lookups over the last {_WINDOW_WORDS[window]} (threshold "
            f"{_pct(threshold)}).",
            (Check(rate, threshold, below=True),),
        )


def drain_lag(document: SnapshotDocument, cfg: Config,
              window: InsightWindow) -> Iterator[Reading]:
    threshold = cfg.insight_drain_lag_seconds
    path = document["event_path"]
    lag = float(path["drain_lag_seconds"])
    namespace = document["namespace"]
    yield Reading(
        "drain_lag", "namespace", namespace,
        {"drain_lag_seconds": lag, "max_fill": path["max_fill"],
         "records_per_batch": path["records_per_batch"]},
        f"The oldest event not drained yet in namespace {namespace} is {lag:.1f} s old "
        f"(threshold {threshold:g} s): the daemon is falling behind its producers.",
        (Check(lag, threshold),), critical_past_double=True,
    )


def producer_died(document: SnapshotDocument, cfg: Config,
                  window: InsightWindow) -> Iterator[Reading]:
    for lane in document["lanes"]:
        if lane["state"] != "dead":
            continue
        pending = int(lane["pending"])
        yield Reading(
            "producer_died", "lane", lane["name"], {"pending": pending, "pid": lane["pid"]},
            f"The process of lane {lane['name']} ({lane['process']}) has exited and left "
            f"{pending} events in lane "
            f"{lane['name']}; the daemon drains them, then frees the lane.",
            (Check(pending, 0),), severity="info",
        )


def gpu_saturated(document: SnapshotDocument, cfg: Config,
                  window: InsightWindow) -> Iterator[Reading]:
    rise, rising = _latency_rise(document["operations"])
    threshold = cfg.insight_gpu_saturated_percent
    for device, utilization in _gpus(document):
        evidence: dict[str, Any] = {"utilization_percent": utilization,
                                    "device": device.get("name"),
                                    "latency_rise": round(rise, 3), **rising}
        latency = (f"the p99 latency of {rising['series']} rose to {rising['p99_10s_ms']:g} ms "
                   f"over the last 10 seconds from {rising['p99_5m_ms']:g} ms over 5 minutes"
                   if rising["series"] else "no series has enough events to compare latencies")
        yield Reading(
            "gpu_saturated", "gpu", str(device["index"]), evidence,
            f"GPU {device['index']} ({device.get('name')}) is {utilization:g}% busy (threshold "
            f"{threshold:g}%) and {latency}.",
            (Check(utilization, threshold), Check(rise, LATENCY_RISE)),
        )


def gpu_idle(document: SnapshotDocument, cfg: Config,
             window: InsightWindow) -> Iterator[Reading]:
    max_fill = float(document["event_path"]["max_fill"])
    queue_ms, series = 0.0, None
    for row in document["operations"]:
        waits = row["windows"][window]["queue_ms"]
        mean = waits["mean"]
        if waits["count"] >= MIN_EVENTS and mean is not None and mean > queue_ms:
            queue_ms, series = float(mean), _series_name(row)
    # Requests queue when either sign is past its line: 1.0 is the line of the pair.
    pressure = max(max_fill / QUEUED_FILL, queue_ms / QUEUED_MS)
    threshold = cfg.insight_gpu_idle_percent
    for device, utilization in _gpus(document):
        waiting = f"the fullest lane is {_pct(max_fill)} full"
        if series is not None:
            waiting += (f" and {series} waits {queue_ms:.0f} ms on average before processing "
                        f"over the last {_WINDOW_WORDS[window]}")
        yield Reading(
            "gpu_idle", "gpu", str(device["index"]),
            {"utilization_percent": utilization, "device": device.get("name"),
             "max_fill": max_fill, "queue_ms_mean": round(queue_ms, 3) if series else None,
             "queue_series": series},
            f"GPU {device['index']} ({device.get('name')}) is only {utilization:g}% busy "
            f"(threshold {threshold:g}%) while requests wait: {waiting}.",
            (Check(utilization, threshold, below=True), Check(pressure, 1.0)),
        )


def segment_dir_full(document: SnapshotDocument, cfg: Config,
                     window: InsightWindow) -> Iterator[Reading]:
    """Threads that could not get a lane: the segment directory has no room for one."""
    room = document["segment_dir"]
    waiting = int(document["lanes_summary"]["without_ring"])
    per_s = float(document["event_path"]["rates_per_s"]["no_lane"][window])
    one_lane = int(room["lane_bytes"])
    # The room to ask for: every lane at once, as many as were ever attached together.
    wanted = max(int(room["peak_lanes"]), len(document["lanes"]))
    size_bytes, free_bytes = room["size_bytes"], room["free_bytes"]
    evidence: dict[str, Any] = {
        "path": room["path"], "size_bytes": size_bytes, "free_bytes": free_bytes,
        "lane_bytes": one_lane, "peak_lanes": wanted, "threads_without_lane": waiting,
        "no_lane_per_s": per_s, "needed_bytes": needed_bytes(wanted, one_lane)}
    # Both come from one statvfs: known together or not at all.
    size = "of unknown size" if size_bytes is None or free_bytes is None else (
        f"{mib(size_bytes)}, {mib(free_bytes)} free now")
    yield Reading(
        "segment_dir_full", "directory", room["path"], evidence,
        f"Worker threads found no room for a lane in {room['path']} ({size}): up to {wanted} "
        f"lanes were in use at once, {one_lane // 1024:,} KiB each ({mib(wanted * one_lane)} "
        f"in all); {waiting} threads have none now, and {per_s:g} events/s were refused as "
        f"no_lane over the last {_WINDOW_WORDS[window]}.",
        (Check(waiting + per_s, 0),), severity="critical",
    )


def outdated_workers(document: SnapshotDocument, cfg: Config,
                     window: InsightWindow) -> Iterator[Reading]:
    """Lanes written by workers that run an earlier release: refused, their events unread."""
    outdated = int(document["lanes_summary"]["outdated"])
    namespace = document["namespace"]
    yield Reading(
        "outdated_workers", "namespace", namespace, {"lanes": outdated},
        f"{outdated} lanes of namespace {namespace} were written by workers that run an "
        "earlier release of ai_analytics (another layout version): the daemon does not read "
        "them; restart those workers so that they write the current layout.",
        (Check(outdated, 0),),
    )


RULES: tuple[Rule, ...] = (queue_congestion, event_loss, model_errors, slow_model, poor_cache,
                           drain_lag, producer_died, gpu_saturated, gpu_idle, segment_dir_full,
                           outdated_workers)


def _gpus(document: SnapshotDocument) -> Iterator[tuple[GpuDevice, float]]:
    """Devices that report a utilization, when the GPU section is available."""
    gpu = document["resources"]["gpu"]
    if gpu["available"] is not True:
        return
    for device in gpu["devices"]:
        utilization = device.get("utilization_percent")
        if utilization is not None:
            yield device, float(utilization)


def _rates(document: SnapshotDocument, window: InsightWindow) -> dict[str, float]:
    """Events per second by outcome over ``window``."""
    per_s = document["event_path"]["rates_per_s"]
    return {"received": float(per_s["received"][window]),
            "dropped": float(per_s["dropped"][window]),
            "overwritten": float(per_s["overwritten"][window]),
            "invalid": float(per_s["invalid"][window]),
            "no_lane": float(per_s["no_lane"][window])}


def _cap(cardinality: CardinalitySection, name: str) -> int:
    """The cap on distinct ``name`` (operations, models or series)."""
    caps = {"operations": cardinality["max_operations"], "models": cardinality["max_models"],
            "series": cardinality["max_series"]}
    return int(caps[name])


def _distinct(cardinality: CardinalitySection, name: str) -> int | None:
    """How many distinct ``name`` (operations, models or series) there are now."""
    counts = {"operations": cardinality["operations"], "models": cardinality["models"],
              "series": cardinality["series"]}
    return counts.get(name)


def _latency_rise(operations: list[OperationEntry]) -> tuple[float, dict[str, Any]]:
    """The largest p99(10 s) / p99(5 m) over series with MIN_EVENTS in 10 s, and its numbers."""
    best: float = 0.0
    numbers: dict[str, Any] = {"series": None, "p99_10s_ms": None, "p99_5m_ms": None}
    for row in operations:
        short, long = row["windows"]["10s"], row["windows"]["5m"]
        p99_short, p99_long = short["latency_ms"]["p99"], long["latency_ms"]["p99"]
        if short["count"] < MIN_EVENTS or not p99_short or not p99_long:
            continue
        if p99_short / p99_long > best:
            best = p99_short / p99_long
            numbers = {"series": _series_name(row), "p99_10s_ms": p99_short,
                       "p99_5m_ms": p99_long}
    return best, numbers


# -- recommendations -----------------------------------------------------------------------
def recommendations(document: SnapshotDocument, cfg: Config,
                    findings: list[Finding]) -> list[Recommendation]:
    """One per finding that a change can help, then those from the statistics (performance,
    caching, reliability); in the order of the findings they cite, uncited ones last."""
    out = [_FROM_FINDING[f["kind"]](f, document) for f in findings if f["kind"] in _FROM_FINDING]
    out.extend(_from_statistics(document, cfg, {f["id"] for f in findings}))
    order: dict[str | None, int] = {f["id"]: i for i, f in enumerate(findings)}
    out.sort(key=lambda r: (order.get(r["finding"], len(order)), r["id"]))
    return out


def _recommendation(category: str, finding_id: str | None, subject: Subject,
                    message: str, config_key: str | None = None,
                    suggested_value: float | None = None) -> Recommendation:
    return {"id": f"{category}:{subject['type']}:{subject['name']}", "category": category,
            "finding": finding_id, "subject": subject.copy(),
            "message": message, "config_key": config_key, "suggested_value": suggested_value}


def _raise_queue_size(finding: Finding, document: SnapshotDocument) -> Recommendation:
    daemon, window = document["daemon"], finding["window"]
    rates = _rates(document, window)
    current, timeout = int(daemon["max_queue_size"]), float(daemon["batch_timeout_seconds"])
    arriving = sum(rates[name] for name in ("received", "dropped", "overwritten"))
    lanes = max(1, int(document["lanes_summary"]["live"]))
    per_lane = arriving / lanes
    needed = 2 * per_lane * timeout
    suggested = min(MAX_CAPACITY, _next_power_of_two(max(needed, 2 * current)))
    return _recommendation(
        "queue_size", finding["id"], finding["subject"],
        f"Raise max_queue_size from {current} to {suggested}: about {per_lane:.0f} events/s "
        f"arrive per live lane ({arriving:g}/s over {lanes} lanes in the last "
        f"{_WINDOW_WORDS[window]}) and the daemon may wait batch_timeout_seconds = {timeout:g} s "
        f"between drains, so a lane needs room for 2 x {per_lane:.0f} x {timeout:g} = "
        f"{needed:.0f} events; that is rounded up to a power of two and to at least double the "
        "current size. Lanes take the new size when workers create them (restart the workers)."
        + (" But the segment directory has no room for every lane now (segment_dir_full): "
           "larger lanes need a larger directory first." if _directory_full(document, window)
           else ""),
        "max_queue_size", suggested,
    )


def _directory_full(document: SnapshotDocument, window: InsightWindow) -> bool:
    return (int(document["lanes_summary"]["without_ring"]) > 0
            or float(document["event_path"]["rates_per_s"]["no_lane"][window]) > 0)


def _drain_more_often(finding: Finding, document: SnapshotDocument) -> Recommendation:
    daemon = document["daemon"]
    timeout = float(daemon["batch_timeout_seconds"])
    suggested = max(MIN_BATCH_TIMEOUT_SECONDS, timeout / 2)
    per_batch = document["event_path"]["records_per_batch"]
    return _recommendation(
        "drain_interval", finding["id"], finding["subject"],
        f"Lane {finding['subject']['name']} is {_pct(finding['evidence']['fill'])} full: halve "
        f"batch_timeout_seconds from {timeout:g} s to {suggested:g} s so the daemon drains it "
        f"at least twice as often, and raise batch_size (now {daemon['batch_size']}) if drain "
        f"passes are already full (recent batches averaged {per_batch} records).",
        "batch_timeout_seconds", suggested,
    )


def _bigger_batches(finding: Finding, document: SnapshotDocument) -> Recommendation:
    current = int(document["daemon"]["batch_size"])
    suggested = min(MAX_BATCH_SIZE, 2 * current)
    return _recommendation(
        "batch_size", finding["id"], finding["subject"],
        f"The oldest undrained event is {finding['evidence']['drain_lag_seconds']:.1f} s old: "
        f"double batch_size from {current} to {suggested} so each drain pass takes more "
        f"records (recent batches averaged {finding['evidence']['records_per_batch']} records).",
        "batch_size", suggested,
    )


def _feed_the_gpu(finding: Finding, document: SnapshotDocument) -> Recommendation:
    return _recommendation(
        "concurrency", finding["id"], finding["subject"],
        f"GPU {finding['subject']['name']} is {finding['evidence']['utilization_percent']:g}% "
        "busy while requests wait: run more inference workers (or threads) against it, or batch "
        "requests together, so the GPU gets work as fast as requests arrive.",
    )


def _add_capacity(finding: Finding, document: SnapshotDocument) -> Recommendation:
    return _recommendation(
        "capacity", finding["id"], finding["subject"],
        f"GPU {finding['subject']['name']} is {finding['evidence']['utilization_percent']:g}% "
        "busy and latency is rising: add GPU capacity (another device or replica) or lower the "
        "load on it (route or shed requests, lower the quality setting).",
    )


def _raise_cap(finding: Finding, document: SnapshotDocument) -> Recommendation:
    name = finding["subject"]["name"]
    key = f"max_{name}"
    current = _cap(document["cardinality"], name)
    suggested = min(int(setting_range(key)[1]), 2 * current)
    return _recommendation(
        "cardinality", finding["id"], finding["subject"],
        f"Raise {key} from {current} to {suggested}, or fix the naming if the {name} names "
        "carry ids (request, user or session ids make every name new): events past the cap "
        "are counted under 'other', so their statistics are mixed together.",
        key, suggested,
    )


def _check_storage(finding: Finding, document: SnapshotDocument) -> Recommendation:
    sink = finding["subject"]["name"]
    what, _ = _SINK_WORDS[sink]
    return _recommendation(
        "storage", finding["id"], finding["subject"],
        f"Check that state_dir is writable and has free space: writing {what} fails; the "
        "daemon logs the error when its circuit breaker opens, and the snapshot keeps the "
        f"last one (sinks.{sink}.last_error in `ai-analytics status --json`).",
    )


def _make_room(finding: Finding, document: SnapshotDocument) -> Recommendation:
    evidence, daemon = finding["evidence"], document["daemon"]
    wanted = int(evidence["peak_lanes"])
    path, size = evidence["path"], evidence["size_bytes"]
    if size is None:
        advice = (f"give {path} room for {wanted} lanes ({mib(evidence['needed_bytes'])} "
                  "with headroom)")
    else:
        advice = sizing_advice(path, Space(size, int(evidence["free_bytes"])), wanted,
                               int(daemon["max_queue_size"]), int(daemon["names_per_lane"]))
    return _recommendation(
        "segment_dir", finding["id"], finding["subject"],
        f"Make room for every thread's lane: {advice}. Threads without a lane try again "
        "every 5 s and keep their counts.",
    )


def _restart_workers(finding: Finding, document: SnapshotDocument) -> Recommendation:
    return _recommendation(
        "upgrade", finding["id"], finding["subject"],
        "Restart the workers of this namespace after upgrading ai_analytics, so that they "
        "load the client that matches the daemon; their old lanes are then reclaimed.",
    )


_FROM_FINDING: dict[str, Callable[[Finding, SnapshotDocument], Recommendation]] = {
    "segment_dir_full": _make_room,
    "outdated_workers": _restart_workers,
    "event_loss": _raise_queue_size,
    "queue_congestion": _drain_more_often,
    "drain_lag": _bigger_batches,
    "gpu_idle": _feed_the_gpu,
    "gpu_saturated": _add_capacity,
    "cardinality_cap": _raise_cap,
    "sink_failing": _check_storage,
}


def _from_statistics(document: SnapshotDocument, cfg: Config, open_ids: set[str]
                     ) -> Iterator[Recommendation]:
    """The performance, caching and reliability recommendations, from series and models with
    at least MIN_EVENTS events (MIN_LOOKUPS lookups) in the window."""
    window = cfg.insight_window
    words = _WINDOW_WORDS[window]
    slow_models = set()
    for model in document["models"]:
        stats, name = model["windows"][window], model["model"]
        mean_ms, error_rate = stats["inference_ms_mean"], stats["error_rate"]
        if stats["count"] < MIN_EVENTS or mean_ms is None or error_rate is None:  # None: no events
            continue
        subject: Subject = {"type": "model", "name": name}
        mean, rate = float(mean_ms), float(error_rate)
        slow = f"slow_model:model:{name}"
        if mean > cfg.recommend_processing_ms or slow in open_ids:
            slow_models.add(name)
            yield _recommendation(
                "performance", slow if slow in open_ids else None, subject,
                f"Model {_quote(name)} takes {mean:.0f} ms per inference on average over the "
                f"last {words} ({stats['count']} inferences; threshold "
                f"{cfg.recommend_processing_ms:g} ms): run it on a GPU or lower its quality "
                "setting (a smaller model, fewer steps, a lower resolution).",
            )
        errors = f"model_errors:model:{name}"
        if rate > cfg.recommend_error_rate or errors in open_ids:
            yield _recommendation(
                "reliability", errors if errors in open_ids else None, subject,
                f"Model {_quote(name)} failed {_pct(rate)} of its {stats['count']} inferences "
                f"over the last {words} (threshold {_pct(cfg.recommend_error_rate)}): review its "
                "logs and its configuration.",
            )
    for row in document["operations"]:
        series, name = row["windows"][window], _series_name(row)
        subject = {"type": "series", "name": name}
        latency = series["latency_ms"]["mean"]
        if (series["count"] >= MIN_EVENTS and row["model"] not in slow_models
                and latency is not None and latency > cfg.recommend_processing_ms):
            yield _recommendation(
                "performance", None, subject,
                f"Series {name} takes {latency:.0f} ms per event on average over the last {words} "
                f"({series['count']} events; threshold {cfg.recommend_processing_ms:g} ms): run "
                "it on a GPU or lower its quality setting.",
            )
        cache = series["cache"]
        poor = f"poor_cache:series:{name}"
        hit_rate = cache["hit_rate"]  # known wherever there were lookups
        if hit_rate is not None and (poor in open_ids or (
                cache["lookups"] >= MIN_LOOKUPS and hit_rate < cfg.recommend_cache_hit_rate)):
            yield _recommendation(
                "caching", poor if poor in open_ids else None, subject,
                f"Series {name} found its result in the cache for only {_pct(hit_rate)} "
                f"of its {cache['lookups']} lookups over the last {words} (threshold "
                f"{_pct(cfg.recommend_cache_hit_rate)}): raise the cache's size or its TTL.",
            )


# -- wording -------------------------------------------------------------------------------
def _pct(fraction: float) -> str:
    return f"{fraction * 100:.3g}%"


def _quote(name: str) -> str:
    return f"'{name}'" if name else "(unnamed)"


def _series_name(row: OperationEntry) -> str:
    return f"{row['operation']}/{row['model']}"


def _next_power_of_two(value: float) -> int:
    return 1 << max(0, math.ceil(value) - 1).bit_length()


__all__ = ["MIN_EVENTS", "Insights"]
