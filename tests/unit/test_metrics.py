"""/metrics: the Prometheus exposition of the snapshot document, checked against known data
from the statistics engine and from a Daemon in this process; the route on the status
server; the Grafana dashboard's panels and queries."""

from __future__ import annotations

import copy
import gzip
import json
import math
from collections.abc import Iterator

import numpy as np
import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector, CollectorRegistry

from ai_analytics.client import _layout as L
from ai_analytics.core.document import SnapshotDocument
from ai_analytics.daemon.http.metrics import render
from ai_analytics.daemon.http.server import METRICS_TYPE
from ai_analytics.daemon.stats import histogram as H
from ai_analytics.daemon.stats.edge_counts import (
    BUCKETS_SECONDS,
    histogram_section,
    latency_bucket_counts,
)
from ai_analytics.daemon.stats.statistics import Statistics

import documents
from helpers import (
    DASHBOARD,
    add_records,
    dashboard_queries,
    fetch,
    make_records,
)

LABELS = {"operation", "model", "outcome", "direction", "le", "cache", "lane", "state", "gpu",
          "source", "severity", "sink", "cap", "version", "uid"}


# -- helpers ---------------------------------------------------------------------------------
def samples(text: bytes) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a rendered text: (sample name, labels) → value."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text.decode())
            for s in family.samples}


def value(found: dict, name: str, **labels: str) -> float:
    return found[(name, frozenset(labels.items()))]


def types(text: bytes) -> dict[str, str]:
    """# TYPE lines: exposed family name → type."""
    return {line.split()[2]: line.split()[3] for line in text.decode().splitlines()
            if line.startswith("# TYPE ")}


# -- latency_bucket_counts against a real Statistics ----------------------------------------
def test_bucket_counts_are_exact_within_the_band_below_each_edge():
    """From known latencies through the real statistics engine: for every edge e, the count
    at e is between the true count of values <= e / 1.02 and of values < e (a log bucket
    counts toward an edge by its upper edge); count and sum are exact; below 1 µs counts
    everywhere, beyond an hour only in +Inf; since-start and the open interval both count."""
    rng = np.random.default_rng(7)
    spread = np.exp(rng.uniform(np.log(1e-4), np.log(5e6), 20_000))  # 0.1 µs .. 83 min, ms
    edges_ms = np.array(BUCKETS_SECONDS) * 1000
    on_edges = np.concatenate([edges_ms, edges_ms / 1.0199, edges_ms / 1.021, edges_ms * 1.001])
    specials = np.array([0.0, 1e-4, 7.2e6, 1e9])  # 0, 0.1 µs, 2 h, 11 days
    values = np.concatenate([spread, on_edges, specials])
    stats = Statistics(256, 256, 1024, lambda: 1000.0)
    half = len(values) // 2
    add_records(stats, make_records(half, latency=values[:half]), "generate", "llama")
    stats.close_interval()  # the first half into since_start, the rest in the open interval
    add_records(stats, make_records(len(values) - half, latency=values[half:]), "generate",
                "llama")
    add_records(stats, make_records(5, latency=3.0), "embed", "bge")

    rows = latency_bucket_counts(stats, BUCKETS_SECONDS)
    assert [(r[0], r[1]) for r in rows] == [("generate", "llama"), ("embed", "bge")]
    _, _, cumulative, count, total = rows[0]
    assert count == len(values)
    assert math.isclose(total, values.sum() / 1000, rel_tol=1e-12)
    for edge, at_edge in zip(edges_ms, cumulative, strict=True):
        assert np.sum(values <= edge / H.GAMMA) <= at_edge <= np.sum(values < edge), edge
    assert cumulative == sorted(cumulative)
    assert cumulative[0] >= 3  # 0, 0.1 µs and 0.2 µs-ish values: below the first edge
    assert count - cumulative[-1] >= 2  # beyond an hour: in +Inf only
    assert rows[1][2:4] == ([0] * 3 + [5] * 18, 5)  # 3 ms: first counted at le=0.005


def test_a_value_on_an_edge_counts_in_the_next_bucket_up():
    """The stated boundary rule, pinned: 5 ms exactly is in le=0.01, not le=0.005, and a
    value 2.5 % below the edge is in le=0.005: a le count never includes a value above it."""
    stats = Statistics(256, 256, 1024, lambda: 1000.0)
    add_records(stats, make_records(2, latency=[5.0, 5.0 / 1.025]), "op", "m")
    (_, _, cumulative, count, _), = latency_bucket_counts(stats, [0.005, 0.01])
    assert (cumulative, count) == ([1, 2], 2)


def test_ttft_and_queue_histograms_only_for_series_that_report_them():
    """TTFT and queue time come from their own bucket rows; a series without them is left
    out of those histograms (latency lists every series)."""
    stats = Statistics(256, 256, 1024, lambda: 1000.0)
    add_records(stats, make_records(4, latency=100.0, kind=L.KIND_EXTENDED, ttft_ms=20.0,
                                    queue_ms=np.nan, tokens_in=L.TOKENS_ABSENT,
                                    tokens_out=L.TOKENS_ABSENT), "chat", "llama")
    add_records(stats, make_records(3, latency=2.0), "embed", "bge")
    section = histogram_section(stats)
    assert section["le_seconds"] == list(BUCKETS_SECONDS)
    assert [r["operation"] for r in section["request_duration_seconds"]] == ["chat", "embed"]
    (ttft,) = section["time_to_first_token_seconds"]
    assert ttft["count"] == 4 and math.isclose(ttft["sum"], 0.08)
    assert ttft["buckets"][BUCKETS_SECONDS.index(0.01)] == 0
    assert ttft["buckets"][BUCKETS_SECONDS.index(0.025)] == 4
    assert section["queue_duration_seconds"] == []
    json.dumps(section)  # JSON-ready: it goes into state.json and /status


def test_bad_edges_are_refused():
    stats = Statistics(256, 256, 1024, lambda: 1000.0)
    for edges in ([], [0.1, 0.1], [0.0, 1.0], [1.0, float("inf")], [[0.1]]):
        with pytest.raises(ValueError, match="edges"):
            latency_bucket_counts(stats, edges)


# -- a real document from a real Daemon (the document fixture) -------------------------------
def test_the_render_pauses_after_each_family_and_writes_the_same_text(document):
    """``between`` (where the daemon lets a drain pass go first) is called once per family
    made, and changes nothing in the text."""
    pauses = []
    text = render(document, lambda: pauses.append(len(pauses)))
    assert text == render(document)
    assert len(pauses) >= len(types(text)) > 5  # families without samples write no text


def test_rendered_names_types_labels_and_numbers(document):
    """Every family has the ai_analytics_ prefix, counters end in _total, labels come from a
    small fixed set, and the numbers are those of the workload."""
    text = render(document)
    found = samples(text)
    kinds = types(text)
    assert all(name.startswith("ai_analytics_") for name in kinds)
    assert all(name.endswith("_total") for name, kind in kinds.items() if kind == "counter")
    assert all(not name.endswith("_total") for name, kind in kinds.items() if kind != "counter")
    assert {label for _, labels in found for label, _ in labels} <= LABELS
    assert kinds["ai_analytics_request_duration_seconds"] == "histogram"
    assert kinds["ai_analytics_time_to_first_token_seconds"] == "histogram"
    assert kinds["ai_analytics_lane_fill_ratio"] == "gauge"

    gen, emb = {"operation": "generate", "model": "llama"}, {"operation": "embed", "model": "bge"}
    assert value(found, "ai_analytics_requests_total", **gen, outcome="success") == 30
    assert value(found, "ai_analytics_requests_total", **gen, outcome="error") == 10
    assert value(found, "ai_analytics_requests_total", **emb, outcome="success") == 10
    assert value(found, "ai_analytics_requests_total", **emb, outcome="error") == 0
    assert value(found, "ai_analytics_tokens_total", **gen, direction="in") == 4000
    assert value(found, "ai_analytics_tokens_total", **gen, direction="out") == 2000
    assert value(found, "ai_analytics_cache_hits_total", **gen) == 20
    assert value(found, "ai_analytics_cache_misses_total", **gen) == 20
    assert value(found, "ai_analytics_quality_score_mean", **gen) == 0.75
    hist = "ai_analytics_request_duration_seconds"
    assert value(found, f"{hist}_bucket", **gen, le="0.1") == 0
    assert value(found, f"{hist}_bucket", **gen, le="0.25") == 40
    assert value(found, f"{hist}_bucket", **gen, le="+Inf") == 40
    assert value(found, f"{hist}_count", **gen) == 40
    assert math.isclose(value(found, f"{hist}_sum", **gen), 4.8)
    assert value(found, f"{hist}_bucket", **emb, le="0.001") == 0
    assert value(found, f"{hist}_bucket", **emb, le="0.0025") == 10
    ttft = "ai_analytics_time_to_first_token_seconds"
    assert value(found, f"{ttft}_bucket", **gen, le="0.025") == 0
    assert value(found, f"{ttft}_bucket", **gen, le="0.05") == 40
    assert (f"{ttft}_count", frozenset(emb.items())) not in found  # embed passed no TTFT

    assert value(found, "ai_analytics_events_total", outcome="received") == 51
    for outcome in ("dropped", "overwritten", "invalid", "lost_on_restart"):
        assert value(found, "ai_analytics_events_total", outcome=outcome) == 0
    assert value(found, "ai_analytics_events_pending") == 0
    assert value(found, "ai_analytics_cache_size", cache="prompt-cache") == 64
    assert value(found, "ai_analytics_cache_evictions_total", cache="prompt-cache") == 7
    (lane,) = document["lanes"]
    assert value(found, "ai_analytics_lane_fill_ratio", lane=lane["name"]) == 0
    assert value(found, "ai_analytics_lane_fill_ratio_max") == 0
    assert value(found, "ai_analytics_drain_lag_seconds") == 0
    assert value(found, "ai_analytics_findings", severity="critical") == 1  # llama: 25 % errors
    assert value(found, "ai_analytics_build_info", version=document["daemon"]["version"]) == 1
    assert 0 <= value(found, "ai_analytics_system_cpu_ratio") <= 1
    assert value(found, "ai_analytics_system_memory_used_bytes") > 0
    assert value(found, "ai_analytics_daemon_resident_memory_bytes") > 1e6
    assert value(found, "ai_analytics_snapshot_timestamp_seconds") == document["written_unix"]
    assert value(found, "ai_analytics_series") == 2


def reference_text(text: bytes) -> bytes:
    """prometheus_client's own writer (``generate_latest``) over the families parsed from
    ``text``: what the library would have written for the same samples."""
    families = list(text_string_to_metric_families(text.decode()))

    class Parsed(Collector):
        def collect(self) -> Iterator[Metric]:
            return iter(families)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Parsed())
    return generate_latest(registry)


def odd_names(document: dict) -> dict:
    """``document`` with its series renamed to label values that need escaping (quote,
    backslash, newline, non-ASCII) and counts past a million (written with an exponent)."""
    names = {"generate": 'gen "quoted" \\ back\nslash', "embed": "émbed ✓"}
    document = copy.deepcopy(document)
    for row in (*document["operations"], *document["histograms"]["request_duration_seconds"],
                *document["histograms"]["time_to_first_token_seconds"]):
        row["operation"] = names[row["operation"]]
    document["operations"][0]["windows"]["since_start"]["successes"] = 12_345_678
    document["histograms"]["request_duration_seconds"][0]["count"] = 2_500_000
    return document


def test_the_text_is_what_prometheus_client_writes(document):
    """Byte for byte, the text equals prometheus_client's writer over the same samples:
    HELP and TYPE lines, _total, sorted label names, escaped label values, Go's number
    format, histogram lines; with label values that need escaping and large counts, and
    with the GPU and sink sections."""
    gpu = documents.gpu(devices=[documents.gpu_device(0, 87, memory_used_mb=1024.0)])
    for doc in (document, odd_names(document),
                {**document, "resources": {**document["resources"], "gpu": gpu},
                 "sinks": documents.sinks()}):
        text = render(doc)
        assert text == reference_text(text)
    found = samples(render(odd_names(document)))
    odd = {"operation": 'gen "quoted" \\ back\nslash', "model": "llama"}
    assert value(found, "ai_analytics_requests_total", **odd, outcome="success") == 12_345_678
    assert value(found, "ai_analytics_request_duration_seconds_count", **odd) == 2_500_000
    assert value(found, "ai_analytics_requests_total", operation="émbed ✓", model="bge",
                 outcome="success") == 10


def test_series_show_only_what_they_report(document):
    """A series that passed no tokens, no cache lookup, no quality, no TTFT and no queue
    time (embed) has requests and latency lines only; the LLM series (generate) has them
    all; every family present has samples (no HELP without samples)."""
    text = render(document)
    found = samples(text)
    emb = frozenset({"operation": "embed", "model": "bge"}.items())
    for_embed = {name for name, labels in found
                 if {("operation", "embed"), ("model", "bge")} <= labels}
    assert {name.rsplit("_", 1)[0] if "duration" in name else name for name in for_embed} == {
        "ai_analytics_requests_total", "ai_analytics_request_duration_seconds"}
    assert ("ai_analytics_request_duration_seconds_count", emb) in found
    gen = {("operation", "generate"), ("model", "llama")}
    for_gen = {name for name, labels in found if gen <= labels}
    for name in ("tokens_total", "cache_hits_total", "cache_misses_total",
                 "quality_score_mean", "time_to_first_token_seconds_bucket"):
        assert f"ai_analytics_{name}" in for_gen, name
    described = {line.split()[2] for line in text.decode().splitlines()
                 if line.startswith("# HELP ")}
    sampled = {family.name for family in text_string_to_metric_families(text.decode())
               if family.samples}
    assert {name.removesuffix("_total") for name in described} == sampled


def test_damaged_histogram_rows_give_no_samples(document):
    """A histogram row with counts that are not ints, a wrong number of buckets, or no sum
    is left out; the other rows are written."""
    document = copy.deepcopy(document)
    rows = document["histograms"]["request_duration_seconds"]
    good = copy.deepcopy(rows[0])
    rows[:] = [good, {**good, "operation": "a", "buckets": good["buckets"][:-1]},
               {**good, "operation": "b", "sum": None},
               {**good, "operation": "c", "buckets": ["1", *good["buckets"][1:]]},
               {**good, "operation": "d", "count": 1.5}]
    found = samples(render(document))
    counts = {dict(labels)["operation"] for name, labels in found
              if name == "ai_analytics_request_duration_seconds_count"}
    assert counts == {good["operation"]}


def test_missing_sections_give_no_samples(document):
    """No GPU (as NVML reports it without a driver), no sinks section (an older document):
    no gpu_* and no sink_circuit_state samples. An empty document, or none at all, renders
    to nothing."""
    no_gpu = documents.gpu(available=False)
    document = {k: v for k, v in document.items() if k != "sinks"}
    found = samples(render({**document, "resources": {**document["resources"], "gpu": no_gpu}}))
    names = {name for name, _ in found}
    assert not {n for n in names if n.startswith("ai_analytics_gpu_")}
    assert "ai_analytics_sink_circuit_state" not in names
    assert render({}) == b""
    assert render(None) == b""


def test_gpu_and_sink_sections_when_present(document):
    """A GPU section (as the NVML sampler writes it) and the circuit breaker's sinks section
    become per-GPU and per-sink gauges, in base units."""
    gpu = documents.gpu(devices=[
        documents.gpu_device(0, 87, name="H200", memory_used_mb=1024.0, temperature_c=41,
                             power_w=312.5),
        documents.gpu_device(1, None, name="H200", memory_used_mb=None, memory_total_mb=None,
                             temperature_c=None, power_w=None)])
    gpu["age_seconds"] = 0.3
    sinks = documents.sinks()
    sinks["state"].update(state="open", failures=5, consecutive_failures=5, skipped=3,
                          last_error="OSError: disk full")
    sinks["history"]["state"] = "half_open"
    sinks["history"]["backlog"]["snapshots"] = 2
    # Sinks /metrics knows by no name: one closed, one whose breaker is disabled.
    sinks = {**sinks, "other": {"state": "closed"}, "off": {"state": "disabled", "skipped": 0}}
    found = samples(render({**document, "resources": {**document["resources"], "gpu": gpu},
                            "sinks": sinks}))
    assert value(found, "ai_analytics_gpu_utilization_ratio", gpu="0") == 0.87
    assert value(found, "ai_analytics_gpu_memory_used_bytes", gpu="0") == 1024 * 1024 * 1024
    assert value(found, "ai_analytics_gpu_memory_total_bytes", gpu="0") == 143771 * 1024 * 1024
    assert value(found, "ai_analytics_gpu_temperature_celsius", gpu="0") == 41
    assert value(found, "ai_analytics_gpu_power_watts", gpu="0") == 312.5
    assert ("ai_analytics_gpu_utilization_ratio", frozenset({("gpu", "1")})) not in found
    assert value(found, "ai_analytics_resource_sample_age_seconds", source="gpu") == 0.3
    assert value(found, "ai_analytics_sink_circuit_state", sink="state") == 2
    assert value(found, "ai_analytics_sink_circuit_state", sink="history") == 1
    assert value(found, "ai_analytics_sink_circuit_state", sink="other") == 0
    assert ("ai_analytics_sink_circuit_state", frozenset({("sink", "off")})) not in found
    assert value(found, "ai_analytics_sink_skipped_writes_total", sink="state") == 3


def test_metrics_route_on_the_status_server(serve, document):
    """GET and HEAD /metrics answer the real rendering of the served document with the
    text format's content type, rendered once for both and for the gzip form; other methods
    get 405; a rendering that raises a 500, and the server serves on; /status is unchanged;
    no document yet: an empty body."""
    holder: dict[str, object] = {"doc": None}

    def metrics(served: SnapshotDocument | None) -> bytes:
        if served is not None and "broken" in served:
            raise RuntimeError("boom")
        return render(served)

    server = serve(snapshot=lambda: holder["doc"], metrics=metrics)
    assert fetch(server, path="/metrics")[::2] == (200, b"")
    holder["doc"] = document
    status, headers, body = fetch(server, path="/metrics")
    assert (status, headers["Content-Type"], body) == (200, METRICS_TYPE, render(document))
    assert fetch(server, "HEAD", "/metrics")[::2] == (200, b"")
    status, headers, packed = fetch(server, path="/metrics", headers={"Accept-Encoding": "gzip"})
    assert headers["Content-Encoding"] == "gzip" and gzip.decompress(packed) == body
    assert server.renders == {"metrics": 1, "metrics.gzip": 1}
    holder["doc"] = {**document, "broken": True}
    assert fetch(server, path="/metrics")[0] == 500
    holder["doc"] = document
    assert fetch(server, path="/metrics")[0] == 200
    assert fetch(server, "POST", "/metrics")[0] == 405
    assert fetch(server, path="/status")[0] == 200
    status, _, body = fetch(server, path="/nope")
    assert status == 404 and b"/metrics" in body


# -- the Grafana dashboard -------------------------------------------------------------------


def test_grafana_dashboard_loads_and_has_the_panels():
    """Valid JSON in Grafana's dashboard schema, a Prometheus data-source variable used by
    every panel, panels for latency percentiles, throughput, error rate, GPU and drops, laid
    out without overlap."""
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["schemaVersion"] >= 36 and dashboard["uid"] and dashboard["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    titles = " | ".join(p["title"] for p in panels).lower()
    for topic in ("latency percentiles", "throughput", "error rate", "gpu utilization",
                  "gpu memory", "dropped"):
        assert topic in titles, topic
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"] and all(t["expr"] for t in panel["targets"])
    cells = set()
    for panel in dashboard["panels"]:
        g = panel["gridPos"]
        assert g["x"] + g["w"] <= 24
        area = {(x, y) for x in range(g["x"], g["x"] + g["w"])
                for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & area, f"{panel['title']} overlaps another panel"
        cells |= area
    latency = " ".join(e for t, e in dashboard_queries() if t.startswith("Latency"))
    assert "histogram_quantile(0.99, " in latency and "_bucket" in latency


