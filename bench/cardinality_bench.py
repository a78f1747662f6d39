"""Memory and time at the cardinality cap: the daemon's RSS per series, and what the
statistics engine's outputs cost with 1,024 series.

Usage, from the repository root::

    .venv/bin/python bench/cardinality_bench.py [--series 0,10,100,1024] [--busy-series 1024]
                                                [--busy-seconds 320] [--busy-rate 20]
                                                [--rounds 15] [--engine-series 1024]
                                                [--no-engine] [--no-daemon] [--quick] [--quiet]
                                                [--before bench/cardinality_before.json]
                                                [--out bench/cardinality_results.json]
                                                [--md bench/CARDINALITY.md]

Two workloads: series that exist but are quiet, and series that are all busy:

``quiet``
    20 events per series, once (lognormal latencies, a median per series from 2 to 500 ms,
    sigma 0.8), then nothing: the memory a series costs just by existing.
``busy``
    Every series gets ``--busy-rate`` events every second for ``--busy-seconds`` (more than
    the 5-minute window, so every window's slots are full): the same lognormal spread, a
    quality score on half the events, a cache lookup on a third, and one series in four an
    LLM series (time to first token, queue time and token counts on each event).

The engine part (in this process, the settings of the daemon's main() applied first, as
``tuning`` in the results): a ``Statistics`` with the daemon's default caps and 1,024 series (32
operations x 32 models), an injected clock. For ``quiet``, one batch of the 20 events per
series; for ``busy``, one batch per second of the clock over ``--busy-seconds``, and a capture
every second (a daemon with ``snapshot_interval_seconds: 1``) whose ``operations()`` are
computed every fifth second (a snapshot thread that falls behind; before ``capture()`` existed,
``close_interval()`` every second). Timed: ``Statistics.add`` per record over the busy fill;
then ``--rounds`` times (each on a fresh capture): ``capture()`` (on the drain thread),
``operations()``, ``interval()`` and ``histogram_section`` of that capture (on the snapshot
thread). Between two ``busy`` rounds the clock moves on by the default snapshot interval (5 s),
with a batch each second, as between two snapshots of a daemon: every window has seconds to add
and to drop. Between two ``quiet`` rounds it stands, with one event more per series. The
previous round's answers are released before the next is timed. Median and fastest in ms. On
code without ``capture()`` (before it existed) the same rows come from
``Statistics.operations()``, ``close_interval()`` and ``histogram_section(stats)``, all on the
drain thread. The process's RSS growth over the fill is reported too.

The daemon part (``--no-daemon`` leaves it out): a real ``python -m ai_analytics.daemon`` per
case (``batch_timeout_seconds: 0.05``, ``snapshot_interval_seconds: 1``, every other setting
at its default), one producer process emitting through ``client.emit``. For each count in
``--series``, the ``quiet`` workload: once the state file counts every event (and two more
snapshots were written, so the outputs ran at full size), the daemon's VmRSS. For each count
in ``--busy-series``, the ``busy`` workload: VmRSS at the end (and its peak, VmHWM). Per
series: (RSS with N series - RSS idle) / N.

The markdown table goes to ``--md`` with the date, machine and command; every figure to
``--out`` as JSON. With ``--before``, a results file of an earlier run (the same script run
on the earlier code) is shown beside. Targets print as PASS or FAIL lines; they never make
the script fail. The machine may be shared: compare figures from one run, as ratios.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ai_analytics.client._segments import NAMESPACE_ENV

from benchlib.as_daemon import tune_like_the_daemon
from benchlib.daemon import DaemonProcess, events_total
from benchlib.proc import proc_status
from benchlib.report import RunStart, exit_on_sigterm, header_lines, target_lines, write_results

HERE = Path(__file__).resolve().parent
KB = 1024
MB = 1024 * 1024
TARGET_KB_PER_SERIES = 64
TARGET_DAEMON_MB = 150
TARGET_OPERATIONS_MS = 30
TARGET_CAPTURE_MS = 2
QUIET_EVENTS = 20
CLOCK_START_S = 100_000

# The producer: series i is (op<i % 32>, m<i // 32>); argv: series, events per series per
# second (or in all, for seconds == 0), seconds, seed. One series in four is an LLM series
# in the busy workload.
PRODUCER = r"""
import math, random, sys, time
from ai_analytics import client
series, per, seconds, seed = map(int, sys.argv[1:5])
rng = random.Random(seed)
names = [(f"op{i % 32}", f"m{i // 32}") for i in range(series)]
mus = [rng.uniform(math.log(2), math.log(500)) for _ in range(series)]

def one(i, busy):
    op, model = names[i]
    latency = rng.lognormvariate(mus[i], 0.8)
    if not busy:
        client.emit(op, latency, model=model)
        return
    r = rng.random()
    quality = r if r < 0.5 else None
    cache = (r < 0.7) if r < 0.33 else None
    if i % 4 == 0:
        client.emit(op, latency, model=model, success=r > 0.02, quality=quality,
                    cache_hit=cache, ttft_ms=latency / 5, queue_ms=latency / 20,
                    tokens_in=200 + int(r * 800), tokens_out=int(r * 400))
    else:
        client.emit(op, latency, model=model, success=r > 0.02, quality=quality,
                    cache_hit=cache)

if seconds == 0:
    for k in range(per):
        for i in range(series):
            one(i, False)
        time.sleep(0.02)
else:
    start = time.monotonic()
    slices = 10
    for tick in range(seconds * slices):
        for k in range(per * (tick % slices + 1) // slices - per * (tick % slices) // slices):
            for i in range(series):
                one(i, True)
        pause = start + (tick + 1) / slices - time.monotonic()
        if pause > 0:
            time.sleep(pause)
print("done", flush=True)
"""


# -- the engine in this process ------------------------------------------------------------
class ManualClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def rss_mb() -> float:
    return proc_status(os.getpid())["VmRSS"] / KB


def batch(rng: Any, series: int, per: int, second: float, busy: bool) -> Any:
    """``per`` records per series stamped within ``second``, and their name ids' indexes."""
    import numpy as np

    from ai_analytics.client import _layout as L
    from ai_analytics.daemon.ingest.records import RECORD_DTYPE

    n = series * per
    sid = np.tile(np.arange(series), per)
    medians = np.exp(np.random.default_rng(1).uniform(np.log(2), np.log(500), series))
    records = np.zeros(n, RECORD_DTYPE)
    records["ts_ns"] = ((second + rng.uniform(0, 0.999, n)) * 1e9).astype(np.int64)
    records["latency_ms"] = medians[sid] * rng.lognormal(0, 0.8, n)
    records["success"] = rng.random(n) > 0.02
    records["quality"] = np.nan
    records["cache_hit"] = L.CACHE_ABSENT
    if busy:
        r = rng.random(n)
        records["quality"] = np.where(r < 0.5, r, np.nan)
        records["cache_hit"] = np.where(r < 0.33, np.where(r < 0.23, L.CACHE_HIT, L.CACHE_MISS),
                                        L.CACHE_ABSENT)
        llm = sid % 4 == 0
        records["kind"] = np.where(llm, L.KIND_EXTENDED, 0)
        records["ttft_ms"] = np.where(llm, records["latency_ms"] / 5, np.nan)
        records["queue_ms"] = np.where(llm, records["latency_ms"] / 20, np.nan)
        records["tokens_in"] = np.where(llm, 200 + (r * 800).astype(np.int64), L.TOKENS_ABSENT)
        records["tokens_out"] = np.where(llm, (r * 400).astype(np.int64), L.TOKENS_ABSENT)
    return records, sid


def engine_case(case: str, series: int, rate: int, seconds: int, rounds: int
                ) -> dict[str, Any]:
    import numpy as np

    from ai_analytics.core.config import Config
    from ai_analytics.daemon.stats import edge_counts
    from ai_analytics.daemon.stats.statistics import Statistics

    config = Config()
    snapshot_seconds = round(config.snapshot_interval_seconds)
    clock = ManualClock(CLOCK_START_S)
    gc.collect()
    before = rss_mb()
    stats = Statistics(config.max_operations, config.max_models, config.max_series, clock)
    ops = np.array([stats.registry.name_id(f"op{i % 32}") for i in range(series)])
    models = np.array([stats.registry.name_id(f"m{i // 32}") for i in range(series)])
    rng = np.random.default_rng(7)
    has_capture = hasattr(stats, "capture")
    add_s, added, capture_ms = 0.0, 0, []
    busy = case == "busy"
    for second in range(seconds if busy else 1):
        clock.now = CLOCK_START_S + second
        records, sid = batch(rng, series, rate if busy else QUIET_EVENTS, clock.now, busy)
        t0 = time.perf_counter()
        stats.add(records, ops[sid], models[sid])
        add_s += time.perf_counter() - t0
        added += len(records)
        if busy:  # one snapshot a second, as the daemon with snapshot_interval_seconds: 1
            t0 = time.perf_counter()
            if has_capture:
                capture = stats.capture()
            else:
                stats.close_interval()
            capture_ms.append((time.perf_counter() - t0) * 1e3)
            if has_capture and second % 5 == 0:  # a snapshot thread that takes every fifth
                capture.operations()
    grown = rss_mb() - before
    timings: dict[str, list[float]] = {"capture": [], "operations": [], "interval": [],
                                       "histograms": []}
    gc.disable()
    try:
        for _ in range(rounds):
            # The previous round's answers go first: freeing them (~9 ms of dicts at 1,024
            # busy series) is the cost of whoever held them, not of the next computation.
            rows = capture = None
            if busy:  # the clock moves on by a snapshot interval, a batch each second
                for _ in range(snapshot_seconds):
                    clock.now += 1
                    records, sid = batch(rng, series, rate, clock.now, busy)
                    stats.add(records, ops[sid], models[sid])
            else:  # a small batch, so that each capture closes an interval with events
                records, sid = batch(rng, series, 1, clock.now, busy)
                stats.add(records, ops[sid], models[sid])
            if has_capture:
                t0 = time.perf_counter()
                capture = stats.capture()
                t1 = time.perf_counter()
                rows = capture.operations()
                t2 = time.perf_counter()
                capture.interval()
                t3 = time.perf_counter()
                edge_counts.histogram_section(capture)
                t4 = time.perf_counter()
                spans = {"capture": t1 - t0, "operations": t2 - t1, "interval": t3 - t2,
                         "histograms": t4 - t3}
            else:  # before capture(): the same outputs, from the live engine
                t0 = time.perf_counter()
                rows = stats.operations()
                t1 = time.perf_counter()
                edge_counts.histogram_section(stats)
                t2 = time.perf_counter()
                stats.close_interval()
                t3 = time.perf_counter()
                spans = {"operations": t1 - t0, "histograms": t2 - t1, "interval": t3 - t2}
            for name, span in spans.items():
                timings[name].append(span * 1e3)
            assert len(rows) == series, len(rows)
    finally:
        gc.enable()
    result: dict[str, Any] = {
        "case": case, "series": series, "capture_api": has_capture,
        "events_per_series_per_s": rate if busy else None, "seconds": seconds if busy else None,
        "add_ns_per_record": add_s / added * 1e9, "records": added,
        "rss_growth_mb": grown, "rss_growth_kb_per_series": grown * KB / series,
    }
    for name, values in timings.items():
        if has_capture or name != "capture":
            result[f"{name}_ms"] = {"median": statistics.median(values), "min": min(values)}
    if capture_ms:
        result["capture_during_fill_ms"] = {"median": statistics.median(capture_ms),
                                            "max": max(capture_ms)}
    return result


# -- a real daemon -------------------------------------------------------------------------
def daemon_case(case: str, series: int, rate: int, seconds: int, log: Any) -> dict[str, Any]:
    namespace = f"aibench-card-{os.getpid()}-{case}-{series}"
    with tempfile.TemporaryDirectory(prefix="aibench-card-") as tmp:
        daemon = DaemonProcess(Path(tmp), namespace, batch_timeout_seconds=0.05,
                               snapshot_interval_seconds=1)
        with daemon:
            daemon.wait_for(daemon.state, 30.0, "the first state file")
            busy = case == "busy"
            expected = series * (rate * seconds if busy else QUIET_EVENTS)
            peak_during = 0.0
            if series:
                env = {**os.environ, NAMESPACE_ENV: namespace}
                args = [str(series), str(rate if busy else QUIET_EVENTS),
                        str(seconds if busy else 0), "1"]
                producer = subprocess.Popen([sys.executable, "-c", PRODUCER, *args], env=env,
                                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                while producer.poll() is None:
                    peak_during = max(peak_during, proc_status(daemon.pid)["VmRSS"] / KB)
                    time.sleep(0.5)
                _, err = producer.communicate()
                if producer.returncode != 0:
                    raise RuntimeError(f"producer failed: {err.decode()[-2000:]}")
            after = time.time()

            def settled() -> dict[str, Any] | None:
                doc = daemon.state()
                if doc is None or doc["written_unix"] < after:
                    return None
                done = events_total(doc) >= expected and doc["events"]["pending"] == 0
                return doc if done else None

            doc = daemon.wait_for(settled, 60.0, f"{expected} events counted")
            written = doc["written_unix"]
            # Two more snapshots: the outputs have run at full size.
            daemon.wait_for(lambda: (daemon.state() or {}).get("written_unix", 0) > written + 1.5,
                            30.0, "two more snapshots")
            status = proc_status(daemon.pid)
            doc = daemon.state() or doc
            result = {
                "case": case, "series": series, "expected_events": expected,
                "received": doc["events"]["received"], "dropped": doc["events"]["dropped"],
                "series_seen": doc["cardinality"]["series"],
                "rss_mb": status["VmRSS"] / KB, "hwm_mb": status.get("VmHWM", 0) / KB,
                "rss_anon_mb": status.get("RssAnon", 0) / KB,
                "peak_rss_during_load_mb": peak_during,
            }
            log(f"daemon {case} {series} series: RSS {result['rss_mb']:.1f} MB "
                f"(peak {result['hwm_mb']:.1f}), {result['received']} received, "
                f"{result['dropped']} dropped")
            return result


# -- the report ----------------------------------------------------------------------------
def measured_code() -> str:
    """The commit of the measured ai_analytics (this interpreter's install): a run of this
    script with another checkout's interpreter measures that checkout. No path: the results
    name no machine paths."""
    import ai_analytics.daemon

    where = Path(ai_analytics.daemon.__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "-C", str(where), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return f"the checkout at {commit}"


def per_series(daemon: list[dict[str, Any]]) -> None:
    idle = next((d["rss_mb"] for d in daemon if d["series"] == 0 and "rss_mb" in d), None)
    for d in daemon:
        if idle is not None and d.get("series") and "rss_mb" in d:
            d["kb_per_series"] = (d["rss_mb"] - idle) * KB / d["series"]


def table(report: dict[str, Any], before: dict[str, Any] | None) -> str:
    def find(rep: dict[str, Any] | None, part: str, case: str, series: int) -> dict[str, Any]:
        if rep is None:
            return {}
        return next((r for r in rep.get(part, []) if r.get("case") == case
                     and r.get("series") == series), {})

    def cell(value: Any, fmt: str = "{:.1f}") -> str:
        return "n/a" if value is None else fmt.format(value)

    lines = ["| daemon (real process) | series | RSS MB | peak MB | KB per series |"
             + (" before: RSS MB | before: KB per series |" if before else ""),
             "|---|---:|---:|---:|---:|" + ("---:|---:|" if before else "")]
    for d in report.get("daemon", []):
        b = find(before, "daemon", d.get("case", ""), d.get("series", -1))
        lines.append(f"| {d.get('case')} | {d.get('series')} | {cell(d.get('rss_mb'))} | "
                     f"{cell(d.get('hwm_mb'))} | {cell(d.get('kb_per_series'))} |"
                     + (f" {cell(b.get('rss_mb'))} | {cell(b.get('kb_per_series'))} |"
                        if before else ""))
    lines += ["", "| engine (in process), 1,024 series | figure | now | "
              + ("before |" if before else ""), "|---|---|---:|" + ("---:|" if before else "")]
    for e in report.get("engine", []):
        b = find(before, "engine", e["case"], e["series"])
        rows = [("Statistics.add, ns per record", "add_ns_per_record", None),
                ("RSS growth, KB per series", "rss_growth_kb_per_series", None)]
        rows += [(f"{name} ms (median)", f"{name}_ms", "median")
                 for name in ("capture", "operations", "interval", "histograms")]
        if e["case"] == "busy":
            rows.append(("capture() during the fill, ms (median)", "capture_during_fill_ms",
                         "median"))
            rows.append(("capture() during the fill, ms (max)", "capture_during_fill_ms", "max"))
        for label, key, sub in rows:
            now = e.get(key)
            old = b.get(key)
            if sub:
                now = now.get(sub) if isinstance(now, dict) else None
                old = old.get(sub) if isinstance(old, dict) else None
            lines.append(f"| {e['case']} | {label} | {cell(now, '{:.2f}')} |"
                         + (f" {cell(old, '{:.2f}')} |" if before else ""))
    return "\n".join(lines)


def check_targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    targets = []
    for d in report.get("daemon", []):
        if d.get("series") == 1024 and "rss_mb" in d:
            targets.append({"target": f"daemon RSS <= {TARGET_DAEMON_MB} MB at 1,024 series "
                                      f"({d['case']})", "value": round(d["rss_mb"], 1),
                            "pass": d["rss_mb"] <= TARGET_DAEMON_MB})
        if d.get("kb_per_series") is not None and d["series"] >= 100:
            targets.append({"target": f"<= {TARGET_KB_PER_SERIES} KB per series "
                                      f"({d['case']}, {d['series']} series)",
                            "value": round(d["kb_per_series"], 1),
                            "pass": d["kb_per_series"] <= TARGET_KB_PER_SERIES})
    for e in report.get("engine", []):
        ops = e.get("operations_ms", {}).get("median")
        if ops is not None:
            targets.append({"target": f"operations() <= {TARGET_OPERATIONS_MS} ms at 1,024 "
                                      f"series ({e['case']})", "value": round(ops, 2),
                            "pass": ops <= TARGET_OPERATIONS_MS})
        cap = e.get("capture_ms", {}).get("median")
        if cap is not None:
            targets.append({"target": f"capture() <= {TARGET_CAPTURE_MS} ms at 1,024 series "
                                      f"({e['case']})", "value": round(cap, 3),
                            "pass": cap <= TARGET_CAPTURE_MS})
    return targets


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--series", default="0,10,100,1024",
                        help="series counts for the quiet workload's daemon runs")
    parser.add_argument("--busy-series", default="1024",
                        help="series counts for the busy workload's daemon runs ('' for none)")
    parser.add_argument("--busy-seconds", type=int, default=320)
    parser.add_argument("--busy-rate", type=int, default=20,
                        help="events per series per second in the busy workload")
    parser.add_argument("--engine-series", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--no-daemon", action="store_true")
    parser.add_argument("--no-engine", action="store_true")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    parser.add_argument("--render", type=Path, help="only rewrite --md from this results file")
    parser.add_argument("--quick", action="store_true",
                        help="a short smoke run: 40 s busy, 3 rounds, 0 and 10 series")
    parser.add_argument("--before", type=Path, help="a results file of the earlier code")
    parser.add_argument("--out", type=Path, default=HERE / "cardinality_results.json")
    parser.add_argument("--md", type=Path, default=HERE / "CARDINALITY.md")
    args = parser.parse_args(argv)
    if args.quick:
        args.busy_seconds, args.rounds, args.series, args.busy_series = 40, 3, "0,10", "10"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:  # the markdown again, from a results file (e.g. after editing NOTES)
        report = json.loads(args.render.read_text())
        args.md.write_text(markdown(report), encoding="utf-8")
        return 0
    exit_on_sigterm()
    tuning = tune_like_the_daemon()
    start = RunStart()
    t0 = time.monotonic()

    def log(text: str) -> None:
        if not args.quiet:
            print(f"[{time.monotonic() - t0:6.1f} s] {text}", file=sys.stderr, flush=True)

    log(tuning)
    report: dict[str, Any] = {"engine": [], "daemon": [], "tuning": tuning}
    if not args.no_engine:
        for case in ("quiet", "busy"):
            result = engine_case(case, args.engine_series, args.busy_rate, args.busy_seconds,
                                 args.rounds)
            log(f"engine {case}: {json.dumps(result)}")
            report["engine"].append(result)
    if not args.no_daemon:
        runs = [("quiet", int(n)) for n in args.series.split(",") if n]
        runs += [("busy", int(n)) for n in args.busy_series.split(",") if n]
        for case, series in runs:
            try:
                report["daemon"].append(daemon_case(case, series, args.busy_rate,
                                                    args.busy_seconds, log))
            except Exception as exc:  # reported, the other cases still count
                log(f"daemon {case} {series}: {exc!r}")
                report["daemon"].append({"case": case, "series": series, "error": repr(exc)})
        per_series(report["daemon"])
    before = json.loads(args.before.read_text()) if args.before else None
    report.update(start.header())
    report["measured_code"] = measured_code()
    report["busy"] = {"events_per_series_per_s": args.busy_rate, "seconds": args.busy_seconds}
    report["targets"] = check_targets(report)
    if before is not None:
        report["before"] = before
    text = markdown(report)
    print(text)
    write_results(report, args.out, args.md, text)
    return 0


NOTES = """Notes. Daemon RSS is VmRSS once the state file counts every event and two more snapshots
were written. The daemon gives its free heap back after each snapshot (``malloc_trim``), so the
figure does not carry the snapshot's temporaries (without that it varied from run to run by up
to ~30 MB at 1,024 series: 89.6 to 121.6 MB with the same engine). The engine's own arrays are
``Statistics.memory()``: 18 KiB per series of per-second totals, plus 6 bytes per bucket hit
per time slot. "before" ran this same script with the interpreter of a checkout of the earlier
code (its command is in its results file)."""


def markdown(report: dict[str, Any]) -> str:
    before = report.get("before")
    busy = report.get("busy", {})
    return "\n".join([
        *header_lines("Memory and time at the cardinality cap", report),
        f"- measured code: {report['measured_code']}"
        + (f"; before: {before.get('measured_code', '?')}, command "
           f"`{before.get('command', '?')}`" if before else ""),
        "", f"Busy workload: {busy.get('events_per_series_per_s')} events per series per "
            f"second for {busy.get('seconds')} s (every window full).", "",
        table(report, before), "", target_lines(report["targets"]), "", NOTES, ""])


if __name__ == "__main__":
    sys.exit(main())
