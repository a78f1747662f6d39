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
``emit_extended``
    The same plus ``ttft_ms=3.5, tokens_in=512, tokens_out=128`` (the 52-byte record).
``emit_drop``
    ``emit`` into a lane that is full and is never drained: the drop path (re-read the tail,
    validate the arguments, count the drop). The full lane is a second lane of this thread,
    put in place of the live one in the client's thread-local between timed loops.
``drain``
    The daemon's own ``Drainer._batch`` (read, name table, validate, count, commit, statistics) over
    one lane of ``--drain-capacity`` records written by emit (a mix of 4 operations, 3 models
    and 1 in 8 extended records). Between batches the tail (the reader's and the shared one)
    is put back to 0, so each batch re-reads the same, still valid, full ring. Reported per
    record and as M records/s on one core. numpy is imported only when this case first runs.

Every segment of the private namespaces (``aibench-<pid>.`` and ``aibench-<pid>-drain.``) is
removed at the end, on error and on SIGTERM too.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import json
import os
import platform
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ai_analytics import client
from ai_analytics.client import _emit
from ai_analytics.client import _layout as L
from ai_analytics.client._lane import Lane, LaneGeometry
from ai_analytics.client._segments import DEFAULT_SEGMENT_DIR as SHM_DIR
from ai_analytics.client._segments import NAMESPACE_ENV

HERE = Path(__file__).resolve().parent
CASES = ("noop", "bare", "emit", "emit_extended", "emit_drop", "drain")
OP, MODEL = "text_generation", "llama-3-8b"
OP_ID, MODEL_ID = 1, 2  # what the first emit interns them as (checked in Lanes.open)

TARGET_EMIT_NS = 1000.0
TARGET_EMIT_OVER_BARE = 2.0
TARGET_DRAIN_MRPS = 10.0


# -- the reference functions ---------------------------------------------------------------
def noop(
    operation: object,
    latency_ms: float,
    model: str = "",
    quality: float | None = None,
    success: bool = True,
    cache_hit: bool | None = None,
    *,
    ttft_ms: float | None = None,
    queue_ms: float | None = None,
    tokens_in: int | None = None,
    tokens_out: int | None = None,
) -> bool:
    """emit's signature and nothing else: the floor."""
    return True


_bare_local = threading.local()
_pack_basic = L.RECORD_BASIC.pack_into
_now = time.monotonic_ns
_Q_HEAD = L.Q_HEAD


def bare(
    operation: object,
    latency_ms: float,
    model: str = "",
    quality: float | None = None,
    success: bool = True,
    cache_hit: bool | None = None,
    *,
    ttft_ms: float | None = None,
    queue_ms: float | None = None,
    tokens_in: int | None = None,
    tokens_out: int | None = None,
) -> bool:
    """The bare reference write: lane, one pack, head update, one head store."""
    lane = _bare_local.lane
    h = lane.head
    _pack_basic(
        lane.buf,
        lane.base + h % lane.capacity * 64,
        h,
        _now(),
        latency_ms,
        quality,
        1,
        2,
        success,
        2,
    )
    lane.head = h + 1
    lane.q[_Q_HEAD] = h + 1
    return True


# -- timing --------------------------------------------------------------------------------
def loop_basic(f: Callable[..., object], n: int) -> None:
    for _ in range(n):
        f("text_generation", 12.5, "llama-3-8b", 0.9)


def loop_extended(f: Callable[..., object], n: int) -> None:
    for _ in range(n):
        f("text_generation", 12.5, "llama-3-8b", 0.9, ttft_ms=3.5, tokens_in=512, tokens_out=128)


def _nothing() -> None:
    pass


def time_calls(
    loop: Callable[[Callable[..., object], int], None],
    f: Callable[..., object],
    calls: int,
    chunk: int,
    between: Callable[[], None] = _nothing,
) -> tuple[float, int]:
    """Time ``calls`` calls (rounded up to whole chunks); ``between`` runs untimed before each
    chunk. Return (ns per call, calls made)."""
    chunks = -(-calls // chunk)
    total = 0
    clock = time.perf_counter_ns
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(chunks):
            between()
            t0 = clock()
            loop(f, chunk)
            total += clock() - t0
    finally:
        if gc_was_enabled:
            gc.enable()
    return total / (chunks * chunk), chunks * chunk


# -- lanes ---------------------------------------------------------------------------------
def segments(namespace: str) -> list[str]:
    """Names in /dev/shm that belong to ``namespace``."""
    prefix = f"{namespace}."
    return sorted(n for n in os.listdir(SHM_DIR) if n.startswith(prefix))


def remove_segments(namespace: str) -> list[str]:
    """Unlink every segment of ``namespace``; return the names removed."""
    removed = []
    for name in segments(namespace):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(SHM_DIR, name))
            removed.append(name)
    return removed


@contextlib.contextmanager
def lane_in_place(lane: Lane) -> Iterator[Lane]:
    """Make ``lane`` this thread's lane for emit, then put the previous one back."""
    local = _emit._local
    previous = getattr(local, "lane", None)
    local.lane = lane
    try:
        yield lane
    finally:
        if previous is None:
            del local.lane
        else:
            local.lane = previous


class Lanes:
    """This thread's lanes in a private namespace: a live one (kept drained) and a full one.

    ``overwrite=True`` publishes a control segment first so that the live lane is created in
    overwrite mode: it never fills and needs no draining (the pytest-benchmark module uses
    that, as it cannot run code between calls). emit's fast path is the same either way.
    """

    def __init__(self, namespace: str, overwrite: bool = False) -> None:
        self.namespace = namespace
        self.overwrite = overwrite
        self.live: Lane | None = None
        self.full: Lane | None = None
        self._saved_env: str | None = None
        self._saved_lane: Lane | None = None

    def open(self) -> Lanes:
        self._saved_env = os.environ.get(NAMESPACE_ENV)
        self._saved_lane = getattr(_emit._local, "lane", None)
        os.environ[NAMESPACE_ENV] = self.namespace
        if self._saved_lane is not None:
            del _emit._local.lane
        if self.overwrite:
            from ai_analytics.daemon.ingest.control import publish_control  # stdlib only

            publish_control(
                SHM_DIR, self.namespace, L.DEFAULT_CAPACITY, L.DEFAULT_NAMES_CAPACITY, True
            )
        # The first emit of this thread creates its lane, exactly as in a worker.
        if not client.emit(OP, 12.5, MODEL, 0.9):
            raise RuntimeError("the first emit was dropped: no lane could be created")
        live = _emit._local.lane
        if not live.name.startswith(f"{self.namespace}.lane."):
            raise RuntimeError(f"emit did not create a lane in {self.namespace!r}: {live.name!r}")
        if (live.ops[OP], live.models[MODEL]) != (OP_ID, MODEL_ID):
            raise RuntimeError("unexpected name ids; bare() writes ids 1 and 2")
        self.live = live
        _bare_local.lane = live
        # A second lane, filled once and never drained: every emit into it is dropped.
        full = Lane(
            self.namespace, LaneGeometry(L.DEFAULT_CAPACITY, L.DEFAULT_NAMES_CAPACITY, False)
        )
        with lane_in_place(full):
            for _ in range(full.capacity):
                client.emit(OP, 12.5, MODEL, 0.9)
            if client.emit(OP, 12.5, MODEL, 0.9) or full.dropped != 1:
                raise RuntimeError("the full lane accepted a record")
        self.full = full
        return self

    def drain_live(self) -> None:
        """Play the daemon: everything written so far has been consumed."""
        assert self.live is not None
        self.live.q[L.Q_TAIL] = self.live.head

    def chunk(self, calls: int) -> int:
        """Calls per timed loop: at most half the live lane, so one drain before it suffices."""
        assert self.live is not None
        return max(1, min(calls, self.live.capacity // 2))

    def close(self) -> None:
        """Put back the thread's previous lane and namespace; remove this namespace's segments."""
        try:
            if getattr(_bare_local, "lane", None) is not None:
                del _bare_local.lane
            if hasattr(_emit._local, "lane"):
                del _emit._local.lane
            if self._saved_lane is not None:
                _emit._local.lane = self._saved_lane
            if self._saved_env is None:
                os.environ.pop(NAMESPACE_ENV, None)
            else:
                os.environ[NAMESPACE_ENV] = self._saved_env
        finally:
            remove_segments(self.namespace)


def fill_for_drain(lane: Lane) -> None:
    """Fill ``lane`` through emit with a plausible mix of names and record kinds."""
    ops = ("text_generation", "chat_completion", "embedding", "reranking")
    models = ("llama-3-8b", "mistral-7b", "bge-large")
    emit = client.emit
    with lane_in_place(lane):
        for i in range(lane.capacity):
            if i % 8 == 7:
                ok = emit(
                    ops[i % 4],
                    1.0 + i % 97,
                    models[i % 3],
                    0.9,
                    ttft_ms=2.5,
                    tokens_in=100 + i % 50,
                    tokens_out=i % 300,
                )
            else:
                ok = emit(
                    ops[i % 4],
                    1.0 + i % 97,
                    models[i % 3],
                    None if i % 5 else 0.75,
                    success=i % 50 != 0,
                    cache_hit=None if i % 3 else True,
                )
            if not ok:
                raise RuntimeError("the drain lane filled before its capacity")


class DrainBench:
    """A real daemon (its ``Drainer._batch``) over one full lane, re-read batch after batch."""

    def __init__(self, namespace: str, capacity: int) -> None:
        from ai_analytics.core.config import Config  # numpy comes in here, not earlier
        from ai_analytics.daemon.malloc_tuning import keep_temporaries_on_heap
        from ai_analytics.daemon.service import Daemon

        self.namespace = namespace
        self.capacity = capacity
        self._state = tempfile.TemporaryDirectory(prefix="aibench-state-")
        self.producer = Lane(namespace, LaneGeometry(capacity, L.DEFAULT_NAMES_CAPACITY, False))
        fill_for_drain(self.producer)
        config = Config(
            namespace=namespace,
            state_dir=self._state.name,
            batch_size=capacity,
            max_queue_size=capacity,
        )
        keep_temporaries_on_heap()  # as ai-analyticsd does at start
        self.daemon = Daemon(config)
        self.daemon.lanes.scan()
        tracked = list(self.daemon.lanes)
        if len(tracked) != 1:
            raise RuntimeError(f"the daemon attached {len(tracked)} lanes, expected 1")
        self.lane = tracked[0]
        self.reader = self.lane.reader

    def rewind(self) -> None:
        """Make the whole ring unread again; its records keep seq == index, so they validate."""
        self.reader.tail = 0
        self.reader.q[L.Q_TAIL] = 0

    def batch(self) -> int:
        return self.daemon.drainer._batch()

    def time_batches(self, batches: int) -> float:
        """ns per record over ``batches`` full-ring batches (each checked: all taken, all valid)."""
        total = 0
        clock = time.perf_counter_ns
        for _ in range(batches):
            self.rewind()
            received = self.lane.received
            t0 = clock()
            taken = self.daemon.drainer._batch()
            total += clock() - t0
            if taken != self.capacity or self.lane.received - received != self.capacity:
                raise RuntimeError(
                    f"a drain batch took {taken} records, {self.lane.received - received} valid;"
                    f" expected {self.capacity}"
                )
        return total / (batches * self.capacity)

    def close(self) -> None:
        try:
            self.daemon.close()
        finally:
            self._state.cleanup()
            remove_segments(self.namespace)


# -- the run -------------------------------------------------------------------------------
def report_header(machine: dict[str, Any], source: Any) -> dict[str, Any]:
    """What every results file starts with: when, how, where, and from which source."""
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": shlex.join(getattr(sys, "orig_argv", [sys.executable, *sys.argv])),
        "machine": machine,
        "source": source,
        "loadavg_after": list(os.getloadavg()),
    }


def header_lines(title: str, report: dict[str, Any]) -> list[str]:
    """The markdown opening of a results file made from ``report_header``'s fields."""
    m, src = report["machine"], report["source"]
    modified = f" (modified: {', '.join(src['modified'])})" if src["modified"] else ""
    return [
        f"# {title}",
        "",
        f"- date: {report['date']}",
        f"- machine: {m['cpu_model']}, {m['cpu_count']} CPUs, {m['platform']}, "
        f"Python {m['python']}; load average before {m['loadavg']}, "
        f"after {report['loadavg_after']}",
        f"- command: `{report['command']}`",
        f"- commit: {src['commit']}{modified}",
    ]


def write_results(report: dict[str, Any], json_path: Path, md_path: Path, text: str) -> None:
    """The run as JSON and as markdown, folders made as needed; says where."""
    for path, content in ((json_path, json.dumps(report, indent=2) + "\n"), (md_path, text)):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
    print(f"\nwrote {json_path} and {md_path}")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def source_state() -> dict[str, Any]:
    """The commit measured, and whether client/ or daemon/ differed from it."""

    def git(*args: str) -> str:
        try:
            done = subprocess.run(
                ["git", *args], cwd=HERE.parent, capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.SubprocessError):
            return ""
        return done.stdout.rstrip() if done.returncode == 0 else ""

    changed = git("status", "--porcelain", "--", "client", "daemon")
    return {
        "commit": git("rev-parse", "HEAD") or "unknown",
        "modified": [line[3:] for line in changed.splitlines()],
    }


def machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "python_build": sys.version,
        "implementation": platform.python_implementation(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "loadavg": list(os.getloadavg()),
    }


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
    samples: dict[str, list[float]] = {case: [] for case in CASES}
    lanes = Lanes(namespace)
    drain: DrainBench | None = None
    try:
        lanes.open()
        live, full = lanes.live, lanes.full
        assert live is not None and full is not None
        # Keeping the live lane drained: each timed loop is at most half the capacity long, and
        # before each one the tail is set to the head (lanes.drain_live, untimed), as a daemon
        # that keeps up would. So emit never meets a full lane, but still re-reads the shared
        # tail once a lap through its slow path, exactly as it does in production (drop mode,
        # default capacity). Each emit case checks afterwards that nothing was dropped.
        chunk = lanes.chunk(calls)

        def run_emit(loop: Callable[[Callable[..., object], int], None]) -> float:
            head, dropped = live.head, live.dropped
            ns, made = time_calls(loop, client.emit, calls, chunk, lanes.drain_live)
            if live.head - head != made or live.dropped != dropped:
                raise RuntimeError("emit dropped records in the drained lane")
            return ns

        def run_drop() -> float:
            head, dropped = full.head, full.dropped
            with lane_in_place(full):
                ns, made = time_calls(loop_basic, client.emit, calls, chunk)
            if full.head != head or full.dropped - dropped != made:
                raise RuntimeError("emit wrote into the full lane")
            return ns

        def run_drain() -> float:
            nonlocal drain
            if drain is None:
                drain = DrainBench(f"{namespace}-drain", drain_capacity)
            return drain.time_batches(drain_batches)

        runs: dict[str, Callable[[], float]] = {
            "noop": lambda: time_calls(loop_basic, noop, calls, chunk)[0],
            "bare": lambda: time_calls(loop_basic, bare, calls, chunk, lanes.drain_live)[0],
            "emit": lambda: run_emit(loop_basic),
            "emit_extended": lambda: run_emit(loop_extended),
            "emit_drop": run_drop,
            "drain": run_drain,
        }
        for r in range(rounds):
            k = r % len(CASES)
            order = CASES[k:] + CASES[:k]
            for case in order:
                samples[case].append(runs[case]())
            log(
                f"round {r + 1}/{rounds}: "
                + ", ".join(f"{case} {samples[case][-1]:.1f}" for case in CASES)
            )
    finally:
        try:
            if drain is not None:
                drain.close()
        finally:
            lanes.close()
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


def target_lines(targets: list[dict[str, Any]]) -> str:
    return "\n".join(
        f"{'PASS' if t['pass'] else 'FAIL'}  {t['target']}  ({t['value']})" for t in targets
    )


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    p = report["parameters"]
    src = report["source"]
    return (
        "# emit benchmark results\n\n"
        f"Written by `bench/emit_bench.py`; rerun it to compare. Date: {report['date']}\n\n"
        f"- machine: {m['cpu_model']}, {m['cpu_count']} CPUs, {m['platform']}, "
        f"{m['implementation']} {m['python']}; load average before "
        f"{', '.join(f'{x:.2f}' for x in m['loadavg'])}\n"
        f"- command: `{report['command']}`\n"
        f"- source: commit {src['commit'][:12]}"
        + (f", with local changes in {', '.join(src['modified'])}" if src["modified"] else "")
        + "\n"
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


def exit_on_sigterm() -> None:
    """SIGTERM raises SystemExit, which unwinds through the finally blocks that clean up
    (children, segments, temporary directories) instead of killing the script where it is."""
    signal.signal(signal.SIGTERM, _terminate)


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    exit_on_sigterm()
    namespace = f"aibench-{os.getpid()}"
    before = machine()
    source = source_state()

    def log(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr, flush=True)

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
        **report_header(before, source),
        "parameters": {
            "rounds": args.rounds,
            "calls": args.calls,
            "chunk": chunk,
            "calls_made": -(-args.calls // chunk) * chunk,
            "drain_capacity": args.drain_capacity,
            "drain_batches": args.drain_batches,
        },
        "cases": summary,
    }
    report["targets"] = check_targets(summary)
    print(table(summary))
    print()
    print(target_lines(report["targets"]))
    write_results(report, args.out, args.md, markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
