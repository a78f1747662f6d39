"""How fast the daemon aggregates events, and whether its memory stays flat under load.

Usage, from the repository root::

    .venv/bin/python bench/aggregate_bench.py [--rounds N] [--batch N] [--batches N]
                                              [--drain-threads N] [--snapshot-rate N]
                                              [--events-small N] [--events-large N]
                                              [--producers N] [--threads N] [--rate N]
                                              [--no-daemon] [--no-in-process]
                                              [--out bench/aggregate_results.json]
                                              [--md bench/AGGREGATE.md]

Two parts, one after the other (never at the same time: the machine may have 2 cores).

In-process cases, in interleaved rounds (round r runs every case once, in an order rotated by
r, so that a burst of load on a shared machine hits all cases alike; per case the FASTEST
round is the figure, the median beside it; the garbage collector is off while a case is
timed). Every case uses the same mix (``benchlib.mix``): 10 operations x 10 models = 100
series, chosen uniformly; latencies lognormal (a median per operation from 4 ms to 900 ms,
sigma 0.8); a quality score on half the events (normal around 0.8, clipped to [0, 1]); a
cache lookup on a third (40 % hits); 2 % errors; 1 in 8 records ``KIND_EXTENDED`` with time
to first token, queue time and token counts. Producers cycle through 65536 pre-drawn events
per thread (each thread its own), so bucket keys are as varied as in real traffic. The
process first applies the settings of the daemon's main() (``benchlib/as_daemon.py``: its malloc
thresholds, and numpy off its AVX-512 sort on AMD Zen 4), so it runs as the daemon does.

``stats_add``
    ``Statistics.add`` on ``--batches`` structured record arrays of ``--batch`` records
    (``records.RECORD_DTYPE``, built with numpy), their timestamps spread over the current
    second of an injected clock. Each round moves the clock on by one second (and the
    timestamps with it, untimed), so every round opens a fresh slot of the per-second ring,
    and ends with an untimed ``close_interval``, as the daemon's snapshots do.
``drain_batch``
    The daemon's whole batch path, ``Drainer._batch`` (read, name table, validate, count,
    commit, ``Statistics.add``) of a real ``Daemon``, over ``--drain-threads`` lanes that
    as many threads filled through ``client.emit`` (lane capacity ``batch / threads``, so one
    batch takes every lane whole). Between batches the tails (the reader's and the shared
    one) go back to 0, as in ``bench/emit_bench.py``'s drain case, so each batch re-reads
    the same, still valid, full rings. The share spent inside ``Statistics.add`` is timed too.
``operations`` and ``close_interval``
    A ``Statistics`` with the 100 series populated over 300 seconds of data, at
    ``--snapshot-rate`` events per second (one batch per second, ``close_interval`` every
    second, as a daemon with ``snapshot_interval_seconds: 1``). Each round moves the clock on
    one second, adds that second's batch (untimed), then times one ``operations()`` call
    (every series, every window: what each state-file write computes) and one
    ``close_interval()`` (the history rows). Reported in ms per call. The memory the
    per-second ring holds after the 300 seconds is reported beside them, and what one
    ``operations()`` call allocates at its peak (through tracemalloc, untimed).

The daemon case (``--no-daemon`` leaves it out): a real ``python -m ai_analytics.daemon``
in a subprocess, configured with a private namespace, a temporary ``state_dir``,
``batch_timeout_seconds: 0.05``, ``snapshot_interval_seconds: 1`` and HTTP on a free
loopback port (every other setting at its default). ``--producers`` processes of
``--threads`` threads each emit the same mix as fast as they can (or, with ``--rate``, at
that many events per second in all), in bursts of ``--burst`` events; after each burst a
thread waits while its lane is more than ``--pace-fill`` full, so drops stay low (they are
counted and reported all the same). The producers emit ``--events-small`` events, stop, and
once the state file shows every one of them accounted for (nothing pending) the daemon's RSS
(``VmRSS`` of ``/proc/<pid>/status``) and CPU time (its process CPU clock: utime + stime, to
the nanosecond) are read; then they emit up to ``--events-large`` in all and the same is
read again. Reported: both RSS figures and their difference (target: at most ``5 MB``),
that difference per second of load, the events per second sustained while the producers ran
(accepted events over the span from the first start to the last end), and the daemon's CPU
seconds per million events between the two readings (its idle share, measured over a quiet
second before the load, is shown beside). The daemon's RSS is also sampled every 0.25 s
into the JSON (``rss_timeline``: seconds, VmRSS MB, RssAnon MB) to tell growth with events
from growth with time.

The script prints a markdown table, writes it to ``--md`` (overwritten) with the date, the
machine and the command, and writes every sample to ``--out`` as JSON. Targets are printed
as PASS or FAIL lines after the table; they never make the script fail, and neither does a
daemon case that goes wrong (it is reported as FAIL with the reason). Compare ratios between
runs, not absolute times.

Every segment of the private namespaces (``aibench-agg-<pid>-drain.`` and
``aibench-agg-<pid>-daemon.``) is removed at the end, on error and on SIGTERM too; every
child process is stopped and reaped.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from ai_analytics.client import _emit
from ai_analytics.client import _layout as L
from ai_analytics.client._segments import NAMESPACE_ENV

from benchlib.as_daemon import tune_like_the_daemon
from benchlib.children import Child, ready_children
from benchlib.daemon import DaemonProcess
from benchlib.drain import DrainRig
from benchlib.lanes import SHM_DIR, remove_segments
from benchlib.mix import MODELS, OPERATIONS, emit_plan, make_plan, make_records
from benchlib.proc import cpu_seconds, proc_status
from benchlib.report import (
    RunStart,
    exit_on_sigterm,
    progress,
    source_line,
    target_lines,
    write_results,
)
from benchlib.timing import interleaved_rounds, timed

# numpy and the daemon's modules are imported inside the functions that need them, so that
# the producer children (``--child-producer``) start without them, as real workers would.

HERE = Path(__file__).resolve().parent
SCRIPT = Path(__file__).resolve()
CLOCK_START_S = 100_000  # the injected monotonic clock starts here (an arbitrary second)

TARGET_RSS_GROWTH_MB = 5.0
TARGET_ADD_MRPS = 5.0
MB = 1024 * 1024


class ManualClock:
    """The injected monotonic clock of the in-process cases."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# -- in-process cases ------------------------------------------------------------------------
def new_statistics(clock: ManualClock) -> tuple[Any, Any, Any]:
    """A Statistics with the daemon's default caps, and the name ids of the 10 x 10 names."""
    import numpy as np

    from ai_analytics.core.config import Config
    from ai_analytics.daemon.stats.statistics import Statistics

    config = Config()
    stats = Statistics(config.max_operations, config.max_models, config.max_series, clock)
    ops = np.array([stats.registry.name_id(name) for name in OPERATIONS], np.int64)
    models = np.array([stats.registry.name_id(name) for name in MODELS], np.int64)
    return stats, ops, models


class AddBench:
    """``Statistics.add`` on batches of the mix, a new second each round."""

    DISTINCT_BATCHES = 4

    def __init__(self, batch: int, batches: int, seed: int) -> None:
        import numpy as np

        self.batch = batch
        self.batches = batches
        self.second = CLOCK_START_S
        self.clock = ManualClock(self.second + 0.5)
        self.stats, ops, models = new_statistics(self.clock)
        rng = np.random.default_rng(seed)
        self.data = [make_records(rng, batch, self.second, ops, models)
                     for _ in range(self.DISTINCT_BATCHES)]
        records, op_names, model_names = self.data[0]
        self.stats.add(records, op_names, model_names)  # series registered, arrays grown
        self.stats.close_interval()

    def round(self) -> float:
        """ns per record over this round's batches."""
        self.second += 1
        self.clock.now = self.second + 0.5
        for records, _, _ in self.data:
            records["ts_ns"] += 1_000_000_000
        total = 0
        for b in range(self.batches):
            records, op_names, model_names = self.data[b % self.DISTINCT_BATCHES]
            total += timed(partial(self.stats.add, records, op_names, model_names))[0]
        self.stats.close_interval()
        return total / (self.batches * self.batch)


class DrainBatchBench:
    """A real Daemon's ``Drainer._batch`` over lanes that threads filled through emit, with
    the time spent inside ``Statistics.add`` counted apart."""

    def __init__(self, namespace: str, threads: int, batch: int, seed: int) -> None:
        from ai_analytics.daemon.ingest.control import publish_control

        capacity = max(L.MIN_CAPACITY, batch // threads)
        saved_env = os.environ.get(NAMESPACE_ENV)
        try:
            os.environ[NAMESPACE_ENV] = namespace
            # The lanes take this geometry at their first emit, as under a running daemon.
            publish_control(SHM_DIR, namespace, capacity, L.DEFAULT_NAMES_CAPACITY, False)
            errors: list[BaseException] = []

            def fill(t: int) -> None:
                try:
                    if emit_plan(make_plan(seed + t), 0, capacity) != capacity:
                        raise RuntimeError("a drain lane filled before its capacity")
                except BaseException as exc:  # reported by the main thread
                    errors.append(exc)

            workers = [threading.Thread(target=fill, args=(t,)) for t in range(threads)]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
            if errors:
                raise errors[0]
        except BaseException:
            remove_segments(namespace)
            raise
        finally:
            if saved_env is None:
                os.environ.pop(NAMESPACE_ENV, None)
            else:
                os.environ[NAMESPACE_ENV] = saved_env
        self.rig = DrainRig(namespace, lanes=threads, batch_size=capacity * threads,
                            max_queue_size=capacity)
        self.capacity, self.total = capacity, self.rig.records
        stats = self.rig.daemon.stats
        inner = stats.add
        self.add_ns = 0

        def timed_add(records: Any, op_names: Any, model_names: Any) -> None:
            t0 = time.perf_counter_ns()
            inner(records, op_names, model_names)
            self.add_ns += time.perf_counter_ns() - t0

        stats.add = timed_add  # the Drainer calls self.stats.add: this instance attribute
        self.rig.timed_batch()  # names read, series registered, arrays grown

    def round(self, batches: int) -> tuple[float, float]:
        """(ns per record for the whole batch, ns per record inside Statistics.add)."""
        self.add_ns = 0
        whole = self.rig.time_batches(batches)
        return whole, self.add_ns / (batches * self.total)

    def close(self) -> None:
        self.rig.close()


class SnapshotBench:
    """``operations()`` and ``close_interval()`` with 100 series over 300 seconds of data."""

    def __init__(self, rate: int, seed: int, log: Callable[[str], None]) -> None:
        import numpy as np

        from ai_analytics.daemon.stats.totals import RING_SECONDS

        self.rate = rate
        self.second = CLOCK_START_S
        self.clock = ManualClock(self.second + 0.5)
        self.stats, ops, models = new_statistics(self.clock)
        rng = np.random.default_rng(seed)
        self.data = [make_records(rng, rate, self.second, ops, models) for _ in range(4)]
        t0 = time.monotonic()
        for _ in range(RING_SECONDS):
            self._next_second()
        log(f"snapshot case: {RING_SECONDS} s of {rate} events/s populated in "
            f"{time.monotonic() - t0:.1f} s")
        self.memory = self.ring_memory()
        self.memory["operations_peak_mb"] = self.operations_peak() / MB

    def operations_peak(self) -> int:
        """Bytes one operations() call allocates at its peak, beyond what it started with
        (numpy reports its buffers to tracemalloc). Untimed: tracing slows everything down."""
        was_tracing = tracemalloc.is_tracing()
        if not was_tracing:
            tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            before = tracemalloc.get_traced_memory()[0]
            self.stats.operations()
            return tracemalloc.get_traced_memory()[1] - before
        finally:
            if not was_tracing:
                tracemalloc.stop()

    def _next_second(self) -> None:
        self.second += 1
        self.clock.now = self.second + 0.5
        records, op_names, model_names = self.data[self.second % len(self.data)]
        records["ts_ns"] = records["ts_ns"] % 1_000_000_000 + self.second * 1_000_000_000
        self.stats.add(records, op_names, model_names)
        self.stats.close_interval()

    def ring_memory(self) -> dict[str, Any]:
        """What the ring (per-second totals, bucket-count rings) and the since-start store
        hold (their numpy arrays)."""
        if hasattr(self.stats, "memory"):  # sparse bucket counts: the engine sums them
            from ai_analytics.daemon.stats.statistics import BUCKET_RINGS

            held = self.stats.memory()
            return {"events_per_second": self.rate,
                    "ring_bucket_slots": sum(slots for _, slots in BUCKET_RINGS.values()),
                    "ring_bucket_mb": held["bucket_bytes"] / MB,
                    "ring_array_mb": held["totals_bytes"] / MB,
                    "capacity": self.stats.capacity}
        ring = self.stats.ring
        bucket_bytes = sum(r.counts.nbytes for r in ring.buckets.values())
        array_bytes = sum(a.nbytes for a in ring.arrays.values())
        return {
            "events_per_second": self.rate,
            "ring_bucket_slots": sum(len(r.period) for r in ring.buckets.values()),
            "ring_bucket_mb": bucket_bytes / MB,
            "ring_array_mb": array_bytes / MB,
            "since_start_bucket_mb": self.stats.since_start.buckets.nbytes / MB,
            "capacity": self.stats.capacity,
        }

    def round(self) -> tuple[float, float]:
        """(ms for operations(), ms for close_interval()) after one more second of data."""
        self.second += 1
        self.clock.now = self.second + 0.5
        records, op_names, model_names = self.data[self.second % len(self.data)]
        records["ts_ns"] = records["ts_ns"] % 1_000_000_000 + self.second * 1_000_000_000
        self.stats.add(records, op_names, model_names)
        ops_ns, rows = timed(self.stats.operations)
        close_ns, _ = timed(self.stats.close_interval)
        if len(rows) != len(OPERATIONS) * len(MODELS):
            raise RuntimeError(f"operations() returned {len(rows)} series, expected 100")
        return ops_ns / 1e6, close_ns / 1e6


def measure_in_process(args: argparse.Namespace, namespace: str,
                       log: Callable[[str], None]) -> tuple[dict[str, list[float]], dict]:
    add = AddBench(args.batch, args.batches, seed=1)
    snapshot = SnapshotBench(args.snapshot_rate, seed=2, log=log)
    drain = DrainBatchBench(namespace, args.drain_threads, args.batch, seed=3)
    try:
        runs: dict[str, Callable[[], Any]] = {
            "stats_add": add.round,
            "drain_batch": lambda: drain.round(args.batches),
            "snapshot": snapshot.round,
        }

        def after_round(r: int, results: dict[str, list[Any]]) -> None:
            whole, inside = results["drain_batch"][-1]
            ops_ms, close_ms = results["snapshot"][-1]
            log(f"round {r + 1}/{args.rounds}: stats_add {results['stats_add'][-1]:.1f} ns/rec, "
                f"drain_batch {whole:.1f} ns/rec (add {inside:.1f}), "
                f"operations {ops_ms:.1f} ms, close_interval {close_ms:.2f} ms")

        results = interleaved_rounds(runs, args.rounds, after_round)
    finally:
        drain.close()
    samples = {
        "stats_add": results["stats_add"],
        "drain_batch": [whole for whole, _ in results["drain_batch"]],
        "drain_batch_add": [inside for _, inside in results["drain_batch"]],
        "operations": [ops_ms for ops_ms, _ in results["snapshot"]],
        "close_interval": [close_ms for _, close_ms in results["snapshot"]],
    }
    extra = {"drain_lanes": args.drain_threads,
             "drain_lane_capacity": drain.capacity, "drain_batch_records": drain.total,
             "ring_memory": snapshot.memory}
    return samples, extra


# -- the daemon case -----------------------------------------------------------------------
def child_producer(args: argparse.Namespace) -> int:
    """A producer process: ``--threads`` threads emit one quota per "go" line on stdin and the
    process prints one JSON line per phase; the lanes stay open until stdin says "exit"."""
    quotas = args.child_quotas
    threads = args.threads
    go = [threading.Event() for _ in quotas]
    done = threading.Event()
    stop = threading.Event()
    phase_done = [threading.Barrier(threads + 1) for _ in quotas]
    results: list[list[dict[str, Any]]] = [[{} for _ in range(threads)] for _ in quotas]
    local = _emit._local

    def worker(t: int) -> None:
        plan = make_plan(args.child_seed * 1000 + t)
        k = t * 997  # threads start at different places in the plan
        for phase, quota in enumerate(quotas):
            go[phase].wait()
            if stop.is_set():
                return
            share = quota // threads + (1 if t < quota % threads else 0)
            accepted = waits = 0
            t0 = time.monotonic()
            emitted = 0
            while emitted < share and not stop.is_set():
                n = min(args.burst, share - emitted)
                accepted += emit_plan(plan, k, n)
                k += n
                emitted += n
                if args.child_thread_rate > 0:  # --rate: hold this thread to its share
                    ahead = t0 + emitted / args.child_thread_rate - time.monotonic()
                    if ahead > 0:
                        time.sleep(ahead)
                lane = getattr(local, "lane", None)
                if lane is None or not lane.name:  # no lane could be made: nothing to pace
                    continue
                limit = lane.capacity * args.pace_fill
                while lane.head - lane.q[L.Q_TAIL] > limit and not stop.is_set():
                    time.sleep(0.0005)
                    waits += 1
            results[phase][t] = {"emitted": share, "accepted": accepted, "start": t0,
                                 "end": time.monotonic(), "pace_waits": waits}
            phase_done[phase].wait()
        done.wait()  # keep the lane (and the thread) until the parent has measured

    workers = [threading.Thread(target=worker, args=(t,), daemon=True) for t in range(threads)]
    for w in workers:
        w.start()
    print("ready", flush=True)
    try:
        for phase in range(len(quotas)):
            if sys.stdin.readline().strip() != "go":
                return 1
            go[phase].set()
            phase_done[phase].wait()
            rows = results[phase]
            print(json.dumps({
                "phase": phase, "emitted": sum(r["emitted"] for r in rows),
                "accepted": sum(r["accepted"] for r in rows),
                "start": min(r["start"] for r in rows), "end": max(r["end"] for r in rows),
                "pace_waits": sum(r["pace_waits"] for r in rows),
            }), flush=True)
        sys.stdin.readline()  # "exit" or EOF
        return 0
    finally:
        stop.set()
        for event in go:
            event.set()
        for barrier in phase_done:
            barrier.abort()
        done.set()
        for w in workers:
            w.join(timeout=5)


class RssSampler(threading.Thread):
    """The daemon's VmRSS every ``interval`` seconds, for the JSON timeline."""

    def __init__(self, pid: int, t0: float, interval: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.pid, self.t0, self.interval = pid, t0, interval
        self.samples: list[list[float]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(self.interval):
            try:
                status = proc_status(self.pid)
            except OSError:
                return
            self.samples.append([round(time.monotonic() - self.t0, 2),
                                 round(status.get("VmRSS", 0) / 1024, 2),
                                 round(status.get("RssAnon", 0) / 1024, 2)])


class DaemonRun:
    """One daemon subprocess and its producers, in a temporary directory; everything reaped."""

    def __init__(self, namespace: str, args: argparse.Namespace,
                 log: Callable[[str], None]) -> None:
        self.namespace = namespace
        self.args = args
        self.log = log
        self.tmp = tempfile.TemporaryDirectory(prefix="aibench-agg-daemon-")
        self.daemon = DaemonProcess(Path(self.tmp.name), namespace, batch_timeout_seconds=0.05,
                                    snapshot_interval_seconds=1)
        self.children = contextlib.ExitStack()
        self.producers: list[Child] = []
        self.sampler: RssSampler | None = None

    def start_daemon(self) -> int:
        self.daemon.start()
        self.daemon.wait_for(self.daemon.state, 20.0, "the daemon's first state file")
        return self.daemon.pid

    def start_producers(self, quotas: list[list[int]]) -> None:
        args = self.args
        roles = [["--child-producer", "--threads", str(args.threads), "--burst", str(args.burst),
                  "--pace-fill", str(args.pace_fill), "--child-seed", str(p + 1),
                  "--child-thread-rate", str(args.rate / (args.producers * args.threads)),
                  "--child-quotas", *map(str, quota)]
                 for p, quota in enumerate(quotas)]
        env = {**os.environ, NAMESPACE_ENV: self.namespace}
        self.producers = self.children.enter_context(ready_children(SCRIPT, roles, env))

    def run_phase(self, timeout: float) -> dict[str, Any]:
        """Send "go" to every producer; return their summed report for the phase."""
        for child in self.producers:
            child.send("go")
        deadline = time.monotonic() + timeout
        reports = [json.loads(child.line(deadline - time.monotonic()))
                   for child in self.producers]
        return {
            "emitted": sum(r["emitted"] for r in reports),
            "accepted": sum(r["accepted"] for r in reports),
            "start": min(r["start"] for r in reports), "end": max(r["end"] for r in reports),
            "pace_waits": sum(r["pace_waits"] for r in reports),
        }

    def settled(self, accepted: int, after_unix: float, timeout: float) -> dict[str, Any]:
        """The first state file written after ``after_unix`` that accounts for ``accepted``."""
        def check() -> dict[str, Any] | None:
            doc = self.daemon.state()
            if doc is None or doc.get("written_unix", 0) < after_unix:
                return None
            e = doc["events"]
            done = e["received"] + e["invalid"] + e["overwritten"] >= accepted
            return doc if done and e["pending"] == 0 else None

        return self.daemon.wait_for(check, timeout,
                                    f"the state file to account for {accepted} events")

    def reading(self, doc: dict[str, Any]) -> dict[str, Any]:
        status = proc_status(self.daemon.pid)
        return {
            "received": doc["events"]["received"], "events": doc["events"],
            "rss_mb": status["VmRSS"] / 1024, "rss_anon_mb": status.get("RssAnon", 0) / 1024,
            "rss_file_mb": status.get("RssFile", 0) / 1024,
            "rss_shmem_mb": status.get("RssShmem", 0) / 1024,
            "hwm_mb": status.get("VmHWM", 0) / 1024,
            "cpu_s": cpu_seconds(self.daemon.pid), "at": time.monotonic(),
        }

    def run(self) -> dict[str, Any]:
        args = self.args
        t0 = time.monotonic()
        pid = self.start_daemon()
        self.log(f"daemon pid {pid} started in {time.monotonic() - t0:.1f} s")
        self.sampler = RssSampler(pid, t0)
        self.sampler.start()
        # Idle cost: CPU over a quiet second (drain loop, snapshots, resource sampling).
        cpu0, idle0 = cpu_seconds(pid), time.monotonic()
        time.sleep(1.0)
        idle_cpu = (cpu_seconds(pid) - cpu0) / (time.monotonic() - idle0)
        n = args.producers
        small, large = args.events_small, args.events_large
        quotas = [[small // n + (p < small % n), (large - small) // n + (p < (large - small) % n)]
                  for p in range(n)]
        self.start_producers(quotas)
        phases = []
        readings = []
        accepted = 0
        for phase, events in enumerate((small, large - small)):
            report = self.run_phase(timeout=args.phase_timeout)
            accepted += report["accepted"]
            doc = self.settled(accepted, time.time(), timeout=30.0)
            readings.append(self.reading(doc))
            span = report["end"] - report["start"]
            report["seconds"] = span
            report["events_per_s"] = report["accepted"] / span if span > 0 else 0.0
            phases.append(report)
            self.log(f"phase {phase + 1}: {report['emitted']} events in {span:.1f} s "
                     f"({report['events_per_s'] / 1e6:.2f} M/s, "
                     f"{report['emitted'] - report['accepted']} dropped); daemon RSS "
                     f"{readings[-1]['rss_mb']:.1f} MB at {readings[-1]['received']} received")
            if events != report["emitted"]:
                raise RuntimeError(f"phase {phase + 1} emitted {report['emitted']} of {events}")
        final = self.daemon.state() or {}
        first, second = readings
        delta_events = second["received"] - first["received"]
        cpu = second["cpu_s"] - first["cpu_s"]
        wall = second["at"] - first["at"]
        return {
            "daemon_pid": pid,
            "quotas": quotas,
            "phases": phases,
            "readings": readings,
            "rss_small_mb": first["rss_mb"],
            "rss_large_mb": second["rss_mb"],
            "rss_growth_mb": second["rss_mb"] - first["rss_mb"],
            "rss_anon_growth_mb": second["rss_anon_mb"] - first["rss_anon_mb"],
            "rss_growth_mb_per_load_s": (second["rss_mb"] - first["rss_mb"])
            / phases[1]["seconds"] if phases[1]["seconds"] > 0 else None,
            "events_per_s": phases[1]["events_per_s"],
            "daemon_cpu_s_per_m_events": cpu / (delta_events / 1e6) if delta_events else None,
            "daemon_cpu_share": cpu / wall if wall > 0 else None,
            "daemon_idle_cpu_share": idle_cpu,
            "dropped": final.get("events", second["events"])["dropped"],
            "invalid": second["events"]["invalid"],
            "overwritten": second["events"]["overwritten"],
            "records_per_batch": final.get("event_path", {}).get("records_per_batch"),
            "series": final.get("cardinality", {}).get("series"),
        }

    def close(self) -> None:
        """Let the producers go, SIGTERM the daemon; reap all; remove files and segments."""
        try:
            self.children.close()
        finally:
            try:
                self.daemon.close()
            finally:
                if self.sampler is not None:
                    self.sampler.stopping.set()
                    self.sampler.join(timeout=2)
                self.tmp.cleanup()


def measure_daemon(args: argparse.Namespace, namespace: str,
                   log: Callable[[str], None]) -> dict[str, Any]:
    """The daemon case; an error is returned in the result (``error``), never raised."""
    run = DaemonRun(namespace, args, log)
    t0 = time.monotonic()
    result: dict[str, Any]
    try:
        result = run.run()
    except Exception as exc:  # reported as a FAIL, the in-process results still count
        result = {"error": f"{type(exc).__name__}: {exc}"}
        log(f"daemon case failed: {result['error']}")
    finally:
        run.close()
    result["rss_timeline"] = run.sampler.samples if run.sampler is not None else []
    result["wall_s"] = time.monotonic() - t0
    return result


# -- the report ----------------------------------------------------------------------------
def summarize(samples: dict[str, list[float]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for case, values in samples.items():
        if not values:
            continue
        row: dict[str, Any] = {"fastest": min(values), "median": statistics.median(values),
                               "samples": values}
        if case in ("stats_add", "drain_batch", "drain_batch_add"):
            row["unit"] = "ns/record"
            row["fastest_mrecords_per_s"] = 1e3 / row["fastest"]
            row["median_mrecords_per_s"] = 1e3 / row["median"]
        else:
            row["unit"] = "ms/call"
        out[case] = row
    return out


def check_targets(summary: dict[str, dict[str, Any]], daemon: dict[str, Any] | None
                  ) -> list[dict[str, Any]]:
    targets = []
    if daemon is not None:
        growth = daemon.get("rss_growth_mb")
        if growth is None:
            targets.append({"target": f"RSS(10M) - RSS(1M) <= {TARGET_RSS_GROWTH_MB:g} MB",
                            "value": f"not measured: {daemon.get('error', 'unknown error')}",
                            "pass": False})
        else:
            targets.append({
                "target": f"RSS(large) - RSS(small) <= {TARGET_RSS_GROWTH_MB:g} MB",
                "value": f"{growth:+.1f} MB ({daemon['rss_small_mb']:.1f} -> "
                         f"{daemon['rss_large_mb']:.1f} MB)",
                "pass": growth <= TARGET_RSS_GROWTH_MB,
            })
    if "stats_add" in summary:
        mrps = summary["stats_add"]["fastest_mrecords_per_s"]
        targets.append({"target": f"Statistics.add >= {TARGET_ADD_MRPS:g} M records/s",
                        "value": f"{mrps:.2f} M records/s", "pass": mrps >= TARGET_ADD_MRPS})
    return targets


def table(report: dict[str, Any]) -> str:
    s = report["cases"]
    p = report["parameters"]
    lines = ["| case | fastest | median | M records/s (fastest / median) |",
             "|---|---:|---:|---:|"]

    def per_batch(case: str, label: str, records: int) -> None:
        row = s[case]
        lines.append(
            f"| {label} | {row['fastest'] * records / 1e6:.2f} ms/batch "
            f"| {row['median'] * records / 1e6:.2f} ms/batch "
            f"| {row['fastest_mrecords_per_s']:.2f} / {row['median_mrecords_per_s']:.2f} |")

    if "stats_add" in s:
        per_batch("stats_add", f"Statistics.add, {p['batch']} records, 100 series", p["batch"])
        records = report["extra"]["drain_batch_records"]
        per_batch("drain_batch", f"Drainer._batch, {p['drain_threads']} lanes x "
                  f"{report['extra']['drain_lane_capacity']} (read+validate+count+stats)",
                  records)
        per_batch("drain_batch_add", "… of which Statistics.add", records)
        for case, label in (("operations", "Statistics.operations(), 100 series, 300 s"),
                            ("close_interval", "Statistics.close_interval(), 1 s of data")):
            row = s[case]
            lines.append(f"| {label} | {row['fastest']:.2f} ms | {row['median']:.2f} ms | — |")
    d = report.get("daemon")
    if d is not None:
        lines += ["", "| daemon (subprocess) | value |", "|---|---:|"]
        if "error" in d:
            lines.append(f"| error | {d['error']} |")
        else:
            small, large = d["readings"]
            lines += [
                f"| RSS after {small['received']:,} received | {d['rss_small_mb']:.1f} MB "
                f"(anon {small['rss_anon_mb']:.1f}, shmem {small['rss_shmem_mb']:.1f}) |",
                f"| RSS after {large['received']:,} received | {d['rss_large_mb']:.1f} MB "
                f"(anon {large['rss_anon_mb']:.1f}, shmem {large['rss_shmem_mb']:.1f}) |",
                f"| RSS difference | {d['rss_growth_mb']:+.1f} MB "
                f"(anon {d['rss_anon_growth_mb']:+.1f} MB; "
                f"{d['rss_growth_mb_per_load_s']:+.2f} MB per second of load) |",
                f"| peak RSS (VmHWM) | {large['hwm_mb']:.1f} MB |",
                f"| events/s sustained ({p['producers']} procs x {p['threads']} threads) "
                f"| {d['events_per_s'] / 1e6:.2f} M/s |",
                f"| daemon CPU per M events | {d['daemon_cpu_s_per_m_events']:.3f} s "
                f"({d['daemon_cpu_share'] * 100:.0f} % of a core; idle "
                f"{d['daemon_idle_cpu_share'] * 100:.1f} %) |",
                f"| dropped / invalid / overwritten | {d['dropped']:,} / {d['invalid']:,} / "
                f"{d['overwritten']:,} |",
                f"| records per drain batch (mean) | {d['records_per_batch']} |",
            ]
    return "\n".join(lines)


def markdown(report: dict[str, Any]) -> str:
    m, p = report["machine"], report["parameters"]
    lines = [
        "# Aggregation benchmark results", "",
        f"Written by `bench/aggregate_bench.py`; rerun it to compare. Date: {report['date']}",
        "",
        f"- machine: {m['cpu_model']}, {m['cpu_count']} CPUs, {m['platform']}, "
        f"{m['implementation']} {m['python']}, numpy {m['numpy']}; load average before "
        f"{', '.join(f'{x:.2f}' for x in m['loadavg'])}",
        f"- command: `{report['command']}`",
        f"- source: {source_line(report['source'])}",
    ]
    if "stats_add" in report["cases"]:
        mem = report["extra"]["ring_memory"]
        lines += [
            f"- in-process: {p['rounds']} interleaved rounds; per round {p['batches']} batches "
            f"per batch case, 1 call per snapshot case; fastest round and median shown",
            f"- ring after 300 s at {mem['events_per_second']} events/s: "
            f"bucket counts in {mem['ring_bucket_slots']} slots = "
            f"{mem['ring_bucket_mb']:.1f} MB (for {mem['capacity']} series), totals arrays "
            f"{mem['ring_array_mb']:.1f} MB; one operations() call allocates "
            f"{mem['operations_peak_mb']:.1f} MB at its peak",
        ]
    d = report.get("daemon")
    if d is not None and "error" not in d:
        lines.append(
            f"- daemon: {p['events_small']:,} then {p['events_large']:,} events in all from "
            f"{p['producers']} processes x {p['threads']} threads, bursts of {p['burst']}, "
            f"paced at {p['pace_fill']:.0%} lane fill; RSS read once the state file showed "
            f"every event accounted for; {d['wall_s']:.0f} s in all")
    lines += ["", table(report), "", "Targets:", "", "```", target_lines(report["targets"]),
              "```", ""]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds (default 10)")
    parser.add_argument("--batch", type=int, default=65536,
                        help="records per batch (default 65536, the daemon's batch_size)")
    parser.add_argument("--batches", type=int, default=6,
                        help="batches per round in the batch cases (default 6)")
    parser.add_argument("--drain-threads", type=int, default=4,
                        help="threads (lanes) filled for drain_batch (default 4)")
    parser.add_argument("--snapshot-rate", type=int, default=16384,
                        help="events per second in the 300 s of the snapshot case "
                        "(default 16384)")
    parser.add_argument("--events-small", type=int, default=1_000_000,
                        help="events before the first RSS reading (default 1000000)")
    parser.add_argument("--events-large", type=int, default=10_000_000,
                        help="events in all before the second reading (default 10000000)")
    parser.add_argument("--producers", type=int, default=2, help="producer processes (default 2)")
    parser.add_argument("--threads", type=int, default=2,
                        help="threads per producer process (default 2)")
    parser.add_argument("--burst", type=int, default=1024,
                        help="events a producer thread emits between pacing checks "
                        "(default 1024)")
    parser.add_argument("--pace-fill", type=float, default=0.5,
                        help="a producer thread waits while its lane is fuller than this "
                        "(default 0.5)")
    parser.add_argument("--rate", type=float, default=0.0,
                        help="events per second for all producers together; 0, the default: "
                        "as fast as they can (a lower rate spreads the events over more "
                        "seconds, which the per-second ring keeps for 300 s)")
    parser.add_argument("--phase-timeout", type=float, default=120.0,
                        help="seconds a producer phase may take (default 120)")
    parser.add_argument("--no-daemon", action="store_true",
                        help="leave out the daemon subprocess case")
    parser.add_argument("--no-in-process", action="store_true",
                        help="leave out the in-process cases")
    parser.add_argument("--out", type=Path, default=HERE / "aggregate_results.json",
                        help="JSON results (default bench/aggregate_results.json)")
    parser.add_argument("--md", type=Path, default=HERE / "AGGREGATE.md",
                        help="markdown copy of the table, overwritten (default bench/AGGREGATE.md)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    parser.add_argument("--child-producer", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child-quotas", type=int, nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--child-seed", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--child-thread-rate", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_producer:
        return args
    if min(args.rounds, args.batches, args.drain_threads, args.producers, args.threads,
           args.burst, args.snapshot_rate) < 1:
        parser.error("counts must be at least 1")
    if not L.MIN_CAPACITY <= args.batch <= 1 << 22:
        parser.error(f"--batch must be in {L.MIN_CAPACITY}..{1 << 22}")
    if not 0 < args.events_small < args.events_large:
        parser.error("need 0 < --events-small < --events-large")
    if args.rate < 0:
        parser.error("--rate must be 0 or more")
    if not 0.0 < args.pace_fill < 1.0:
        parser.error("--pace-fill must be between 0 and 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child_producer:
        return child_producer(args)
    tuning = tune_like_the_daemon()
    import numpy as np

    exit_on_sigterm()
    base = f"aibench-agg-{os.getpid()}"
    drain_ns, daemon_ns = f"{base}-drain", f"{base}-daemon"
    started = time.monotonic()
    start = RunStart(numpy=np.__version__)
    log = progress(args.quiet, started)
    log(tuning)
    samples: dict[str, list[float]] = {}
    extra: dict[str, Any] = {}
    daemon: dict[str, Any] | None = None
    try:
        if not args.no_in_process:
            samples, extra = measure_in_process(args, drain_ns, log)
        if not args.no_daemon:
            daemon = measure_daemon(args, daemon_ns, log)
    finally:
        left = remove_segments(drain_ns) + remove_segments(daemon_ns)
        if left:
            log(f"removed leftover segments: {', '.join(left)}")
    summary = summarize(samples)
    report: dict[str, Any] = {
        **start.header(),
        "wall_s": time.monotonic() - started,
        "tuning": tuning,
        "parameters": {k: v for k, v in vars(args).items()
                       if not k.startswith("child_") and k not in ("out", "md")},
        "cases": summary,
        "extra": extra,
        "daemon": daemon,
    }
    report["targets"] = check_targets(summary, daemon)
    print(table(report))
    print()
    print(target_lines(report["targets"]))
    write_results(report, args.out, args.md, markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
