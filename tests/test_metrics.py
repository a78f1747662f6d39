"""/metrics: the Prometheus exposition of the snapshot document, checked against known data,
against promtool, and end to end through a real Prometheus server (Debian's package)."""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ai_analytics.client import _layout as L
from ai_analytics.daemon.http.metrics import MetricsEndpoint, render
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
    REPO,
    add_records,
    fetch,
    free_port,
    make_records,
    read_config,
    run_python,
    wait_for,
)

RULES = REPO / "docs" / "prometheus" / "rules.yml"
DASHBOARD = REPO / "docs" / "grafana" / "ai-analytics.json"
PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (Debian: apt-get install prometheus; "
    ".ci/run installs it)")
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


# -- a real document from a real Daemon ------------------------------------------------------
@pytest.fixture
def document(make_config, make_daemon) -> dict:
    """The snapshot document of an in-process Daemon after a known workload, emitted on a
    thread of its own (its own lane): generate/llama 40 x 120 ms (10 errors, TTFT 30 ms,
    tokens 100 in / 50 out, half cache hits, quality 0.75), embed/bge 10 x 2 ms, and one
    cache_state."""
    from ai_analytics import client
    from ai_analytics.daemon import load_config

    daemon = make_daemon(load_config(make_config()))

    def work() -> None:
        for i in range(40):
            client.emit("generate", 120.0, model="llama", success=i % 4 != 0,
                        quality=0.75, cache_hit=i % 2 == 0, ttft_ms=30.0, tokens_in=100,
                        tokens_out=50)
        for _ in range(10):
            client.emit("embed", 2.0, model="bge")
        client.cache_state("prompt-cache", size=64, evictions=7)

    worker = threading.Thread(target=work)
    worker.start()
    worker.join()
    daemon.resources.sample_system()
    time.sleep(0.05)
    daemon.resources.sample_system()  # CPU percentages need two samples
    daemon.lanes.scan()
    daemon.drain()
    assert daemon.save(running=True)
    published = daemon.last_document
    assert published is not None
    return published


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


def test_endpoint_renders_each_document_once():
    """MetricsEndpoint serves the same bytes for the same published document, and a new
    rendering for a new one."""
    first_document, second_document = documents.snapshot(), documents.snapshot()
    first_document["events"]["received"] = 1
    second_document["events"]["received"] = 2
    holder = {"doc": first_document}
    endpoint = MetricsEndpoint(lambda: holder["doc"])
    first = endpoint()
    assert endpoint() is first
    holder["doc"] = second_document
    assert value(samples(endpoint()), "ai_analytics_events_total", outcome="received") == 2


def test_metrics_route_on_the_status_server(serve):
    """GET and HEAD /metrics answer the text format with its content type; other methods
    get 405; a raising callback a 500, and the server serves on; /status is unchanged."""
    calls = {"n": 0}

    def metrics() -> bytes:
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("boom")
        return b"ai_analytics_up 1\n"

    server = serve(metrics=metrics)
    status, headers, body = fetch(server, path="/metrics")
    assert (status, headers["Content-Type"], body) == (200, METRICS_TYPE, b"ai_analytics_up 1\n")
    assert fetch(server, "HEAD", "/metrics")[::2] == (200, b"")
    assert fetch(server, path="/metrics")[0] == 500
    assert fetch(server, path="/metrics")[0] == 200
    assert fetch(server, "POST", "/metrics")[0] == 405
    assert fetch(server, path="/status")[0] == 200
    status, _, body = fetch(server, path="/nope")
    assert status == 404 and b"/metrics" in body


# -- promtool ----------------------------------------------------------------------------------
@needs_promtool
def test_promtool_check_metrics_reports_nothing(document):
    """The rendered text passes promtool's linter (names, units, suffixes, HELP) silently,
    GPU and sink sections included."""
    gpu = {"available": True, "age_seconds": 0.1, "devices": [
        {"index": 0, "utilization_percent": 50, "memory_used_mb": 10.0,
         "memory_total_mb": 80.0, "temperature_c": 40, "power_w": 100.0}]}
    text = render({**document, "resources": {**document["resources"], "gpu": gpu},
                   "sinks": {"state": {"state": "closed", "skipped": 0}}})
    result = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True,
                            timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == b"" and result.stderr.strip() == b""


@needs_promtool
def test_promtool_checks_rules_and_configs():
    """rules.yml parses, its unit tests (rules.test.yml: every alert fires on its
    bottleneck, p99 and ratios come out as computed by hand) pass, and both scrape configs
    are valid."""
    commands = [
        ["check", "rules", str(RULES)],
        ["test", "rules", str(RULES.with_name("rules.test.yml"))],
        ["check", "config", str(RULES.with_name("prometheus.yml"))],
        ["check", "config", "--agent", str(RULES.with_name("agent.yml"))],
    ]
    for command in commands:
        result = subprocess.run([PROMTOOL, *command], capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"


# -- the Grafana dashboard -------------------------------------------------------------------
def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every panel target."""
    dashboard = json.loads(DASHBOARD.read_text())
    return [(panel["title"], target["expr"]) for panel in dashboard["panels"]
            for target in panel.get("targets", [])]


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


# -- end to end through a real Prometheus ----------------------------------------------------
@contextlib.contextmanager
def real_daemon(daemon_factory, make_config) -> Iterator[tuple[str, int]]:
    """(host, port) of a real ai-analyticsd subprocess serving /metrics."""
    config = make_config()
    port = read_config(config)["http_port"]
    daemon = daemon_factory(config)
    try:
        yield "127.0.0.1", port
    finally:
        assert daemon.stop() == 0


@contextlib.contextmanager
def prometheus(tmp_path: Path, target: tuple[str, int]) -> Iterator[Callable[[str], list]]:
    """A real Prometheus on a free loopback port scraping ``target`` every second, with
    rules.yml loaded; yields a query function (instant query → result list). Terminated,
    waited for and reaped at the end."""
    assert PROMETHEUS is not None
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(json.dumps({  # JSON is YAML
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s",
                   "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [{"job_name": "ai-analytics",
                            "static_configs": [{"targets": [f"{target[0]}:{target[1]}"]}]}],
    }))
    log_path = tmp_path / "prometheus.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, cwd=tmp_path)
    base = f"http://127.0.0.1:{port}"
    try:
        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"prometheus exited {proc.returncode}:\n"
                                     f"{log_path.read_text(errors='replace')}")
            try:
                with urllib.request.urlopen(f"{base}/-/ready", timeout=2) as response:
                    return response.status == 200
            except (urllib.error.URLError, OSError):
                return False

        wait_for(ready, timeout=20, interval=0.1, what="prometheus to be ready")

        def query(expr: str) -> list:
            url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    answer = json.loads(response.read())
            except urllib.error.HTTPError as error:
                raise AssertionError(f"{expr}: {error.code} {error.read()!r}") from None
            assert answer["status"] == "success", answer
            return answer["data"]["result"]

        yield query
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def scalar(result: list) -> float | None:
    return float(result[0]["value"][1]) if len(result) == 1 else None


WORKLOAD = """
from ai_analytics import client
for i in range({n}):
    client.emit("generate", {latency_ms}, model="llama", success=i % 10 != 0)
"""


@pytest.mark.skipif(PROMETHEUS is None, reason="prometheus not installed (Debian: apt-get "
                    "install prometheus; .ci/run installs it)")
def test_prometheus_scrapes_the_known_workload(tmp_path, namespace, make_config,
                                               daemon_factory):
    """300 events (200 at 5 ms with 20 errors, 100 at 2 s) reach a real Prometheus through
    /metrics: the counters are exact, the buckets are where the stated rule puts them, and
    histogram_quantile's p99 falls in the (1 s, 2.5 s] bucket at exactly Prometheus's
    interpolation; the recording rules evaluate and every dashboard query parses."""
    deadline = time.monotonic() + 40  # with start and stop, the test stays under a minute
    with real_daemon(daemon_factory, make_config) as target, \
            prometheus(tmp_path, target) as query:
        def total() -> float | None:
            return scalar(query("sum(ai_analytics_requests_total)"))

        # Two phases, so that the counters have a sample before the second: increase()
        # and rate() see it grow.
        run_python(WORKLOAD.format(n=100, latency_ms=5.0), namespace)
        wait_for(lambda: total() == 100, timeout=deadline - time.monotonic(), interval=0.2,
                 what="Prometheus to scrape the first 100 events")
        run_python(WORKLOAD.format(n=100, latency_ms=5.0), namespace)
        run_python(WORKLOAD.format(n=100, latency_ms=2000.0).replace("i % 10 != 0", "True"),
                   namespace)
        wait_for(lambda: total() == 300, timeout=deadline - time.monotonic(), interval=0.2,
                 what="Prometheus to scrape all 300 events")

        outcomes = {r["metric"]["outcome"]: float(r["value"][1])
                    for r in query("sum by (outcome) (ai_analytics_requests_total)")}
        assert outcomes == {"success": 280, "error": 20}
        hist = "ai_analytics_request_duration_seconds"
        assert scalar(query(f"sum({hist}_count)")) == 300
        assert math.isclose(scalar(query(f"sum({hist}_sum)")), 200 * 0.005 + 100 * 2.0)
        buckets = {float(r["metric"]["le"]): float(r["value"][1])
                   for r in query(f"sum by (le) ({hist}_bucket)")}
        # 5 ms lies on the 0.005 edge: by the stated rule it counts in le=0.01.
        assert buckets[0.005] == 0 and buckets[0.01] == 200
        assert buckets[1.0] == 200 and buckets[2.5] == 300 and buckets[math.inf] == 300

        p99 = scalar(query(f"histogram_quantile(0.99, sum by (le) ({hist}_bucket))"))
        assert p99 is not None and 1.0 < p99 <= 2.5  # the true p99, 2 s, is in (1, 2.5]
        assert math.isclose(p99, 1.0 + 1.5 * (0.99 * 300 - 200) / 100)  # linear in bucket
        p50 = scalar(query(f"histogram_quantile(0.5, sum by (le) ({hist}_bucket))"))
        assert p50 is not None and 0.005 < p50 <= 0.01
        grown = scalar(query("sum(increase(ai_analytics_requests_total[1m]))"))
        assert grown is not None and grown >= 200  # at least the second phase's events
        assert scalar(query('sum(ai_analytics_events_total{outcome="received"})')) == 300

        # rules.yml, evaluated every second by this Prometheus.
        recorded = wait_for(
            lambda: scalar(query("operation:ai_analytics_request_duration_seconds:p99_5m"
                                 '{operation="generate"} > 0')),
            timeout=max(1.0, deadline - time.monotonic()), interval=0.2,
            what="the p99 recording rule")
        assert 1.0 < recorded <= 2.5
        for title, expr in dashboard_queries():
            for name, value_ in (("$__rate_interval", "1m"), ("$job", ".*"),
                                 ("$instance", ".*"), ("$operation", ".*"), ("$model", ".*")):
                expr = expr.replace(name, value_)
            result = query(expr)  # raises on a query Prometheus cannot parse
            if title.startswith(("Latency", "Throughput", "Error rate", "Dropped")):
                assert result, f"{title}: no data for {expr}"
