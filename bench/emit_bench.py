"""What one ``client.emit`` costs, next to its floor, and how fast the daemon drains.

Usage, from the repository root::

    .venv/bin/python bench/emit_bench.py [--rounds N] [--calls N] [--out bench/results.json]
                                         [--md bench/RESULTS.md] [--drain-capacity N]
                                         [--drain-batches N]

Everything runs in ONE process, in interleaved rounds: round r runs every case once, in an
order rotated by r, so that a burst of load on a shared machine hits all cases alike. Per case
the FASTEST round is the figure (the least disturbed one); the median is shown beside it. The
script prints a markdown table, writes it to ``--md`` (overwritten) with the date, the machine
and the command, and writes every sample to ``--out`` as JSON. Targets are printed as PASS or
FAIL lines after the table; they never make the script fail. Compare ratios, not absolute
times: absolute times drift between runs and machines.

Cases (per-call cases time ``--calls`` calls per round through ``for _ in range(n): f(...)``
with ``f`` a local name, so every case pays the same loop and call overhead; the garbage
collector is off while a loop is timed, as in ``timeit``):

``noop``
    A Python function with exactly emit's signature, called with the same arguments: the
    floor of any pure-Python emit.
``bare``
    The least a pure-Python emit can do: read the lane from a thread-local, one
    ``RECORD_BASIC.pack_into`` at the slot offset (name ids fixed, the clock read), the head
    attribute update and one 8-byte head store through the ``cast("Q")`` view. Same
    signature as emit, no checks of any kind. It writes the same lane as ``emit``.
``emit``
    ``client.emit("text_generation", 12.5, "llama-3-8b", 0.9)`` into this thread's lane,
    created by a first emit in a private namespace (no daemon, no control segment: the
    default geometry, drop when full). The script plays the daemon: before each timed
    chunk of at most half the capacity it stores the lane's head into the header's tail, so
    the lane never fills and emit still pays its real once-a-lap re-read of the tail.
``emit_python``
    The same call through the pure-Python path (``_emit.emit_python``, what
    ``AI_ANALYTICS_PURE_PYTHON=1`` selects); ``emit`` is the compiled path when it is built
    (the report says which path ``client.emit`` took).
``emit_enum``
    ``emit`` with the operation given as ``AIOperationType.TEXT_GENERATION``, as the
    original API writes it, not as its str.
``emit_extended``, ``emit_extended_python``
    The same as ``emit`` plus ``ttft_ms=3.5, tokens_in=512, tokens_out=128`` (the 52-byte record).
``emit_drop``
    ``emit`` into a lane that is full and is never drained: the drop path (re-read the tail,
    validate the arguments, count the drop). The full lane is a second lane of this thread,
    put in place of the live one in the client's thread-local between timed loops.
``drain``
    The daemon's own ``Drainer._batch`` (read, name table, validate, count, commit,
    statistics) over one lane of ``--drain-capacity`` records written by emit (a mix of 4
    operations, 3 models and 1 in 8 extended records). Between batches the tail (the
    reader's and the shared one) is put back to 0, so each batch re-reads the same, still
    valid, full ring. Reported per record and as M records/s on one core. numpy is imported
    only when this case first runs.

The lanes, ``bare``, the loops and the drain rig are in ``bench/benchlib/`` (``lanes``,
``timing``, ``drain``), shared with ``bench/test_bench_emit.py``, which runs the same cases
under pytest-benchmark. Every segment of the private namespaces (``aibench-<pid>.`` and
``aibench-<pid>-drain.``) is removed at the end, on error and on SIGTERM too.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ai_analytics import client
from ai_analytics.client import _emit
from ai_analytics.client import _layout as L

from benchlib.as_daemon import tune_like_the_daemon
from benchlib.drain import DrainRig, one_mixed_lane
from benchlib.lanes import Lanes, bare, remove_segments
from benchlib.report import (
    RunStart,
    exit_on_sigterm,
    progress,
    source_line,
    target_lines,
    write_results,
)
from benchlib.timing import (
    interleaved_rounds,
    loop_basic,
    loop_enum,
    loop_extended,
    noop,
    time_calls,
)

HERE = Path(__file__).resolve().parent
CASES = ("noop", "bare", "emit", "emit_python", "emit_enum", "emit_extended",
         "emit_extended_python", "emit_drop", "drain")

TARGET_EMIT_NS = 1000.0
TARGET_EMIT_OVER_BARE = 2.0
TARGET_DRAIN_MRPS = 10.0


def measure_all(
    rounds: int,
    calls: int,
    drain_capacity: int,
    drain_batches: int,
    namespace: str,
    log: Callable[[str], None],
) -> tuple[dict[str, list[float]], int]:
    """Run the interleaved rounds; return the per-round samples (ns per call or per record)
    and the calls per timed loop."""
    drain: DrainRig | None = None
    with Lanes(namespace) as lanes:
        chunk = lanes.chunk(calls)

        def run_drain() -> float:
            nonlocal drain
            if drain is None:  # numpy and the daemon are imported here, when first needed
                drain = one_mixed_lane(f"{namespace}-drain", drain_capacity)
            return drain.time_batches(drain_batches)

        runs: dict[str, Callable[[], float]] = {
            "noop": lambda: time_calls(loop_basic, noop, calls, chunk)[0],
            "bare": lambda: time_calls(loop_basic, bare, calls, chunk, lanes.drain_live)[0],
            "emit": lambda: lanes.time_emit(loop_basic, calls),
            "emit_python": lambda: lanes.time_emit(loop_basic, calls, _emit.emit_python),
            "emit_enum": lambda: lanes.time_emit(loop_enum, calls),
            "emit_extended": lambda: lanes.time_emit(loop_extended, calls),
            "emit_extended_python": lambda: lanes.time_emit(
                loop_extended, calls, _emit.emit_python),
            "emit_drop": lambda: lanes.time_drop(calls),
            "drain": run_drain,
        }

        def after_round(r: int, samples: dict[str, list[float]]) -> None:
            log(f"round {r + 1}/{rounds}: "
                + ", ".join(f"{case} {samples[case][-1]:.1f}" for case in CASES))

        try:
            samples = interleaved_rounds(runs, rounds, after_round)
        finally:
            if drain is not None:
                drain.close()
    return samples, chunk


def summarize(samples: dict[str, list[float]]) -> dict[str, dict[str, Any]]:
    fastest = {case: min(values) for case, values in samples.items()}
    out: dict[str, dict[str, Any]] = {}
    for case, values in samples.items():
        row: dict[str, Any] = {
            "unit": "ns/record" if case == "drain" else "ns/call",
            "fastest": fastest[case],
            "median": statistics.median(values),
            "samples": values,
        }
        if case == "drain":
            row["fastest_mrecords_per_s"] = 1e3 / fastest[case]
            row["median_mrecords_per_s"] = 1e3 / row["median"]
        else:
            row["ratio_noop"] = fastest[case] / fastest["noop"]
            row["ratio_bare"] = fastest[case] / fastest["bare"]
        out[case] = row
    return out


def check_targets(summary: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    emit = summary["emit"]["fastest"]
    bare_ns = summary["bare"]["fastest"]
    drop = summary["emit_drop"]["fastest"]
    mrps = summary["drain"]["fastest_mrecords_per_s"]
    return [
        {
            "target": f"emit < {TARGET_EMIT_NS:g} ns",
            "value": f"{emit:.1f} ns",
            "pass": emit < TARGET_EMIT_NS,
        },
        {
            "target": f"emit <= {TARGET_EMIT_OVER_BARE:g} x bare",
            "value": f"{emit / bare_ns:.2f} x",
            "pass": emit <= TARGET_EMIT_OVER_BARE * bare_ns,
        },
        {
            "target": "emit_drop <= emit",
            "value": f"{drop:.1f} vs {emit:.1f} ns",
            "pass": drop <= emit,
        },
        {
            "target": f"drain >= {TARGET_DRAIN_MRPS:g} M records/s",
            "value": f"{mrps:.1f} M records/s",
            "pass": mrps >= TARGET_DRAIN_MRPS,
        },
    ]


def table(summary: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| case | fastest ns/call | median ns/call | x noop | x bare | M records/s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for case in CASES:
        row = summary[case]
        if case == "drain":
            lines.append(
                f"| drain (per record) | {row['fastest']:.2f} | {row['median']:.2f} | — | — "
                f"| {row['fastest_mrecords_per_s']:.1f} (median {row['median_mrecords_per_s']:.1f})"
                " |"
            )
        else:
            lines.append(
                f"| {case} | {row['fastest']:.1f} | {row['median']:.1f} "
                f"| {row['ratio_noop']:.2f} | {row['ratio_bare']:.2f} | — |"
            )
    return "\n".join(lines)


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    p = report["parameters"]
    return (
        "# emit benchmark results\n\n"
        f"Written by `bench/emit_bench.py`; rerun it to compare. Date: {report['date']}\n\n"
        f"- machine: {m['cpu_model']}, {m['cpu_count']} CPUs, {m['platform']}, "
        f"{m['implementation']} {m['python']}; load average before "
        f"{', '.join(f'{x:.2f}' for x in m['loadavg'])}\n"
        f"- command: `{report['command']}`\n"
        f"- `client.emit` took the {report['emit_path']} path\n"
        f"- source: {source_line(report['source'])}\n"
        f"- {p['rounds']} interleaved rounds of {p['calls_made']} calls per case (timed in loops "
        f"of {p['chunk']}), drain: {p['drain_batches']} batches of {p['drain_capacity']} records "
        "per round; fastest round and median shown; ratios use the fastest rounds\n\n"
        f"{table(report['cases'])}\n\n"
        "Targets:\n\n"
        "```\n"
        f"{target_lines(report['targets'])}\n"
        "```\n"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time client.emit against its floor, and the daemon's drain, in one process."
    )
    parser.add_argument("--rounds", type=int, default=20, help="interleaved rounds (default 20)")
    parser.add_argument(
        "--calls",
        type=int,
        default=100_000,
        help="calls per per-call case per round (default 100000)",
    )
    parser.add_argument(
        "--drain-capacity",
        type=int,
        default=65536,
        help="records in the drained lane (default 65536)",
    )
    parser.add_argument(
        "--drain-batches",
        type=int,
        default=8,
        help="full-ring batches per round for drain (default 8)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=HERE / "results.json",
        help="JSON results (default bench/results.json)",
    )
    parser.add_argument(
        "--md",
        type=Path,
        default=HERE / "RESULTS.md",
        help="markdown copy of the table, overwritten (default bench/RESULTS.md)",
    )
    parser.add_argument("--quiet", action="store_true", help="no per-round progress lines")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.calls < 1 or args.drain_batches < 1:
        parser.error("--rounds, --calls and --drain-batches must be at least 1")
    if not L.MIN_CAPACITY <= args.drain_capacity <= L.MAX_CAPACITY:
        parser.error(f"--drain-capacity must be in {L.MIN_CAPACITY}..{L.MAX_CAPACITY}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    exit_on_sigterm()
    tuning = tune_like_the_daemon()  # the drain case times the daemon's batch path here
    namespace = f"aibench-{os.getpid()}"
    start = RunStart()

    log = progress(args.quiet)
    log(tuning)
    try:
        samples, chunk = measure_all(
            args.rounds, args.calls, args.drain_capacity, args.drain_batches, namespace, log
        )
    finally:
        left = remove_segments(namespace) + remove_segments(f"{namespace}-drain")
        if left:
            log(f"removed leftover segments: {', '.join(left)}")
    summary = summarize(samples)
    report: dict[str, Any] = {
        **start.header(),
        "parameters": {
            "rounds": args.rounds,
            "calls": args.calls,
            "chunk": chunk,
            "calls_made": -(-args.calls // chunk) * chunk,
            "drain_capacity": args.drain_capacity,
            "drain_batches": args.drain_batches,
        },
        "cases": summary,
        "emit_path": client.emit_path(),
    }
    report["targets"] = check_targets(summary)
    print(table(summary))
    print()
    print(target_lines(report["targets"]))
    write_results(report, args.out, args.md, markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
