"""What the live page's charts cost the daemon: ``GET /api/series`` over a history of known size.

Usage, from the repository root::

    .venv/bin/python bench/series_bench.py [--series 20] [--hours 24] [--polls 3]
                                           [--out bench/series_results.json]
                                           [--md bench/SERIES.md]

It writes a history like the daemon's (one row per series per 5-s snapshot, through
``HistoryStore.append``) into a temporary state directory, then times one poll of the page
per range: the nine series metrics in turn, then ``events``, each answered by a fresh
``SeriesApi`` (no answer kept from an earlier poll), as the page asks after a snapshot. The
median of ``--polls`` polls is the figure; beside it, one more poll on the same ``SeriesApi``
before any new snapshot (another viewer, or a range switched back: the tables of every
metric are kept, the answers are made again).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ai_analytics.core.history import EVENT_COLUMNS, HistoryStore
from ai_analytics.daemon.http.series_api import METRICS, RANGES, SeriesApi, parse_query

from benchlib.report import RunStart, exit_on_sigterm, header_lines, progress, write_results

HERE = Path(__file__).resolve().parent
SNAPSHOT_SECONDS = 5.0


def window_stats(count: int) -> dict[str, Any]:
    """One series' statistics for a snapshot: every column the history keeps has a value."""
    latency = {"mean": 120.0, "min": 8.0, "max": 900.0, "p50": 100.0, "p90": 300.0,
               "p95": 450.0, "p99": 800.0, "p999": 890.0}
    timing = {"count": count, "mean": 40.0, "p50": 35.0, "p90": 60.0, "p99": 90.0}
    return {"count": count, "successes": count - 1, "errors": 1, "error_rate": 1 / count,
            "throughput_per_s": count / SNAPSHOT_SECONDS, "latency_ms": latency,
            "quality": {"count": count, "mean": 0.9, "min": 0.5, "p10": 0.7},
            "cache": {"lookups": count, "hits": count // 2, "hit_rate": 0.5},
            "ttft_ms": timing, "queue_ms": timing,
            "tokens": {"in_total": count * 10, "out_total": count * 20,
                       "in_per_s": 2.0 * count, "out_per_s": 4.0 * count}}


def build(state_dir: str, series: int, hours: float, log: Any) -> int:
    """A history of ``hours`` of snapshots ending now; the number of snapshots written."""
    store = HistoryStore(state_dir, 1e9, 1e6)
    snapshots = math.ceil(hours * 3600 / SNAPSHOT_SECONDS)
    now = time.time()
    try:
        for index in range(snapshots):
            events = {name: index * 100 for name in EVENT_COLUMNS}
            rows = [{"operation": f"op{j % 4}", "model": f"model{j}",
                     "stats": window_stats(50 + j)} for j in range(series)]
            store.append(now - (snapshots - index) * SNAPSHOT_SECONDS, SNAPSHOT_SECONDS,
                         events, rows)
            if index % 2000 == 0:
                log(f"history: {index}/{snapshots} snapshots")
        return snapshots
    finally:
        store.close()


def poll(api: SeriesApi, range_: str) -> float:
    """Seconds to answer every metric of ``range_``, as one poll of the page asks them."""
    start = time.perf_counter()
    for metric in METRICS:
        api.answer(parse_query(f"metric={metric}&range={range_}"), time.monotonic() + 60)
    return time.perf_counter() - start


def measure(state_dir: str, polls: int) -> dict[str, dict[str, float]]:
    results = {}
    for range_ in RANGES:
        times = []
        api = SeriesApi(state_dir, SNAPSHOT_SECONDS)
        for _ in range(polls):
            api = SeriesApi(state_dir, SNAPSHOT_SECONDS)
            times.append(poll(api, range_))
        results[range_] = {"poll_ms_median": statistics.median(times) * 1e3,
                           "poll_ms_kept": poll(api, range_) * 1e3}
    return results


def markdown(report: dict[str, Any]) -> str:
    p = report["parameters"]
    lines = [*header_lines("/api/series: one poll of the live page", report),
             f"- {p['series']} series, {p['hours']} h of {SNAPSHOT_SECONDS:.0f}-s snapshots "
             f"({p['snapshots']} snapshots, {p['history_bytes'] / 1e6:.0f} MB); "
             f"{len(METRICS)} metrics per poll; median of {p['polls']} polls",
             "", "| range | one poll (ms) | the same poll again, before a new snapshot (ms) |",
             "|---|---:|---:|"]
    for range_, figures in report["ranges"].items():
        lines.append(f"| {range_} | {figures['poll_ms_median']:.0f} "
                     f"| {figures['poll_ms_kept']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--series", type=int, default=20, help="series (default 20)")
    parser.add_argument("--hours", type=float, default=24.0,
                        help="hours of history (default 24)")
    parser.add_argument("--polls", type=int, default=3, help="polls per range (default 3)")
    parser.add_argument("--out", type=Path, default=HERE / "series_results.json")
    parser.add_argument("--md", type=Path, default=HERE / "SERIES.md")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    args = parser.parse_args(argv)
    if args.series < 1 or args.polls < 1 or not args.hours > 0:
        parser.error("--series and --polls must be at least 1, --hours above 0")
    exit_on_sigterm()
    start = RunStart()
    log = progress(args.quiet, time.monotonic())
    with tempfile.TemporaryDirectory(prefix="aibench-series-") as state_dir:
        snapshots = build(state_dir, args.series, args.hours, log)
        size = sum(f.stat().st_size for f in Path(state_dir).iterdir())
        log("polling ...")
        ranges = measure(state_dir, args.polls)
    report = {**start.header(),
              "parameters": {"series": args.series, "hours": args.hours, "polls": args.polls,
                             "snapshots": snapshots, "history_bytes": size},
              "ranges": ranges}
    text = markdown(report)
    print(text)
    write_results(report, args.out, args.md, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
