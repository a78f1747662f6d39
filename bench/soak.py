"""Soak: a real ai-analyticsd under steady, churning load for minutes, checked as it runs.

Usage, from the repository root::

    .venv/bin/python bench/soak.py [--duration SECONDS] [--rate EVENTS_PER_S]
                                   [--producers N] [--threads N] [--churn N]
                                   [--restart-every SECONDS] [--batch-timeout SECONDS]
                                   [--namespace NAME] [--out DIR] [--plot PATH]

One ``ai-analyticsd`` (private namespace, temporary ``state_dir``, a snapshot every second,
``batch_timeout_seconds`` from ``--batch-timeout``, every other setting at its default) and
``--producers`` processes. Each producer has ``--threads`` steady threads and ``--churn``
churn slots, where a thread starts, emits for 0.2 to 2 s and ends, and the next one starts:
lanes are created and reclaimed all the time. Every thread offers the same share of
``--rate``, a realistic mix (six series over five operations, errors, quality scores, cache
lookups, LLM extras on some, a cache_state call now and then, and one event in 2000
deliberately invalid). Every ``--restart-every`` seconds the first producer is stopped and
a new one takes its place; the old one alternately exits (its lanes retire) or is SIGKILLed
(its lanes are left to a dead process). Each producer keeps four counters per thread slot in
a small mmap'd file: calls started (stored before ``emit`` is called), accepted (True),
dropped (False) and accepted invalid events.

Every 0.1 s the script looks at the drain lag in shared memory itself (age of the oldest
unread record) and at the state file; as soon as a new state file appears (every second) it
records a sample: the daemon's RSS (total, anonymous, shared) and CPU from /proc, the state
file's ``events`` and ``event_path.drain_lag_seconds``, the calls made so far, the largest
lag it observed since the last sample, the lanes in /dev/shm and the daemon's mappings of
lanes. At the end the producers stop, the lanes are left to be reclaimed, the daemon gets
SIGTERM, and the pass criteria (see bench/SOAK.md for what each would catch) are printed as
PASS/FAIL lines; exit status 0 when all pass, 1 otherwise, 2 for bad arguments or a missing
matplotlib, 130 on Ctrl-C.

Written to ``--out`` (default: a new temporary directory, printed): ``samples.csv``,
``results.json`` (settings, samples, criteria), ``soak.png`` (``--plot``), the daemon's
config, log and state_dir, and the producers' counter files. Processes and segments are
cleaned up on Ctrl-C, SIGTERM and failure.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import mmap
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ai_analytics import client
from ai_analytics.client import _layout as L
from ai_analytics.client._segments import NAMESPACE_ENV

from benchlib.children import Child
from benchlib.daemon import DaemonProcess, events_total, wait_for
from benchlib.lanes import SHM_DIR, lane_names, remove_segments
from benchlib.proc import cpu_seconds, proc_status

SCRIPT = Path(__file__).resolve()

SNAPSHOT_INTERVAL = 1.0  # seconds between state files, and between samples
POLL_SECONDS = 0.1  # how often the script looks at shared memory and the state file
STOP_TIMEOUT = 10.0  # the daemon's stop_timeout_seconds
COUNTERS = ("started", "accepted", "dropped", "invalid")  # per thread slot, 8 bytes each
BURST_SECONDS = 0.01  # a thread emits 10 ms worth of its rate at once, then sleeps
MAX_BEHIND_SECONDS = 1.0  # a thread that falls further behind its schedule starts afresh
CHURN_LIFE = (0.2, 2.0)  # seconds a churn thread emits before it ends
PLAN_SIZE = 4096  # pre-drawn events per thread, cycled
INVALID_EVERY = 2000  # one event in this many is invalid on purpose
# Anonymous RSS (the heap, where a leak lands) may grow this much after warm-up. The
# daemon's memory is per series, allocated when a series first appears (docs/snapshot.md);
# after warm-up what may still move is malloc's arenas and SQLite's page cache (2 MB).
ANON_GROWTH_BOUND_MB = 8.0
LOAD_FLOOR = 0.5  # the soak fails if fewer than this share of the offered calls were made

# (operation, model, weight, median latency ms, error rate, quality mean or None,
#  cache hit rate or None, share with LLM extras)
SERIES = (
    ("text_generation", "llama-3-8b", 25, 420.0, 0.01, 0.85, None, 0.3),
    ("text_generation", "mistral-7b", 15, 380.0, 0.08, 0.82, None, 0.3),
    ("chat_completion", "llama-3-70b", 10, 900.0, 0.02, 0.90, None, 0.6),
    ("embedding", "bge-small", 28, 8.0, 0.002, None, 0.45, 0.0),
    ("classification", "distilbert", 12, 15.0, 0.01, 0.93, 0.2, 0.0),
    ("style_transfer", "sd-xl-turbo", 5, 4000.0, 0.03, 0.90, None, 0.0),
)
CACHE_STATE_WEIGHT = 3  # cache_state calls, against the series' weights (sum 95)

Planned = tuple[Callable[..., bool], tuple[Any, ...], dict[str, Any], bool]


# -- the producers' side -------------------------------------------------------------------
def make_plan(seed: int) -> list[Planned]:
    """``PLAN_SIZE`` calls drawn from the mix: (function, args, kwargs, invalid on purpose)."""
    rng = random.Random(seed)
    weights = [s[2] for s in SERIES] + [CACHE_STATE_WEIGHT]
    plan: list[Planned] = []
    for i in range(PLAN_SIZE):
        pick = rng.choices(range(len(weights)), weights)[0]
        if pick == len(SERIES):
            plan.append((client.cache_state, ("prompt-cache",),
                         {"size": rng.randint(40_000, 50_000), "evictions": rng.randint(0, 5)},
                         False))
            continue
        op, model, _, median, error_rate, quality, hit_rate, llm = SERIES[pick]
        latency = median * math.exp(rng.gauss(0.0, 0.7))
        score = min(1.0, max(0.0, rng.gauss(quality, 0.05))) if quality is not None else None
        kwargs: dict[str, Any] = {
            "model": model, "quality": score, "success": rng.random() >= error_rate,
            "cache_hit": rng.random() < hit_rate if hit_rate is not None else None,
        }
        if rng.random() < llm:
            tokens_out = rng.randint(16, 512)
            kwargs.update(ttft_ms=latency / tokens_out * rng.uniform(2, 8),
                          queue_ms=rng.expovariate(1 / 20), tokens_in=rng.randint(32, 4096),
                          tokens_out=tokens_out)
        invalid = i % INVALID_EVERY == INVALID_EVERY - 1
        if invalid:  # values the daemon must count as invalid, never raise on
            latency, kwargs["quality"] = rng.choice([(math.nan, 0.5), (-1.0, 0.5), (5.0, 1.5)])
        plan.append((client.emit, (op, latency), kwargs, invalid))
    return plan


def map_counts(path: Path, writable: bool) -> memoryview:
    """A producer's counter file as 8-byte integers: slot s's counters at 4 s .. 4 s + 3."""
    fd = os.open(path, os.O_RDWR if writable else os.O_RDONLY)
    try:
        prot = mmap.PROT_READ | mmap.PROT_WRITE if writable else mmap.PROT_READ
        return memoryview(mmap.mmap(fd, 0, prot=prot)).cast("Q")
    finally:
        os.close(fd)


def emit_paced(plan: list[Planned], counts: memoryview, slot: int, rate: float,
               stop: threading.Event, until: float = math.inf) -> None:
    """Make the planned calls at ``rate`` per second until ``stop`` or ``until``, storing
    this slot's counters after each call ("started" before it, so that whatever the daemon
    has counted is never more than the calls started)."""
    base = slot * len(COUNTERS)
    started, accepted, dropped, invalid = counts[base : base + len(COUNTERS)].tolist()
    burst = max(1, round(rate * BURST_SECONDS))
    k = random.randrange(len(plan))
    t0, sent = time.monotonic(), 0
    while not stop.is_set() and time.monotonic() < until:
        for _ in range(burst):
            fn, args, kwargs, bad = plan[k % PLAN_SIZE]
            k += 1
            started += 1
            counts[base] = started
            if fn(*args, **kwargs):
                accepted += 1
                counts[base + 1] = accepted
                if bad:
                    invalid += 1
                    counts[base + 3] = invalid
            else:
                dropped += 1
                counts[base + 2] = dropped
        sent += burst
        ahead = t0 + sent / rate - time.monotonic()
        if ahead > 0:
            stop.wait(ahead)
        elif ahead < -MAX_BEHIND_SECONDS:  # starved for a while: no endless catch-up burst
            t0, sent = time.monotonic(), 0


def run_producer(args: argparse.Namespace) -> int:
    """A producer process. Prints "ready" once its threads run; on SIGTERM its threads stop
    emitting and it prints "stopped"; then its steady threads keep their lanes until a line
    (or EOF) on stdin lets them end, unless the parent SIGKILLs it first."""
    counts = map_counts(args.counts, writable=True)
    plan = make_plan(args.seed)
    stop, release = threading.Event(), threading.Event()
    # SIGTERM is taken with sigtimedwait below, not by a handler: a handler that set ``stop``
    # could interrupt the main thread inside that same Event's lock and deadlock.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # threads inherit the mask
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is the parent's to handle
    quiet: list[threading.Event] = []

    def steady(slot: int, done: threading.Event) -> None:
        try:
            emit_paced(plan, counts, slot, args.slot_rate, stop)
        finally:
            done.set()
        release.wait()  # the lane stays live until the parent decides how this process ends

    def churn(slot: int, done: threading.Event) -> None:
        rng = random.Random(args.seed * 1000 + slot)
        try:
            while not stop.is_set():
                worker = threading.Thread(target=emit_paced, args=(
                    plan, counts, slot, args.slot_rate, stop,
                    time.monotonic() + rng.uniform(*CHURN_LIFE)))
                worker.start()
                worker.join()  # one writer per slot at a time
        finally:
            done.set()

    threads = []
    for slot in range(args.threads + args.churn):
        done = threading.Event()
        quiet.append(done)
        target = steady if slot < args.threads else churn
        threads.append(threading.Thread(target=target, args=(slot, done)))
    for thread in threads:
        thread.start()
    print("ready", flush=True)
    parent = os.getppid()
    while signal.sigtimedwait({signal.SIGTERM}, 1.0) is None:
        if os.getppid() != parent:  # the soak was killed without stopping us: no orphans
            os._exit(1)
    stop.set()
    for done in quiet:
        done.wait()
    print("stopped", flush=True)
    sys.stdin.readline()
    release.set()
    for thread in threads:
        thread.join()
    return 0


# -- the parent's side ---------------------------------------------------------------------
class Producer:
    """One producer process and its counter file."""

    def __init__(self, run_dir: Path, serial: int, args: argparse.Namespace) -> None:
        slots = args.threads + args.churn
        self.counts_path = run_dir / f"counts-{serial}.bin"
        self.counts_path.write_bytes(bytes(8 * len(COUNTERS) * slots))
        role = ["--child-producer", "--counts", str(self.counts_path), "--threads",
                str(args.threads), "--churn", str(args.churn), "--slot-rate",
                str(args.rate / (args.producers * slots)), "--seed", str(serial + 1)]
        # Warnings are errors: a producer's stderr must stay empty (the "producers" criterion).
        env = {**os.environ, NAMESPACE_ENV: args.namespace, "PYTHONWARNINGS": "error"}
        self.child = Child(SCRIPT, role, env, stderr=subprocess.PIPE)
        self.proc = self.child.proc
        self.counts = map_counts(self.counts_path, writable=False)
        self.expected_rc = 0
        self.stderr = ""
        try:
            self.child.expect("ready", timeout=30.0)
        except BaseException:  # Ctrl-C included: nobody else knows this process yet
            self.abort()
            raise

    def totals(self) -> dict[str, int]:
        n = len(COUNTERS)
        values = self.counts.tolist()
        return {name: sum(values[i::n]) for i, name in enumerate(COUNTERS)}

    def stop(self, kill: bool) -> None:
        """SIGTERM: stop emitting; then end the process (its lanes retire) or SIGKILL it
        (its lanes are left to a dead process). No call is in flight either way."""
        self.proc.send_signal(signal.SIGTERM)
        self.child.expect("stopped", timeout=30.0)
        if kill:
            self.proc.kill()
            self.expected_rc = -signal.SIGKILL
        _, self.stderr = self.proc.communicate("" if kill else "exit\n", timeout=30.0)

    def problem(self) -> str | None:
        """Why this producer did not end as planned, or None."""
        if self.proc.returncode != self.expected_rc:
            return f"producer {self.proc.pid} exit code {self.proc.returncode}"
        if self.stderr.strip():
            return f"producer {self.proc.pid} stderr: {self.stderr.strip()[-500:]}"
        return None

    def abort(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate()


class ProcStat:
    """The daemon's memory, CPU and lane mappings, from /proc."""

    def __init__(self, pid: int, namespace: str) -> None:
        self.pid = pid
        self.lane_path = f"{SHM_DIR}/{namespace}.lane."
        self.last: tuple[float, float] | None = None

    def memory_mb(self) -> dict[str, float]:
        kb = proc_status(self.pid)
        return {"rss_mb": kb["VmRSS"] / 1024, "anon_mb": kb["RssAnon"] / 1024,
                "shmem_mb": kb["RssShmem"] / 1024}

    def cpu_percent(self) -> float | None:
        """Share of one core since the previous call (None at the first)."""
        cpu, now = cpu_seconds(self.pid), time.monotonic()
        previous, self.last = self.last, (now, cpu)
        if previous is None or now <= previous[0]:
            return None
        return 100.0 * (cpu - previous[1]) / (now - previous[0])

    def lane_maps(self) -> int:
        """How many lane segments the daemon has mapped (unlinked ones included)."""
        with open(f"/proc/{self.pid}/maps") as f:
            return sum(self.lane_path in line for line in f)


def observed_lag(namespace: str) -> float:
    """Age of the oldest unread record in the namespace's lanes, read from shared memory:
    an outside view of the drain lag, taken at any moment of the daemon's loop."""
    from ai_analytics.cli.shm_view import read_namespace

    now, oldest = time.monotonic_ns(), 0.0
    for lane in read_namespace(namespace).lanes:
        if lane.pending == 0:
            continue
        offset = (L.HEADER_SIZE + L.NAME_ENTRY_SIZE * lane.names_capacity
                  + L.RECORD_SIZE * (lane.tail % lane.capacity))
        try:
            fd = os.open(os.path.join(SHM_DIR, lane.name), os.O_RDONLY)
        except FileNotFoundError:  # reclaimed meanwhile
            continue
        try:
            seq, ts_ns = int.from_bytes(os.pread(fd, 8, offset), "little"), int.from_bytes(
                os.pread(fd, 8, offset + 8), "little")
        finally:
            os.close(fd)
        if seq == lane.tail and 0 < ts_ns <= now:  # still the record at the tail
            oldest = max(oldest, (now - ts_ns) / 1e9)
    return oldest


class Soak:
    """The daemon, the producers, the samples; everything started here is reaped here."""

    def __init__(self, args: argparse.Namespace, run_dir: Path) -> None:
        self.args = args
        self.run_dir = run_dir
        self.state_dir = run_dir / "state"
        self.daemon: DaemonProcess | None = None
        self.producers: list[Producer] = []
        self.ended: list[Producer] = []
        self.serial = 0
        self.samples: list[dict[str, Any]] = []
        self.restarts = {"exited": 0, "killed": 0}
        self.warmup = min(max(30.0, 0.2 * args.duration), args.duration / 2)
        self.lag_bound = 2 * args.batch_timeout + 1.0
        # A state write is fsync'd and runs beside the loop: a busy disk may hold it a while.
        self.fresh_bound = SNAPSHOT_INTERVAL + args.batch_timeout + 5.0

    # -- running -----------------------------------------------------------------------------
    def start(self) -> None:
        args = self.args
        self.daemon = DaemonProcess(
            self.run_dir, args.namespace, state_dir=str(self.state_dir),
            snapshot_interval_seconds=SNAPSHOT_INTERVAL,
            batch_timeout_seconds=args.batch_timeout, stop_timeout_seconds=STOP_TIMEOUT)
        self.daemon.start()
        self.daemon.wait_for(self.daemon.state, 30.0, "the first state file")
        self.procstat = ProcStat(self.daemon.pid, args.namespace)
        for _ in range(args.producers):
            self.producers.append(self._new_producer())

    def _new_producer(self) -> Producer:
        self.serial += 1
        return Producer(self.run_dir, self.serial, self.args)

    def restart_first(self) -> None:
        kill = self.restarts["exited"] > self.restarts["killed"]
        old = self.producers[0]
        old.stop(kill)
        self.ended.append(old)
        self.restarts["killed" if kill else "exited"] += 1
        self.producers[0] = self._new_producer()

    def calls(self) -> dict[str, int]:
        total = dict.fromkeys(COUNTERS, 0)
        for producer in self.ended + self.producers:
            for name, value in producer.totals().items():
                total[name] += value
        return total

    def state_file_id(self) -> tuple[int, int] | None:
        """Changes with every state file written (each is a new file, renamed into place)."""
        try:
            info = os.stat(self.state_dir / "state.json")
        except FileNotFoundError:
            return None
        return info.st_ino, info.st_mtime_ns

    def sample(self, t0: float, observed: float) -> None:
        assert self.daemon is not None
        state = self.daemon.state()
        calls = self.calls()  # right after the state: it cannot count a later call
        now = time.monotonic()
        row: dict[str, Any] = {"t": round(now - t0, 2), **self.procstat.memory_mb(),
                               "cpu_percent": self.procstat.cpu_percent(),
                               "lane_maps": self.procstat.lane_maps(),
                               "lanes_shm": len(lane_names(self.args.namespace)),
                               "observed_lag_s": observed,
                               **{f"calls_{k}": v for k, v in calls.items()}}
        if state is not None:
            events = state["events"]
            row.update(events, counted=events_total(state),
                       state_age_s=time.time() - state["written_unix"],
                       written_unix=state["written_unix"],
                       drain_lag_s=state["event_path"]["drain_lag_seconds"],
                       max_fill=state["event_path"]["max_fill"],
                       lanes_attached=len(state["lanes"]),
                       lanes_reclaimed=state["lanes_summary"]["reclaimed"])
        previous = self.samples[-1] if self.samples else None
        if previous is not None:
            row["offered_per_s"] = ((row["calls_started"] - previous["calls_started"])
                                    / (now - t0 - previous["t"]))
            span = row.get("written_unix", 0) - previous.get("written_unix", 0)
            row["received_per_s"] = ((row["received"] - previous["received"]) / span
                                     if "received" in row and "received" in previous
                                     and span > 0
                                     else previous.get("received_per_s"))
        self.samples.append(row)

    def run_load(self) -> None:
        """Poll every ``POLL_SECONDS``: the drain lag seen in shared memory (its maximum goes
        into the next sample), and the state file: a sample is taken as soon as a new one
        appears, so that the calls read beside it are only just later than its counts, or
        after ``SNAPSHOT_INTERVAL`` without one."""
        assert self.daemon is not None and self.daemon.proc is not None
        args = self.args
        t0 = last_sample = time.monotonic()
        next_restart = args.restart_every if args.restart_every > 0 else math.inf
        next_print = 10.0
        seen = self.state_file_id()
        observed = 0.0
        while True:
            time.sleep(POLL_SECONDS)
            if self.daemon.proc.poll() is not None:
                raise RuntimeError(f"the daemon exited during the load, exit code "
                                   f"{self.daemon.proc.returncode}")
            observed = max(observed, observed_lag(args.namespace))
            current = self.state_file_id()
            now = time.monotonic()
            if current == seen and now - last_sample < SNAPSHOT_INTERVAL:
                continue
            seen, last_sample = current, now
            self.sample(t0, observed)
            observed = 0.0
            elapsed = now - t0
            if elapsed >= args.duration:
                break
            if elapsed >= next_restart:
                self.restart_first()
                next_restart += args.restart_every
            if elapsed >= next_print:
                next_print += 10.0
                last = self.samples[-1]
                print(f"  {elapsed:5.0f} s  calls {last['calls_started']:,}  counted "
                      f"{last.get('counted', 0):,}  RSS {last['rss_mb']:.1f} MB  lanes "
                      f"{last['lanes_shm']}  lag {last.get('drain_lag_s', 0):.3f} s / "
                      f"{last['observed_lag_s']:.3f} s", flush=True)
        self.load_seconds = time.monotonic() - t0

    def finish(self) -> dict[str, Any]:
        """Stop the producers, let the daemon reclaim every lane, SIGTERM it; what it left."""
        assert self.daemon is not None
        for producer in self.producers:
            producer.stop(kill=False)
        self.ended += self.producers
        self.producers = []
        end: dict[str, Any] = {"calls": self.calls()}
        try:
            wait_for(lambda: not lane_names(self.args.namespace), 30.0,
                     "every lane reclaimed")
            end["reclaimed_before_stop"] = True
        except TimeoutError:
            end["reclaimed_before_stop"] = False
        with contextlib.suppress(TimeoutError):  # it unlinks a lane, then unmaps it
            wait_for(lambda: self.procstat.lane_maps() == 0, 5.0, "lane mappings gone")
        end["lane_maps_before_stop"] = self.procstat.lane_maps()
        end["rss_before_stop"] = self.procstat.memory_mb()
        end["exit_code"] = self.daemon.stop(timeout=STOP_TIMEOUT + 20.0)
        end["state"] = self.daemon.state()
        end["lanes_left"] = lane_names(self.args.namespace)
        end["log"] = self.daemon.log()
        return end

    def close(self) -> None:
        for producer in self.producers:
            producer.abort()
        if self.daemon is not None:
            self.daemon.close()
        remove_segments(self.args.namespace)


# -- the verdict ---------------------------------------------------------------------------
def criterion(name: str, title: str, passed: bool, detail: str) -> dict[str, Any]:
    return {"name": name, "title": title, "passed": bool(passed), "detail": detail}


def judge(soak: Soak, end: dict[str, Any]) -> list[dict[str, Any]]:
    args, samples = soak.args, soak.samples
    after = [s for s in samples if s["t"] >= soak.warmup]
    head, tail = after[:5], after[-5:]
    base = statistics.median(s["anon_mb"] for s in head) if head else math.nan
    last = statistics.median(s["anon_mb"] for s in tail) if tail else math.nan
    total_base = statistics.median(s["rss_mb"] for s in head) if head else math.nan
    total_last = statistics.median(s["rss_mb"] for s in tail) if tail else math.nan
    growth = last - base
    over = [s for s in samples if "counted" in s and s["counted"] > s["calls_started"]]
    calls = end["calls"]
    state = end["state"] or {"events": {}, "lanes_summary": {}}
    events = state["events"]
    expected = {"received": calls["accepted"] - calls["invalid"], "dropped": calls["dropped"],
                "overwritten": 0, "invalid": calls["invalid"], "lost_on_restart": 0,
                "pending": 0, "no_lane": 0}
    wrong = {k: (events.get(k), v) for k, v in expected.items() if events.get(k) != v}
    consistent = calls["started"] == calls["accepted"] + calls["dropped"]
    lag = max((s.get("drain_lag_s", 0.0) for s in samples), default=math.nan)
    seen = max((s["observed_lag_s"] for s in samples), default=math.nan)
    stale = max((s.get("state_age_s", math.inf) for s in samples), default=math.inf)
    offered = args.rate * soak.load_seconds
    reclaimed = state["lanes_summary"].get("reclaimed", 0)
    min_reclaimed = int(args.producers * args.churn * soak.load_seconds / CHURN_LIFE[1] / 2)
    # Restarts fall due at every multiple of --restart-every before the end of the load.
    planned = math.ceil(args.duration / args.restart_every) - 1 if args.restart_every > 0 else 0
    done = soak.restarts["exited"] + soak.restarts["killed"]
    problems = [p for p in (producer.problem() for producer in soak.ended) if p]
    log = end["log"]
    bad_lines = [line for line in log.splitlines()
                 if "Traceback" in line or " ERROR " in line or " CRITICAL " in line]
    return [
        criterion("load", "the load ran as planned",
                  calls["started"] >= LOAD_FLOOR * offered and reclaimed >= min_reclaimed
                  and done == planned,
                  f"{calls['started']:,} calls of {offered:,.0f} offered (floor "
                  f"{LOAD_FLOOR:.0%}); {reclaimed} lanes reclaimed (floor {min_reclaimed}); "
                  f"{done} producer restarts of {planned} ({soak.restarts['killed']} SIGKILL)"),
        criterion("producers", "every producer ended as planned, silently", not problems,
                  "; ".join(problems) or f"{len(soak.ended)} producers, stderr empty"),
        criterion("rss", f"anonymous RSS growth after warm-up ({soak.warmup:.0f} s) "
                  f"<= {ANON_GROWTH_BOUND_MB:g} MB",
                  len(after) >= 10 and growth <= ANON_GROWTH_BOUND_MB,
                  f"{growth:+.2f} MB ({base:.1f} -> {last:.1f} MB, medians of 5 samples; "
                  f"total RSS {total_base:.1f} -> {total_last:.1f} MB, "
                  f"{len(after)} samples after warm-up)"),
        criterion("bounded", "counted never exceeded calls made, at every sample",
                  not over and len(samples) >= 0.8 * args.duration / SNAPSHOT_INTERVAL,
                  f"{len(samples)} samples" + (f"; first excess at {over[0]['t']} s: "
                                               f"{over[0]['counted']} > "
                                               f"{over[0]['calls_started']}" if over else "")),
        criterion("reconciled", "final counters reconcile exactly with the calls",
                  end["state"] is not None and not wrong and consistent
                  and events_total(state) == calls["started"],
                  f"{calls['started']:,} calls, {events_total(state):,} counted; received "
                  f"{events.get('received', 0):,}, dropped {events.get('dropped', 0):,}, "
                  f"invalid {events.get('invalid', 0):,}"
                  + ("" if end["state"] else "; no final state file")
                  + (f"; expected (got, want): {wrong}" if wrong else "")
                  + ("" if consistent else "; producers' counters inconsistent")),
        criterion("lag", f"drain lag <= 2 x batch_timeout + 1 s = {soak.lag_bound:g} s",
                  lag <= soak.lag_bound and seen <= soak.lag_bound,
                  f"max {lag:.3f} s in the state file, {seen:.3f} s observed in shared memory"),
        criterion("fresh", f"state file never older than {soak.fresh_bound:g} s",
                  stale <= soak.fresh_bound, f"oldest seen {stale:.2f} s"),
        criterion("exit", "daemon exits 0 on SIGTERM", end["exit_code"] == 0,
                  f"exit code {end['exit_code']}"),
        criterion("lanes", "no lane left in /dev/shm, none mapped by the daemon",
                  not end["lanes_left"] and end["reclaimed_before_stop"]
                  and end["lane_maps_before_stop"] == 0,
                  f"{len(end['lanes_left'])} left after stop; all reclaimed before stop: "
                  f"{end['reclaimed_before_stop']}; lane mappings in the daemon then: "
                  f"{end['lane_maps_before_stop']}"),
        criterion("log", "no traceback or error in the daemon's log", not bad_lines,
                  f"{len(log.splitlines())} lines" + (f"; first: {bad_lines[0]}"
                                                      if bad_lines else "")),
    ]


def cpu_report(soak: Soak) -> str:
    values = [s["cpu_percent"] for s in soak.samples
              if s["t"] >= soak.warmup and s["cpu_percent"] is not None]
    if not values:
        return "daemon CPU: no samples"
    return (f"daemon CPU after warm-up: mean {statistics.fmean(values):.1f} %, max "
            f"{max(values):.1f} % of one core (reported, not judged)")


# -- output --------------------------------------------------------------------------------
def write_samples(samples: list[dict[str, Any]], path: Path) -> None:
    columns = list(dict.fromkeys(k for s in samples for k in s))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(samples)


def plot(soak: Soak, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = soak.samples
    t = [s["t"] for s in samples]

    def series(key: str) -> list[float]:
        return [math.nan if s.get(key) is None else s[key] for s in samples]

    fig, axes = plt.subplots(4, 1, sharex=True, figsize=(10, 11))
    panels = [
        ("daemon RSS (MB)", [("rss_mb", "total"), ("anon_mb", "anonymous")]),
        ("events/s", [("offered_per_s", "calls made"), ("received_per_s", "received")]),
        ("drain lag (s)", [("drain_lag_s", "state file"), ("observed_lag_s", "observed")]),
        ("lanes", [("lanes_shm", "in /dev/shm"), ("lanes_attached", "attached")]),
    ]
    for ax, (label, lines) in zip(axes, panels, strict=True):
        for key, name in lines:
            ax.plot(t, series(key), label=name, linewidth=1)
        ax.axvspan(0, soak.warmup, color="0.9", label="warm-up")
        ax.set_ylabel(label)
        ax.legend(loc="upper right", fontsize="small")
        ax.grid(alpha=0.3)
    axes[2].axhline(soak.lag_bound, color="red", linestyle="--", linewidth=1, label="bound")
    axes[-1].set_xlabel("seconds")
    fig.suptitle(f"ai-analyticsd soak: {soak.args.duration:g} s at {soak.args.rate:,.0f} "
                 f"calls/s offered")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def report(soak: Soak, end: dict[str, Any], criteria: list[dict[str, Any]],
           plot_path: Path) -> None:
    args = soak.args
    settings = {k: v for k, v in vars(args).items() if not k.startswith("child")}
    settings.update(warmup_seconds=soak.warmup, lag_bound_seconds=soak.lag_bound,
                    anon_growth_bound_mb=ANON_GROWTH_BOUND_MB,
                    snapshot_interval_seconds=SNAPSHOT_INTERVAL, out=str(soak.run_dir),
                    plot=str(plot_path))
    final = {k: v for k, v in end.items() if k not in ("log", "state")}
    final["events"] = (end["state"] or {}).get("events")
    results = {"settings": settings, "restarts": soak.restarts, "end": final,
               "cpu": cpu_report(soak), "criteria": criteria, "samples": soak.samples}
    (soak.run_dir / "results.json").write_text(json.dumps(results, indent=1, default=str))
    write_samples(soak.samples, soak.run_dir / "samples.csv")
    plot(soak, plot_path)
    print(cpu_report(soak))
    print("criteria:")
    for c in criteria:
        print(f"  {'PASS' if c['passed'] else 'FAIL'}  {c['title']}  ({c['detail']})")
    passed = sum(c["passed"] for c in criteria)
    print(f"result: {'PASS' if passed == len(criteria) else 'FAIL'} "
          f"({passed}/{len(criteria)} criteria)")
    print(f"files: {soak.run_dir} (samples.csv, results.json, daemon.log); plot {plot_path}")


# -- entry ---------------------------------------------------------------------------------
def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=600.0, help="seconds of load (600)")
    p.add_argument("--rate", type=float, default=20_000.0,
                   help="calls per second offered by all producers together (20000)")
    p.add_argument("--producers", type=int, default=3, help="producer processes (3)")
    p.add_argument("--threads", type=int, default=2, help="steady threads per producer (2)")
    p.add_argument("--churn", type=int, default=2,
                   help="churn slots per producer: short-lived threads one after another (2)")
    p.add_argument("--restart-every", type=float, default=15.0,
                   help="seconds between restarts of the first producer; 0: never (15)")
    p.add_argument("--batch-timeout", type=float, default=1.0,
                   help="the daemon's batch_timeout_seconds (1.0, its default)")
    p.add_argument("--namespace", default=f"aisoak-{os.getpid()}")
    p.add_argument("--out", type=Path, help="results directory (default: a new temporary one)")
    p.add_argument("--plot", type=Path, help="PNG path (default: OUT/soak.png)")
    p.add_argument("--child-producer", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--counts", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--slot-rate", type=float, help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if not args.child_producer:
        if args.duration < 20 or args.rate <= 0 or args.producers < 1 or args.threads < 0:
            p.error("need --duration >= 20, --rate > 0, --producers >= 1, --threads >= 0")
        if args.churn < 0 or args.threads + args.churn < 1 or args.batch_timeout <= 0:
            p.error("need --churn >= 0, at least one thread per producer, --batch-timeout > 0")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.child_producer:
        return run_producer(args)
    try:  # before minutes of load, not after
        import matplotlib  # noqa: F401
    except ImportError as exc:
        print(f"soak: matplotlib is needed for the plot ({exc}); install the bench extra: "
              ".venv/bin/pip install -e '.[bench]'", file=sys.stderr)
        return 2
    run_dir = args.out or Path(tempfile.mkdtemp(prefix="ai-analytics-soak-"))
    if (run_dir / "state").exists():  # a daemon would resume from it, a log would mix
        print(f"soak: {run_dir} holds an earlier run; give --out a new directory",
              file=sys.stderr)
        return 2
    run_dir.mkdir(parents=True, exist_ok=True)
    plot_path = args.plot or run_dir / "soak.png"

    def terminate(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, terminate)  # even where it was inherited as ignored
    soak = Soak(args, run_dir)
    slots = args.threads + args.churn
    print(f"soak: {args.duration:g} s, {args.rate:,.0f} calls/s offered by {args.producers} "
          f"producers x ({args.threads} steady + {args.churn} churn threads), first producer "
          f"restarted every {args.restart_every:g} s; namespace {args.namespace}; "
          f"{args.rate / (args.producers * slots):,.0f} calls/s per thread", flush=True)
    try:
        soak.start()
        soak.run_load()
        end = soak.finish()
        criteria = judge(soak, end)
        report(soak, end, criteria, plot_path)
        return 0 if all(c["passed"] for c in criteria) else 1
    except KeyboardInterrupt:
        print("soak: interrupted; stopping everything", file=sys.stderr)
        return 130
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:  # TimeoutError too
        print(f"soak: FAIL: {exc}", file=sys.stderr)
        if soak.daemon is not None:
            print(f"daemon log (last lines):\n{soak.daemon.log()[-3000:]}", file=sys.stderr)
        return 1
    finally:
        with contextlib.suppress(KeyboardInterrupt):
            soak.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
