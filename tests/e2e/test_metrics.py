"""/metrics with real processes: the rendering and the rules checked by promtool, and end to
end through a real Prometheus server (Debian's package) scraping a real daemon."""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ai_analytics.daemon.http.metrics import render

from helpers import (
    REPO,
    dashboard_queries,
    free_port,
    read_config,
    run_python,
    wait_for,
)

RULES = REPO / "docs" / "prometheus" / "rules.yml"
PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (Debian: apt-get install prometheus; "
    ".ci/run installs it)")


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
