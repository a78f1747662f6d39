"""The benchmarks still run: each pytest-benchmark case once, untimed, and the short form of
each script. What they measure is for bench/; here only that they work against the code as it
is (a changed signature in the daemon must fail here, not in someone's benchmark run)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from helpers import REPO


def test_every_pytest_benchmark_case_runs_once() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
         "--benchmark-disable", "bench/"],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout.splitlines()[-1]


def short_form(script: str, tmp_path: Path, *options: str) -> tuple[dict, str]:
    """Run ``bench/<script>`` with ``options`` writing into ``tmp_path``; its results (JSON)
    and its markdown."""
    out, md = tmp_path / "results.json", tmp_path / "results.md"
    result = subprocess.run(
        [sys.executable, f"bench/{script}", *options, "--out", str(out), "--md", str(md),
         "--quiet"],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    return json.loads(out.read_text()), md.read_text()


def test_aggregate_bench_short_form_writes_its_results(tmp_path: Path) -> None:
    results, md = short_form(
        "aggregate_bench.py", tmp_path, "--rounds", "1", "--batch", "4096", "--batches", "1",
        "--drain-threads", "1", "--snapshot-rate", "200", "--events-small", "20000",
        "--events-large", "40000")
    assert results and md.strip()


def test_emit_bench_short_form_measures_every_case(tmp_path: Path) -> None:
    results, md = short_form("emit_bench.py", tmp_path, "--rounds", "1", "--calls", "2000",
                             "--drain-capacity", "4096", "--drain-batches", "1")
    assert set(results["cases"]) == {"noop", "bare", "emit", "emit_python", "emit_enum",
                                     "emit_extended", "emit_extended_python", "emit_drop",
                                     "drain"}
    assert all(case["fastest"] > 0 for case in results["cases"].values())
    assert "emit_enum" in md


def test_instrument_bench_short_form_measures_every_case(tmp_path: Path) -> None:
    results, md = short_form("instrument_bench.py", tmp_path, "--rounds", "1", "--calls",
                             "2000", "--threads", "2")
    assert set(results["cases"]) >= {"noop", "emit", "timed_block", "timed_decorator"}
    assert all(case["fastest"] > 0 for case in results["cases"].values())
    assert len(results["first_calls"]) == 4 and "timed_block" in md


def test_series_bench_short_form_times_every_range(tmp_path: Path) -> None:
    results, _ = short_form("series_bench.py", tmp_path, "--series", "3", "--hours", "0.5",
                            "--polls", "1")
    assert set(results["ranges"]) == {"5m", "1h", "24h", "7d"}
    assert all(r["poll_ms_median"] > 0 for r in results["ranges"].values())


def test_cardinality_bench_short_form_measures_engine_and_daemon(tmp_path: Path) -> None:
    results, md = short_form("cardinality_bench.py", tmp_path, "--engine-series", "32",
                             "--busy-seconds", "12", "--rounds", "1", "--series", "0,3",
                             "--busy-series", "")
    assert [e["case"] for e in results["engine"]] == ["quiet", "busy"]
    assert all(e["operations_ms"]["median"] > 0 for e in results["engine"])
    assert [d["series"] for d in results["daemon"]] == [0, 3]
    assert results["daemon"][1]["received"] == 3 * 20 and "KB per series" in md


def test_http_bench_short_form_times_both_paths_and_forms(tmp_path: Path) -> None:
    results, md = short_form("http_bench.py", tmp_path, "--series", "32", "--llm-shares", "0.5",
                             "--requests", "1", "--snapshots", "1", "--render-rounds", "1")
    mix = results["mixes"]["0.5"]["this checkout"]
    assert mix["events"]["received"] == 32 * results["parameters"]["events_per_series"]
    assert set(mix["first_after_snapshot_ms"]) == {"metrics_gzip", "status_gzip"}
    assert mix["sizes"]["metrics_gzip_bytes"] < mix["sizes"]["metrics_identity_bytes"]
    assert mix["render"]["publish_ms"] > 0 and "/metrics" in md
