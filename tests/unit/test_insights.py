"""Findings and recommendations from snapshot documents: each rule fires, stays quiet, and
does not flap; each recommendation names its config key and computes its suggested value."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Callable

import pytest

from ai_analytics.core.config import config_from_mapping
from ai_analytics.core.document import SnapshotDocument
from ai_analytics.daemon.insights import MIN_EVENTS, Insights

import documents
from documents import T0, counted, gpu, lane, model, rates, series, window_stats


# -- documents from the one factory, tests/documents.py -------------------------------------------
def healthy_document() -> SnapshotDocument:
    """A busy, healthy namespace: one live lane, one series, a GPU half busy."""
    return documents.snapshot()


def insights(**settings: object) -> Insights:
    return Insights(config_from_mapping(settings))


def only(result: dict, kind: str) -> list[dict]:
    return [f for f in result["findings"] if f["kind"] == kind]


def recommendation(result: dict, category: str) -> dict:
    (found,) = [r for r in result["recommendations"] if r["category"] == category]
    return found


# -- one knob per rule on numbers --------------------------------------------------------------
def put_fill(doc: dict, fill: float) -> None:
    doc["lanes"] = [lane(fill=fill)]
    doc["event_path"]["max_fill"] = fill


def put_loss(doc: dict, ratio: float) -> None:
    doc["event_path"]["rates_per_s"] = rates(received=1000 * (1 - ratio), dropped=1000 * ratio)


def put_error_rate(doc: dict, rate: float) -> None:
    doc["models"] = [model(count=200, errors=round(200 * rate))]


def put_model_mean(doc: dict, mean_ms: float) -> None:
    doc["models"] = [model(mean_ms=mean_ms)]


def put_drain_lag(doc: dict, seconds: float) -> None:
    doc["event_path"]["drain_lag_seconds"] = seconds


def put_busy_gpu(doc: dict, utilization: float) -> None:
    """Latency rising (10 s p99 1.5 x the 5 m p99) on a GPU this busy."""
    doc["operations"] = [series(every=window_stats(count=200, mean_ms=200.0, p99_ms=200.0),
                                **{"10s": window_stats(count=40, mean_ms=250.0, p99_ms=300.0)})]
    doc["resources"]["gpu"] = gpu(utilization)


def put_idle_gpu(doc: dict, utilization: float) -> None:
    """Requests queue (the fullest lane 60 % full) on a GPU this idle."""
    put_fill(doc, 0.6)
    doc["resources"]["gpu"] = gpu(utilization)


@dataclasses.dataclass(frozen=True)
class Knob:
    kind: str
    finding_id: str
    put: Callable[[dict, float], None]
    opening: float  # past the threshold
    in_band: float  # back on the healthy side, within the hysteresis band (default 0.1)
    closing: float  # past the band
    critical: float | None  # more than double the threshold; None: the rule has no critical


KNOBS = [
    Knob("queue_congestion", "queue_congestion:lane:svc.lane.100.0", put_fill,
         0.85, 0.75, 0.70, None),
    Knob("event_loss", "event_loss:namespace:svc", put_loss, 0.06, 0.047, 0.044, 0.12),
    Knob("model_errors", "model_errors:model:llama", put_error_rate, 0.12, 0.095, 0.08, 0.25),
    Knob("slow_model", "slow_model:model:llama", put_model_mean, 5500.0, 4600.0, 4400.0,
         10500.0),
    Knob("drain_lag", "drain_lag:namespace:svc", put_drain_lag, 6.0, 4.6, 4.4, 10.5),
    Knob("gpu_saturated", "gpu_saturated:gpu:0", put_busy_gpu, 97.0, 90.0, 80.0, None),
    Knob("gpu_idle", "gpu_idle:gpu:0", put_idle_gpu, 5.0, 10.5, 12.0, None),
]


def document_with(knob: Knob, value: float) -> dict:
    doc = healthy_document()
    knob.put(doc, value)
    return doc


@pytest.fixture(params=KNOBS, ids=lambda knob: knob.kind)
def knob(request: pytest.FixtureRequest) -> Knob:
    return request.param


def test_a_healthy_document_has_no_findings_and_no_recommendations():
    """The healthy baseline trips nothing, on the first evaluation and on later ones."""
    rules = insights()
    for t in range(3):
        assert rules.evaluate(healthy_document(), T0 + t) == {"findings": [],
                                                              "recommendations": []}


def test_each_rule_stays_quiet_on_the_healthy_side(knob):
    """A number on the healthy side of its threshold, even within the hysteresis band,
    never opens a finding."""
    rules = insights()
    for t, value in enumerate((knob.closing, knob.in_band, knob.closing)):
        assert only(rules.evaluate(document_with(knob, value), T0 + t), knob.kind) == []


def test_each_rule_opens_and_holds_one_finding_through_the_band(knob):
    """A number oscillating around the threshold, within the hysteresis band, keeps one
    finding open with its first started_unix; past the band it closes, and a new crossing
    opens a new finding with a new start."""
    rules = insights()
    for t, value in enumerate((knob.opening, knob.in_band, knob.opening, knob.in_band,
                               knob.in_band)):
        (finding,) = only(rules.evaluate(document_with(knob, value), T0 + t), knob.kind)
        assert finding["id"] == knob.finding_id
        assert finding["started_unix"] == T0
    assert only(rules.evaluate(document_with(knob, knob.closing), T0 + 10), knob.kind) == []
    (again,) = only(rules.evaluate(document_with(knob, knob.opening), T0 + 11), knob.kind)
    assert again["started_unix"] == T0 + 11


def test_each_rule_is_a_warning_and_critical_past_double(knob):
    """Severity is warning past the threshold; critical when the number is more than double
    its threshold, for the rules that have a critical level."""
    (finding,) = only(insights().evaluate(document_with(knob, knob.opening), T0), knob.kind)
    assert finding["severity"] == "warning"
    assert finding["window"] == "1m"
    assert set(finding) == {"id", "kind", "subject", "severity", "window", "evidence",
                            "threshold", "started_unix", "message"}
    json.dumps(finding)
    if knob.critical is not None:
        (finding,) = only(insights().evaluate(document_with(knob, knob.critical), T0),
                          knob.kind)
        assert finding["severity"] == "critical"


def test_each_finding_has_a_recommendation_that_cites_it(knob):
    """Every finding kind on numbers has a recommendation, and that recommendation cites
    the finding by id."""
    result = insights().evaluate(document_with(knob, knob.opening), T0)
    assert knob.finding_id in {r["finding"] for r in result["recommendations"]}


# -- each rule: what it reports ---------------------------------------------------------------
def test_queue_congestion_names_the_lane_with_fill_capacity_and_pid():
    """A lane past insight_queue_fill is a queue_congestion finding on that lane, with its
    fill, capacity and producer pid as evidence."""
    doc = healthy_document()
    doc["lanes"] = [lane(), lane("svc.lane.200.3", pid=200, fill=0.85, capacity=1024)]
    (finding,) = insights().evaluate(doc, T0)["findings"]
    assert finding["kind"] == "queue_congestion"
    assert finding["subject"] == {"type": "lane", "name": "svc.lane.200.3"}
    assert finding["evidence"] == {"fill": 0.85, "capacity": 1024, "pid": 200}
    assert finding["threshold"] == 0.8
    assert "svc.lane.200.3" in finding["message"] and "85%" in finding["message"]
    assert "870 of 1024" in finding["message"]


def test_queue_congestion_is_critical_past_double_a_low_threshold():
    """With insight_queue_fill below one half, a fill past double it is critical."""
    doc = healthy_document()
    put_fill(doc, 0.9)
    (finding,) = only(insights(insight_queue_fill=0.4).evaluate(doc, T0), "queue_congestion")
    assert finding["severity"] == "critical"


def test_a_finding_closes_when_its_subject_leaves_the_document():
    """An open finding whose lane (or model) is gone from the document closes."""
    rules = insights()
    doc = healthy_document()
    put_fill(doc, 0.9)
    put_model_mean(doc, 6000.0)
    assert {f["kind"] for f in rules.evaluate(doc, T0)["findings"]} == {"queue_congestion",
                                                                       "slow_model"}
    doc["lanes"], doc["models"] = [], []
    assert rules.evaluate(doc, T0 + 1)["findings"] == []


def test_event_loss_reports_the_ratio_over_all_events_in_the_window():
    """Lost (dropped + overwritten) / all events (received + dropped + overwritten + invalid)
    per second over the window, with the drop rate as evidence; a namespace with no events
    has no ratio."""
    doc = healthy_document()
    doc["event_path"]["rates_per_s"] = rates(received=880.0, dropped=100.0, invalid=20.0)
    (finding,) = insights().evaluate(doc, T0)["findings"]
    assert (finding["kind"], finding["subject"]) == ("event_loss",
                                                     {"type": "namespace", "name": "svc"})
    assert finding["evidence"]["ratio"] == pytest.approx(0.1)
    assert finding["evidence"]["dropped_per_s"] == 100.0
    assert finding["severity"] == "warning"  # 0.1 is double 0.05, not more
    assert "svc" in finding["message"] and "10%" in finding["message"]
    doc["event_path"]["rates_per_s"] = rates(received=0.0)
    assert insights().evaluate(doc, T0)["findings"] == []


def test_event_loss_counts_overwritten_events_as_lost():
    """In on_full: overwrite lanes a full lane loses events as overwritten, not dropped:
    they count as lost the same way."""
    doc = healthy_document()
    doc["event_path"]["rates_per_s"] = rates(received=900.0, overwritten=100.0)
    (finding,) = insights().evaluate(doc, T0)["findings"]
    assert finding["kind"] == "event_loss"
    assert finding["evidence"]["overwritten_per_s"] == 100.0
    assert finding["evidence"]["ratio"] == pytest.approx(0.1)


def test_event_loss_reads_the_configured_window():
    """The rules read insight_window: a loss seen only over 10 seconds trips a 10s config,
    not the default 1m one."""
    doc = healthy_document()
    doc["event_path"]["rates_per_s"]["dropped"]["10s"] = 50.0
    assert insights().evaluate(doc, T0)["findings"] == []
    (finding,) = insights(insight_window="10s").evaluate(doc, T0)["findings"]
    assert finding["kind"] == "event_loss" and finding["window"] == "10s"


def test_model_errors_names_the_model_with_rate_errors_and_count():
    """A model failing more than insight_model_error_rate of its inferences is a
    model_errors finding on that model."""
    doc = healthy_document()
    doc["models"] = [model("mistral", count=200, errors=30), model()]
    (finding,) = insights().evaluate(doc, T0)["findings"]
    assert (finding["kind"], finding["subject"]) == ("model_errors",
                                                     {"type": "model", "name": "mistral"})
    assert finding["evidence"] == {"error_rate": 0.15, "errors": 30, "count": 200}
    assert finding["threshold"] == 0.1
    assert "'mistral'" in finding["message"] and "15%" in finding["message"]


def test_slow_model_names_the_model_with_its_mean():
    """A model slower on average than insight_slow_model_ms is a slow_model finding."""
    doc = healthy_document()
    put_model_mean(doc, 7250.0)
    (finding,) = insights().evaluate(doc, T0)["findings"]
    assert (finding["kind"], finding["subject"]["name"]) == ("slow_model", "llama")
    assert finding["evidence"] == {"inference_ms_mean": 7250.0, "count": 200}
    assert "'llama'" in finding["message"] and "7250 ms" in finding["message"]


def test_model_rules_need_enough_inferences_in_the_window():
    """With fewer than MIN_EVENTS inferences in the window a model is not judged: neither
    its error rate nor its mean trips a finding or a recommendation."""
    doc = healthy_document()
    doc["models"] = [model(count=MIN_EVENTS - 1, errors=10, mean_ms=9000.0)]
    assert insights().evaluate(doc, T0) == {"findings": [], "recommendations": []}
    doc["models"] = [model(count=MIN_EVENTS, errors=10, mean_ms=9000.0)]
    kinds = {f["kind"] for f in insights().evaluate(doc, T0)["findings"]}
    assert kinds == {"model_errors", "slow_model"}


def test_drain_lag_reports_the_age_of_the_oldest_undrained_event():
    """drain_lag_seconds past insight_drain_lag_seconds is a drain_lag finding."""
    doc = healthy_document()
    put_drain_lag(doc, 7.5)
    (finding,) = insights().evaluate(doc, T0)["findings"]
    assert (finding["kind"], finding["subject"]) == ("drain_lag",
                                                     {"type": "namespace", "name": "svc"})
    assert finding["evidence"]["drain_lag_seconds"] == 7.5
    assert "7.5 s" in finding["message"] and "svc" in finding["message"]


def test_producer_died_is_info_while_a_dead_lane_holds_records():
    """A dead lane still holding records is an info finding; it closes once the lane is
    drained or reclaimed. Live lanes with records, and drained dead lanes, are not."""
    rules = insights()
    doc = healthy_document()
    doc["lanes"] = [lane(pending=40), lane("svc.lane.300.0", pid=300, state="dead",
                                           pending=40)]
    result = rules.evaluate(doc, T0)
    (finding,) = result["findings"]
    assert result["recommendations"] == []  # nothing to change: the daemon drains the lane
    assert (finding["kind"], finding["severity"]) == ("producer_died", "info")
    assert finding["subject"] == {"type": "lane", "name": "svc.lane.300.0"}
    assert finding["evidence"] == {"pending": 40, "pid": 300}
    assert "300" in finding["message"] and "svc.lane.300.0" in finding["message"]
    doc["lanes"][1] = lane("svc.lane.300.0", pid=300, state="dead", pending=3)
    assert rules.evaluate(doc, T0 + 1)["findings"][0]["started_unix"] == T0
    doc["lanes"][1] = lane("svc.lane.300.0", pid=300, state="dead", pending=0)
    assert rules.evaluate(doc, T0 + 2)["findings"] == []


def test_gpu_saturated_needs_rising_latency():
    """A GPU past insight_gpu_saturated_percent is saturated only while some series' 10 s
    p99 is more than 1.2 x its 5 m p99; the evidence carries both."""
    doc = healthy_document()
    put_busy_gpu(doc, 98.0)
    (finding,) = insights().evaluate(doc, T0)["findings"]
    assert (finding["kind"], finding["subject"]) == ("gpu_saturated",
                                                     {"type": "gpu", "name": "0"})
    assert finding["evidence"] == {
        "utilization_percent": 98.0, "device": "NVIDIA H200", "latency_rise": 1.5,
        "series": "chat/llama", "p99_10s_ms": 300.0, "p99_5m_ms": 200.0}
    assert "GPU 0" in finding["message"] and "98%" in finding["message"]
    flat = healthy_document()
    flat["resources"]["gpu"] = gpu(98.0)
    assert insights().evaluate(flat, T0)["findings"] == []


def test_gpu_saturated_ignores_series_with_too_few_events_in_10s():
    """A latency rise over fewer than MIN_EVENTS events in the last 10 seconds is noise."""
    doc = healthy_document()
    put_busy_gpu(doc, 98.0)
    doc["operations"][0]["windows"]["10s"]["count"] = MIN_EVENTS - 1
    assert insights().evaluate(doc, T0)["findings"] == []


def test_gpu_saturated_closes_when_latency_settles():
    """An open gpu_saturated finding closes once latency no longer rises, past the band."""
    rules = insights()
    doc = healthy_document()
    put_busy_gpu(doc, 98.0)
    assert only(rules.evaluate(doc, T0), "gpu_saturated")
    doc["operations"][0]["windows"]["10s"]["latency_ms"]["p99"] = 200.0
    assert rules.evaluate(doc, T0 + 1)["findings"] == []


def test_gpu_idle_needs_queued_requests():
    """A GPU below insight_gpu_idle_percent is idle only while requests queue: a lane more
    than half full, or a series waiting more than 100 ms on average."""
    doc = healthy_document()
    put_idle_gpu(doc, 4.0)
    (finding,) = insights().evaluate(doc, T0)["findings"]
    assert (finding["kind"], finding["subject"]["name"]) == ("gpu_idle", "0")
    assert finding["evidence"]["utilization_percent"] == 4.0
    assert finding["evidence"]["max_fill"] == 0.6
    assert "GPU 0" in finding["message"] and "4%" in finding["message"]

    waiting = healthy_document()
    waiting["resources"]["gpu"] = gpu(4.0)
    waiting["operations"] = [series(every=window_stats(count=200, queue_ms=counted(200, 150.0)))]
    (finding,) = insights().evaluate(waiting, T0)["findings"]
    assert finding["kind"] == "gpu_idle"
    assert finding["evidence"]["queue_ms_mean"] == 150.0
    assert finding["evidence"]["queue_series"] == "chat/llama"

    calm = healthy_document()
    calm["resources"]["gpu"] = gpu(4.0)
    assert insights().evaluate(calm, T0)["findings"] == []


def test_gpu_rules_need_an_available_gpu_with_a_utilization():
    """No GPU section (or a device that reports no utilization) trips no GPU rule."""
    doc = healthy_document()
    put_idle_gpu(doc, 4.0)
    doc["resources"]["gpu"] = gpu(available=False)
    assert only(insights().evaluate(doc, T0), "gpu_idle") == []
    doc["resources"]["gpu"] = gpu(None)
    assert only(insights().evaluate(doc, T0), "gpu_idle") == []


@pytest.mark.parametrize("sink", ["state", "history"])
def test_sink_failing_opens_on_growth_and_closes_after_two_quiet_evaluations(sink):
    """A sink's failure counter that grows opens sink_failing (the first evaluation only
    records the counter); it stays open, same start, through one evaluation without growth
    and closes at the second."""
    rules = insights()
    key = f"{sink}_writes_failed"
    doc = healthy_document()
    doc["drain"][key] = 3
    assert rules.evaluate(doc, T0)["findings"] == []
    doc["drain"][key] = 5
    (finding,) = rules.evaluate(doc, T0 + 1)["findings"]
    assert (finding["kind"], finding["subject"], finding["severity"]) == (
        "sink_failing", {"type": "sink", "name": sink}, "warning")
    assert finding["evidence"] == {"since_previous": 2, "total": 5}
    assert "5 times" in finding["message"] and sink in finding["message"]
    (held,) = rules.evaluate(doc, T0 + 2)["findings"]
    assert held["started_unix"] == T0 + 1 and held["evidence"]["since_previous"] == 0
    assert rules.evaluate(doc, T0 + 3)["findings"] == []
    doc["drain"][key] = 6
    (again,) = rules.evaluate(doc, T0 + 4)["findings"]
    assert again["started_unix"] == T0 + 4


def test_sink_failing_growth_resets_the_quiet_count():
    """Failures every other snapshot keep one finding open with its first start."""
    rules = insights()
    doc = healthy_document()
    rules.evaluate(doc, T0)
    for t in range(1, 8):
        doc["drain"]["state_writes_failed"] += t % 2
        (finding,) = rules.evaluate(doc, T0 + t)["findings"]
        assert finding["started_unix"] == T0 + 1


@pytest.mark.parametrize("cap", ["operations", "models", "series"])
def test_cardinality_cap_opens_when_an_overflow_counter_grows(cap):
    """Events newly redirected to 'other' by a cap open cardinality_cap for that cap; it
    closes after two evaluations without growth, like sink_failing."""
    rules = insights()
    doc = healthy_document()
    doc["cardinality"]["overflow_events"][cap] = 7  # restored from a previous daemon
    assert rules.evaluate(doc, T0)["findings"] == []
    doc["cardinality"]["overflow_events"][cap] = 19
    (finding,) = rules.evaluate(doc, T0 + 1)["findings"]
    assert finding["kind"] == "cardinality_cap"
    assert finding["subject"] == {"type": "cardinality", "name": cap}
    assert finding["evidence"]["since_previous"] == 12
    assert finding["evidence"]["total"] == 19
    assert f"max_{cap}" in finding["message"]
    assert rules.evaluate(doc, T0 + 2)["findings"]
    assert rules.evaluate(doc, T0 + 3)["findings"] == []


def test_findings_are_ordered_by_severity_then_kind_and_recommendations_by_finding():
    """Critical first, info last, kinds alphabetical within a severity; recommendations
    follow the findings they cite, uncited ones last."""
    doc = healthy_document()
    doc["lanes"] = [lane(fill=0.9), lane("svc.lane.300.0", pid=300, state="dead", pending=4)]
    put_drain_lag(doc, 11.0)
    doc["models"] = [model(errors=14), model("bge", mean_ms=5500.0)]  # 7 % errors: uncited
    result = insights().evaluate(doc, T0)
    assert [(f["severity"], f["kind"]) for f in result["findings"]] == [
        ("critical", "drain_lag"), ("warning", "queue_congestion"), ("warning", "slow_model"),
        ("info", "producer_died")]
    assert [(r["category"], r["finding"]) for r in result["recommendations"]] == [
        ("batch_size", "drain_lag:namespace:svc"),
        ("drain_interval", "queue_congestion:lane:svc.lane.100.0"),
        ("performance", "slow_model:model:bge"),
        ("reliability", None)]


def test_segment_dir_full_names_the_directory_its_size_and_what_lanes_need():
    """Threads without a lane (no room in the segment directory): a critical finding with the
    directory, its size and the room the lanes need; its recommendation gives the size to
    ask for and the max_queue_size with which every lane would fit; it stays open while
    no_lane events are counted in the window, and closes after."""
    doc = healthy_document()
    doc["segment_dir"] = {"path": "/dev/shm", "size_bytes": 2 * 2**20, "free_bytes": 400_000,
                          "lane_bytes": 561152, "lanes_that_fit": 3, "peak_lanes": 8}
    doc["lanes"] = [lane(f"svc.lane.{n}.0", pid=n) for n in range(3)] + [
        {**lane(f"svc.lane.{n}.0", pid=n, capacity=0), "fill": 0.0} for n in range(3, 8)]
    doc["lanes_summary"].update(live=8, without_ring=5)
    doc["event_path"]["rates_per_s"] = rates(no_lane=2000.0)
    result = insights().evaluate(doc, T0)
    (found,) = only(result, "segment_dir_full")
    assert found["severity"] == "critical" and found["subject"]["name"] == "/dev/shm"
    assert found["evidence"]["threads_without_lane"] == 5
    assert found["evidence"]["peak_lanes"] == 8
    assert found["message"].startswith(
        "Worker threads found no room for a lane in /dev/shm (2.0 MiB, 0.4 MiB free now): up to "
        "8 lanes were in use at once, 548 KiB each (4.3 MiB in all); 5 threads have none now")
    advice = recommendation(result, "segment_dir")
    assert advice["finding"] == found["id"]
    assert "give /dev/shm at least 6.0 MiB" in advice["message"]  # 8 x 548 KiB x 1.25
    assert "sizeLimit" in advice["message"]
    # 2 MiB / 1.25 / 8 lanes, less the name table, in 64-byte records:
    assert "lower max_queue_size to 2760 so that 8 lanes fit" in advice["message"]
    engine = insights()
    engine.evaluate(doc, T0)
    doc["lanes_summary"]["without_ring"] = 0  # the threads ended: the window still counts,
    doc["lanes"] = []  # and the advice still sizes the directory by the peak
    assert len(only(engine.evaluate(doc, T0 + 5), "segment_dir_full")) == 1
    assert "at least 6.0 MiB" in recommendation(engine.evaluate(doc, T0 + 6), "segment_dir")[
        "message"]
    doc["event_path"]["rates_per_s"] = rates()  # and a window later, no no_lane event
    assert only(engine.evaluate(doc, T0 + 65), "segment_dir_full") == []


def test_a_larger_queue_is_not_advised_alone_while_the_segment_dir_is_full():
    """Lanes that drop while threads find no room for one: the queue-size advice says that
    larger lanes need a larger directory first."""
    doc = healthy_document()
    doc["lanes_summary"]["without_ring"] = 2
    doc["event_path"]["rates_per_s"] = rates(received=9000.0, dropped=1000.0, no_lane=500.0)
    advice = recommendation(insights().evaluate(doc, T0), "queue_size")
    assert "larger lanes need a larger directory first" in advice["message"]
    doc["lanes_summary"]["without_ring"] = 0
    doc["event_path"]["rates_per_s"] = rates(received=9000.0, dropped=1000.0)
    advice = recommendation(insights().evaluate(doc, T0), "queue_size")
    assert "directory" not in advice["message"]


def test_outdated_workers_says_to_restart_them():
    """Lanes of an earlier layout version: a warning that says to restart the workers."""
    doc = healthy_document()
    doc["lanes_summary"]["outdated"] = 2
    result = insights().evaluate(doc, T0)
    (found,) = only(result, "outdated_workers")
    assert found["severity"] == "warning" and "2 lanes of namespace svc" in found["message"]
    assert "Restart the workers" in recommendation(result, "upgrade")["message"]


# -- recommendations from findings: config key and suggested value --------------------------------
def test_event_loss_suggests_double_the_queue_size_at_low_rates():
    """max_queue_size: the next power of two >= 2 x per-lane rate x batch_timeout_seconds,
    and at least double the current value, which wins at a low rate."""
    doc = healthy_document()
    doc["lanes"] = [lane(f"svc.lane.{n}.0", pid=n) for n in range(4)]
    doc["lanes_summary"]["live"] = 4
    doc["event_path"]["rates_per_s"] = rates(received=9000.0, dropped=1000.0)
    result = insights().evaluate(doc, T0)
    advice = recommendation(result, "queue_size")
    assert advice["finding"] == "event_loss:namespace:svc"
    assert (advice["config_key"], advice["suggested_value"]) == ("max_queue_size", 16384)
    assert "2500 events/s" in advice["message"]  # 10000/s over 4 lanes
    assert "5000 events" in advice["message"]  # 2 x 2500 x 1.0 s


def test_event_loss_suggests_a_queue_size_from_the_observed_rate():
    """At a high rate the room for two drain intervals wins: 2 x 20000/s x 1 s = 40000,
    rounded up to 65536."""
    doc = healthy_document()
    doc["lanes"] = [lane(f"svc.lane.{n}.0", pid=n) for n in range(4)]
    doc["lanes_summary"]["live"] = 4
    doc["event_path"]["rates_per_s"] = rates(received=72000.0, dropped=8000.0)
    advice = recommendation(insights().evaluate(doc, T0), "queue_size")
    assert (advice["config_key"], advice["suggested_value"]) == ("max_queue_size", 65536)
    assert "20000 events/s" in advice["message"] and "40000 events" in advice["message"]


def test_queue_congestion_suggests_halving_the_batch_timeout():
    """batch_timeout_seconds: half the current value; the message mentions batch_size."""
    doc = healthy_document()
    doc["daemon"]["batch_timeout_seconds"] = 0.25
    put_fill(doc, 0.9)
    advice = recommendation(insights().evaluate(doc, T0), "drain_interval")
    assert advice["finding"] == "queue_congestion:lane:svc.lane.100.0"
    assert (advice["config_key"], advice["suggested_value"]) == ("batch_timeout_seconds",
                                                                 0.125)
    assert "batch_size" in advice["message"]


def test_drain_lag_suggests_doubling_the_batch_size():
    """batch_size: double the current value."""
    doc = healthy_document()
    doc["daemon"]["batch_size"] = 1000
    put_drain_lag(doc, 6.0)
    advice = recommendation(insights().evaluate(doc, T0), "batch_size")
    assert advice["finding"] == "drain_lag:namespace:svc"
    assert (advice["config_key"], advice["suggested_value"]) == ("batch_size", 2000)


def test_gpu_findings_suggest_concurrency_or_capacity():
    """gpu_idle asks for more concurrency or batching; gpu_saturated for more capacity or
    less load; neither has a config key of the daemon."""
    doc = healthy_document()
    put_idle_gpu(doc, 3.0)
    idle = recommendation(insights().evaluate(doc, T0), "concurrency")
    assert idle["finding"] == "gpu_idle:gpu:0"
    assert "workers" in idle["message"] and "batch" in idle["message"]
    assert (idle["config_key"], idle["suggested_value"]) == (None, None)
    put_busy_gpu(doc, 99.0)
    busy = recommendation(insights().evaluate(doc, T0), "capacity")
    assert busy["finding"] == "gpu_saturated:gpu:0"
    assert "capacity" in busy["message"] and busy["config_key"] is None


@pytest.mark.parametrize(("cap", "current", "suggested"),
                         [("series", 1024, 2048), ("operations", 300, 600),
                          ("models", 40000, 65536)])
def test_cardinality_cap_suggests_doubling_the_cap(cap, current, suggested):
    """The named cap doubled (within its 65536 limit), or the naming fixed."""
    rules = insights()
    doc = healthy_document()
    doc["cardinality"][f"max_{cap}"] = current
    rules.evaluate(doc, T0)
    doc["cardinality"]["overflow_events"][cap] = 5
    advice = recommendation(rules.evaluate(doc, T0 + 1), "cardinality")
    assert advice["finding"] == f"cardinality_cap:cardinality:{cap}"
    assert (advice["config_key"], advice["suggested_value"]) == (f"max_{cap}", suggested)
    assert "ids" in advice["message"]


def test_sink_failing_points_at_the_state_dir():
    """sink_failing's recommendation cites it and tells where to look."""
    rules = insights()
    doc = healthy_document()
    rules.evaluate(doc, T0)
    doc["drain"]["history_writes_failed"] = 1
    advice = recommendation(rules.evaluate(doc, T0 + 1), "storage")
    assert advice["finding"] == "sink_failing:sink:history"
    assert "state_dir" in advice["message"]


# -- the original design's three recommendations ---------------------------------------------------
def test_performance_from_a_models_average_time():
    """A model slower on average than recommend_processing_ms: enable a GPU or lower the
    quality; it cites slow_model when that finding is open."""
    doc = healthy_document()
    put_model_mean(doc, 3500.0)
    result = insights().evaluate(doc, T0)
    assert result["findings"] == []
    advice = recommendation(result, "performance")
    assert advice["subject"] == {"type": "model", "name": "llama"}
    assert advice["finding"] is None
    assert "GPU" in advice["message"] and "quality" in advice["message"]
    assert "3500 ms" in advice["message"]
    put_model_mean(doc, 6000.0)
    cited = recommendation(insights().evaluate(doc, T0), "performance")
    assert cited["finding"] == "slow_model:model:llama"
    put_model_mean(doc, 2500.0)
    assert insights().evaluate(doc, T0)["recommendations"] == []


def test_performance_from_one_slow_series_of_a_fast_model():
    """A series slower than recommend_processing_ms whose model is fast on average gets a
    recommendation of its own."""
    doc = healthy_document()
    doc["operations"] = [series(every=window_stats(count=1000, mean_ms=100.0)),
                         series("embed", every=window_stats(count=30, mean_ms=4000.0))]
    doc["models"] = [model(count=1030, errors=0, mean_ms=213.6)]
    advice = recommendation(insights().evaluate(doc, T0), "performance")
    assert advice["subject"] == {"type": "series", "name": "embed/llama"}


def test_caching_from_a_low_hit_rate_with_enough_lookups():
    """A series' cache hit rate below recommend_cache_hit_rate over at least 20 lookups:
    raise the cache size or TTL. Fewer lookups, or a good hit rate, say nothing."""
    doc = healthy_document()
    doc["operations"] = [series(every=window_stats(count=200, lookups=50, hits=5))]
    result = insights().evaluate(doc, T0)
    advice = recommendation(result, "caching")
    assert advice["subject"] == {"type": "series", "name": "chat/llama"}
    (finding,) = result["findings"]
    assert finding["kind"] == "poor_cache" and finding["evidence"]["hit_rate"] == 0.1
    assert advice["finding"] == finding["id"]
    assert "10%" in advice["message"] and "50 lookups" in advice["message"]
    assert "size" in advice["message"] and "TTL" in advice["message"]
    for lookups, hits in ((10, 0), (50, 40)):
        doc["operations"] = [series(every=window_stats(count=200, lookups=lookups, hits=hits))]
        quiet = insights().evaluate(doc, T0)
        assert quiet["recommendations"] == [] and quiet["findings"] == []


def test_poor_cache_finding_has_hysteresis():
    """The poor-cache finding opens below the threshold and closes only once the hit rate
    is back above threshold x (1 + hysteresis)."""
    doc = healthy_document()
    engine = insights()
    doc["operations"] = [series(every=window_stats(count=200, lookups=100, hits=20))]
    assert [f["kind"] for f in engine.evaluate(doc, T0)["findings"]] == ["poor_cache"]
    doc["operations"] = [series(every=window_stats(count=200, lookups=100, hits=32))]  # 0.32 < 0.33
    assert [f["started_unix"] for f in engine.evaluate(doc, T0 + 5)["findings"]] == [T0]
    doc["operations"] = [series(every=window_stats(count=200, lookups=100, hits=40))]
    assert engine.evaluate(doc, T0 + 10)["findings"] == []


def test_reliability_from_an_error_rate_citing_model_errors_when_open():
    """An error rate above recommend_error_rate: review logs and configuration; it cites
    the model_errors finding when that is open."""
    doc = healthy_document()
    put_error_rate(doc, 0.07)
    result = insights().evaluate(doc, T0)
    assert result["findings"] == []
    advice = recommendation(result, "reliability")
    assert advice["finding"] is None and advice["subject"]["name"] == "llama"
    assert "logs" in advice["message"] and "configuration" in advice["message"]
    put_error_rate(doc, 0.2)
    cited = recommendation(insights().evaluate(doc, T0), "reliability")
    assert cited["finding"] == "model_errors:model:llama"


# -- a real document -------------------------------------------------------------------------------
@pytest.fixture
def real_daemon(make_daemon):
    """A Daemon in this process, with the default settings."""
    return make_daemon()


def test_a_real_idle_daemons_document_has_no_findings(real_daemon):
    """The document a real, idle Daemon builds has every key the rules read, and trips
    nothing; the result is JSON-ready."""
    rules = Insights(real_daemon.config)
    for t in range(2):
        result = rules.evaluate(real_daemon.document(True), T0 + t)
        assert result == {"findings": [], "recommendations": []}


def test_a_real_document_with_failing_slow_inferences(real_daemon):
    """Events through a real lane and drain: the real document's models and series are read
    the same way as the crafted ones, and the result survives JSON."""
    from ai_analytics import client

    def work() -> None:
        for i in range(30):
            client.emit("generate", 6000.0, model="big", success=i % 3 != 0)

    worker = threading.Thread(target=work)
    worker.start()
    worker.join()
    real_daemon.lanes.scan()
    real_daemon.drain()
    result = Insights(real_daemon.config).evaluate(real_daemon.document(True), T0)
    assert json.loads(json.dumps(result)) == result
    assert [(f["kind"], f["severity"], f["subject"]["name"]) for f in result["findings"]] == [
        ("model_errors", "critical", "big"), ("slow_model", "warning", "big")]
    assert {(r["category"], r["finding"]) for r in result["recommendations"]} == {
        ("reliability", "model_errors:model:big"), ("performance", "slow_model:model:big")}
