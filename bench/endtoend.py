"""What recording events costs end to end, in CPU seconds per million events: the producers
plus the daemon, next to the producers' own pacing loop and to prometheus_client's
multiprocess mode.

Usage, from the repository root::

    .venv/bin/python bench/endtoend.py [--rates 10k,100k,1M] [--producers 4] [--seconds 5]
                                       [--repeat 3] [--quick] [--out bench]

The drain-loop stress shape (4 threads in 2 processes, ~500 series, 60 s, emit and its
floor only)::

    .venv/bin/python bench/endtoend.py --rates 100k,1M --producers 2 --threads 2 \
        --series 500 --seconds 60 --repeat 1 --cases floor,emit --no-search \
        --report ENDTOEND-500-series

Every measurement runs real processes: ``--producers`` producer processes of ``--threads``
threads each (every thread with its own lane) offer ``rate / producers`` events per second
each, for ``--warmup`` seconds and then the ``--seconds`` that are measured. A producer thread
paces itself: every ``--tick-ms`` it makes the
calls its schedule owes (a small burst), then sleeps to the next tick; a producer that falls
behind runs flat out until it has caught up. The events cycle through the realistic mix of
``benchlib.mix``, as in ``bench/aggregate_bench.py`` (10 operations x 10 models, lognormal
latencies, 2 % errors, a quality score on half, a cache lookup on a third, 1 in 8 with the
LLM extras); ``--series N`` spreads them over N series instead. Per rate, three cases
(``--cases`` picks some), in an order rotated by repeat:

``floor``          the same loop calling a no-op with emit's signature: what pacing costs.
``emit``           ``client.emit`` with a real ``ai-analyticsd`` running (its default config,
                   with its own namespace, temporary ``state_dir`` and a free HTTP port).
                   With ``--scrape-seconds S`` the parent also GETs the daemon's /metrics
                   every S seconds (gzip, as Prometheus asks) while emit is measured: a
                   scraped daemon renders that text at each snapshot, an unscraped one never.
``prometheus_mp``  prometheus_client in multiprocess mode (``PROMETHEUS_MULTIPROC_DIR`` set to
                   a fresh directory): ``Histogram.observe`` and ``Counter.inc`` labelled by
                   operation, model and outcome (``benchlib.prometheus``, the recorder that
                   ``bench/peers.py`` times per call; the LLM extras are not passed, as it
                   records none of them), and one scraper process that runs
                   ``MultiProcessCollector`` + ``generate_latest`` once per second.

CPU is user + system time of each child, every thread (its process CPU clock, the time that
``/proc/PID/stat`` gives as utime + stime, to the nanosecond), over the measured interval
only: a producer's from the moment it says its warm-up is over to its report; the daemon's
and the scraper's from the end of the last producer's warm-up until shared memory shows every
published record drained (daemon) or until the last scrape after the producers stopped
(scraper). CPU % is over the producing interval. Per million events means per million calls
made in the measured interval. Offered and achieved rates are both reported: a 2-core machine
may not reach the highest rate, and the script says what it got. Drops in the table are the
calls emit refused in the measured interval (the producers count them); the JSON also has
the state file's ``dropped``, warm-up included. The drain lag is sampled by the parent from
shared memory every 10 ms over the measured interval: the age of the oldest record published
and not drained yet, over every lane (the highest sample is shown). `over floor + daemon` is
what we call CPU per million events, producers plus daemon: the recorder's cost over
the pacing loop, plus the daemon's (needs the floor case in the same run).

Why the warm-up: the steady cost is what is asked for. A new lane is attached as it is
created and drained after 2, 4, 8 ms ... until the daemon knows its rate, so a worker that
starts at full speed drops little or nothing at first; the probes below report that case
separately (no drop from the first event).

Every run is checked over all its calls, warm-up included: for ``emit``, the daemon is
stopped (SIGTERM) and its final state file's ``events`` counters must add up to every emit
call, with ``received`` equal to the calls that emit accepted and ``dropped`` to those it
refused; for ``prometheus_mp``, the requests counter summed over the multiprocess files must
equal the calls.

Also measured: the idle daemon (running, no producer, for ``--idle-seconds``), and the highest
rate sustained with zero drops at the default lane size (8192 records): emit runs of
``--probe-seconds`` (after the warm-up) with a fresh daemon and fresh producers each, doubling
from ``--search-start`` until a probe drops events after its warm-up or cannot be offered
(achieved below 95 % of offered: the producers' CPU is the limit then), then
``--search-steps`` bisections. Beside it, the highest probe whose state file shows no drop
at all, warm-up included: what a worker that starts at full speed can offer.

Results: a markdown table in ``OUT/ENDTOEND.md`` and every run in
``OUT/endtoend_results.json``. Every namespace's segments, temporary directory and child
process are removed at the end, on error, Ctrl-C and SIGTERM too.
"""

from __future__ import annotations

import argparse
import itertools
import json
import mmap
import os
import select
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ai_analytics.client import _layout as L
from ai_analytics.client._segments import NAMESPACE_ENV, lane_prefix
from ai_analytics.core.lane_header import BadSegment, NotReady, parse_header

from benchlib.children import Child, ready_children
from benchlib.daemon import DaemonProcess, events_total
from benchlib.lanes import SHM_DIR
from benchlib.mix import PLAN_SIZE, Plan, make_plan
from benchlib.proc import cpu_seconds
from benchlib.prometheus import MP_ENV, requests_counted, setup_prometheus
from benchlib.report import (
    RunStart,
    exit_on_sigterm,
    header_lines,
    note_interrupts,
    progress,
    raise_if_interrupted,
    write_results,
)
from benchlib.timing import noop

HERE = Path(__file__).resolve().parent
SCRIPT = Path(__file__).resolve()
CASES = ("floor", "emit", "prometheus_mp")
SCRAPE_INTERVAL_S = 1.0
OFFERED_FRACTION = 0.95  # a probe below this share of its offered rate was not offered
CHILD_TIMEOUT_S = 60.0  # for a child's line beyond the run's own length
LAG_SAMPLE_S = 0.01  # how often the parent samples the drain lag from shared memory
LAG_NOTED_S = 0.03  # samples above this are kept, with their time, in the JSON
QUICK = {
    "rates": [20000],
    "producers": 2,
    "seconds": 1.0,
    "repeat": 1,
    "idle_seconds": 1.0,
    "probe_seconds": 1.0,
    "warmup": 0.5,
    "search_start": 20000,
    "search_max": 40000,
    "search_steps": 0,
}

_serial = itertools.count()


# -- the children --------------------------------------------------------------------------
def paced_calls(record: Callable[..., object], plan: Plan, rate: float, warmup: float,
                seconds: float, tick_s: float, on_warm: Callable[[], None]) -> dict[str, Any]:
    """Call ``record`` with the plan's events at ``rate`` per second for ``warmup`` and then
    ``seconds`` more: every tick, the calls the schedule owes, then sleep to the next tick.
    ``on_warm`` runs once the warm-up is over, and the counts at that moment are returned
    with the final ones. ``record`` returning False counts as refused (emit's full ring)."""
    mask = PLAN_SIZE - 1
    clock, sleep = time.monotonic, time.sleep
    calls = refused = 0
    warm: dict[str, Any] = {}
    t0 = next_tick = clock()
    end = t0 + warmup + seconds
    while True:
        now = clock()
        if not warm and now - t0 >= warmup:  # always before the end: seconds > 0
            warm = {"warm_calls": calls, "warm_refused": refused, "warm_at": now}
            on_warm()
        if now >= end:
            break
        due = int((now - t0) * rate)
        for k in range(calls, due):
            args, extra = plan[k & mask]
            if (record(*args, **extra) if extra else record(*args)) is False:
                refused += 1
        calls = max(calls, due)
        next_tick += tick_s
        delay = next_tick - clock()
        if delay > 0:
            sleep(delay)
        else:
            next_tick = clock()  # behind: no backlog of ticks, the next burst catches up
    return {"calls": calls, "refused": refused, **warm, "end": clock()}


def child_recorder(case: str) -> tuple[Callable[..., object], bool]:
    """The function a producer calls, and whether it takes the LLM extras."""
    if case == "floor":
        return noop, True
    if case == "emit":
        from ai_analytics import client

        return client.emit, True
    record, _ = setup_prometheus()  # it imports prometheus_client: PROMETHEUS_MULTIPROC_DIR is set
    return record, False


def child_producer(case: str, rate: float, warmup: float, seconds: float, tick_s: float,
                   seed: int, threads: int, series: int) -> int:
    """A producer process: "ready", then on "go" one paced run per thread (``threads``
    threads of ``rate / threads`` each, every thread with a lane of its own); it says "warm"
    once every thread is past its warm-up and one JSON line, their sums, at the end; it stays
    (its lanes too) until "exit" or end of input."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops its children
    record, extras = child_recorder(case)
    plans = [make_plan(seed * 100 + t, series) for t in range(threads)]
    if not extras:
        plans = [[(args, {}) for args, _ in plan] for plan in plans]
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return 1
    lock = threading.Lock()
    not_warm = [threads]

    def warm() -> None:
        with lock:
            not_warm[0] -= 1
            if not not_warm[0]:
                print("warm", flush=True)

    reports: list[dict[str, Any]] = [{} for _ in range(threads)]

    def run(t: int) -> None:
        reports[t] = paced_calls(record, plans[t], rate / threads, warmup, seconds, tick_s,
                                 warm)

    workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    total = {key: sum(r[key] for r in reports)
             for key in ("calls", "refused", "warm_calls", "warm_refused")}
    print(json.dumps({**total, "warm_at": min(r["warm_at"] for r in reports),
                      "end": max(r["end"] for r in reports)}), flush=True)
    sys.stdin.readline()
    return 0


def child_scraper() -> int:
    """The scraper: on "go", ``generate_latest`` once per second until "stop", then a last
    scrape (it sees the final events) and one JSON line; it stays until "exit"."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return 1
    scrapes = size = 0
    next_at = time.monotonic()
    while not select.select([sys.stdin], [], [], max(0.0, next_at - time.monotonic()))[0]:
        size += len(generate_latest(registry))
        scrapes += 1
        next_at += SCRAPE_INTERVAL_S
    sys.stdin.readline()  # "stop"
    size += len(generate_latest(registry))
    print(json.dumps({"scrapes": scrapes + 1, "bytes": size}), flush=True)
    sys.stdin.readline()
    return 0


# -- the parent's side of the children ------------------------------------------------
def base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != MP_ENV}


def producer_roles(case: str, rate: float, args: argparse.Namespace,
                   seconds: float) -> list[list[str]]:
    return [["--child-producer", case, "--child-rate", str(rate / args.producers),
             "--warmup", str(args.warmup), "--seconds", str(seconds),
             "--tick-ms", str(args.tick_ms), "--child-seed", str(p + 1),
             "--threads", str(args.threads), "--series", str(args.series)]
            for p in range(args.producers)]


def warm_up(producers: list[Child], warmup: float) -> list[float]:
    """Say "go"; once every producer has passed its warm-up, return the CPU each had used
    by then (read as it said so)."""
    for p in producers:
        p.send("go")
    cpu = []
    for p in producers:
        if p.line(warmup + CHILD_TIMEOUT_S) != "warm":
            raise RuntimeError(f"producer {p.proc.pid} did not report its warm-up")
        cpu.append(p.cpu())
    return cpu


def measured(producers: list[Child], cpu_warm: list[float], seconds: float) -> dict[str, Any]:
    """Every producer's report; the figures of the measured interval (after the warm-up)."""
    reports = [json.loads(p.line(seconds + CHILD_TIMEOUT_S)) for p in producers]
    for report, p, c0 in zip(reports, producers, cpu_warm, strict=True):
        report["cpu_s"] = p.cpu() - c0
    calls = sum(r["calls"] - r["warm_calls"] for r in reports)
    span = max(r["end"] for r in reports) - min(r["warm_at"] for r in reports)
    cpu = sum(r["cpu_s"] for r in reports)
    return {
        "calls": calls,
        "dropped": sum(r["refused"] - r["warm_refused"] for r in reports),
        "calls_total": sum(r["calls"] for r in reports),
        "accepted_total": sum(r["calls"] - r["refused"] for r in reports),
        "seconds": span,
        "achieved_per_s": calls / span if span > 0 else 0.0,
        "producers_cpu_s": cpu,
        "producers_cpu_s_per_m": cpu / (calls / 1e6) if calls else None,
        "producers_cpu_percent": 100 * cpu / span if span > 0 else None,
        "per_producer": reports,
    }


# -- the runs ------------------------------------------------------------------------------
DAEMON_SETTINGS: dict[str, object] = {}  # --daemon-setting: over the defaults


@contextmanager
def daemon_session() -> Iterator[DaemonProcess]:
    """A real daemon with the default config (but --daemon-setting) in its own namespace and
    temporary state_dir (HTTP on a free port); stopped, its segments and directory removed,
    whatever happens."""
    namespace = f"aibench-e2e-{os.getpid()}-{next(_serial)}"
    tmp = Path(tempfile.mkdtemp(prefix="aibench-e2e-"))
    try:
        with DaemonProcess(tmp, namespace, **DAEMON_SETTINGS) as daemon:
            yield daemon
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class LagProbe:
    """The drain lag as the producers see it, sampled from shared memory every
    ``LAG_SAMPLE_S`` on a thread of the parent: the age of the oldest record published and not
    yet drained, over every lane of a namespace (0 when all are empty); the highest sample is
    kept. The daemon's own figure (``event_path.drain_lag_seconds``) is the same age, but only
    at each snapshot."""

    def __init__(self, namespace: str) -> None:
        self.prefix = lane_prefix(namespace)
        self.lanes: dict[str, tuple[memoryview, int, int]] = {}  # name -> (u64 view, cap, ts)
        self.maps: list[mmap.mmap] = []
        self.highest = 0.0
        self.samples = 0
        self.late: list[tuple[float, float]] = []  # (monotonic time, lag) past LAG_NOTED_S
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> LagProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        for view, _, _ in self.lanes.values():
            view.release()
        for mapped in self.maps:
            mapped.close()

    def _attach(self, name: str) -> None:
        path = os.path.join(SHM_DIR, name)
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                header = parse_header(name, self.prefix, f.read(L.HEADER_SIZE), size)
                mapped = mmap.mmap(f.fileno(), size, prot=mmap.PROT_READ)
        except (OSError, ValueError, BadSegment, NotReady):  # half-made: tried again later
            return
        if not header.has_ring:
            mapped.close()
            return
        self.maps.append(mapped)
        self.lanes[name] = (memoryview(mapped).cast("Q"), header.capacity,
                            L.records_offset(header.names_capacity) // 8 + 1)  # ts_ns: 2nd u64

    def sample(self) -> float:
        for name in os.listdir(SHM_DIR):
            if name.startswith(self.prefix) and name not in self.lanes:
                self._attach(name)
        now, oldest = time.monotonic_ns(), None
        for q, cap, ts_at in self.lanes.values():
            head, tail = q[L.Q_HEAD], q[L.Q_TAIL]
            if head > tail:
                ts = q[ts_at + (max(tail, head - cap) % cap) * (L.RECORD_SIZE // 8)]
                if 0 < ts <= now and (oldest is None or ts < oldest):
                    oldest = ts
        return 0.0 if oldest is None else (now - oldest) / 1e9

    def _run(self) -> None:
        while not self._stop.wait(LAG_SAMPLE_S):
            lag = self.sample()
            self.highest = max(self.highest, lag)
            self.samples += 1
            if lag > LAG_NOTED_S:
                self.late.append((round(time.monotonic(), 3), round(lag, 4)))


class Scraper:
    """``GET /metrics`` of the daemon every ``interval`` seconds (none if 0), gzip asked as a
    Prometheus server asks, on a thread of the parent: a scraped daemon renders its /metrics
    text at each snapshot (docs/http.md), which an unscraped one never does."""

    def __init__(self, port: int, interval: float) -> None:
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.interval = interval
        self.scrapes = self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Scraper:
        if self.interval > 0:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        request = urllib.request.Request(self.url, headers={"Accept-Encoding": "gzip"})
        while True:
            try:
                with urllib.request.urlopen(request, timeout=10) as answer:
                    answer.read()
                self.scrapes += 1
            except OSError:
                self.failures += 1
            if self._stop.wait(self.interval):
                return


def all_drained(namespace: str, published: int) -> bool:
    from ai_analytics.cli.shm_view import read_namespace

    totals = read_namespace(namespace).totals()
    return totals["published"] == published and totals["pending"] == 0


def run_floor(rate: float, args: argparse.Namespace) -> dict[str, Any]:
    roles = producer_roles("floor", rate, args, args.seconds)
    with ready_children(SCRIPT, roles, base_env()) as producers:
        load = measured(producers, warm_up(producers, args.warmup), args.seconds)
    return {"case": "floor", "offered_per_s": rate, **load, "reconciled": None}


def run_emit(rate: float, args: argparse.Namespace, seconds: float | None = None
             ) -> dict[str, Any]:
    """A warm-up and ``seconds`` (``--seconds`` by default) of emit with a fresh daemon."""
    seconds = seconds or args.seconds
    with daemon_session() as daemon:
        started = time.monotonic()  # about when its loop began: its snapshots follow from here
        env = {**base_env(), NAMESPACE_ENV: daemon.namespace}
        pid = daemon.pid
        roles = producer_roles("emit", rate, args, seconds)
        with ready_children(SCRIPT, roles, env) as producers:
            cpu_warm = warm_up(producers, args.warmup)
            cpu0, t0 = cpu_seconds(pid), time.monotonic()
            with LagProbe(daemon.namespace) as lag, \
                    Scraper(daemon.http_port, args.scrape_seconds) as scraper:
                load = measured(producers, cpu_warm, seconds)
            cpu_producing, wall = cpu_seconds(pid) - cpu0, time.monotonic() - t0
            try:
                daemon.wait_for(lambda: all_drained(daemon.namespace, load["accepted_total"]),
                                60.0, "the daemon to drain every published record")
            except TimeoutError as exc:
                from ai_analytics.cli.shm_view import read_namespace

                raise RuntimeError(
                    f"{exc}: shared memory shows {read_namespace(daemon.namespace).totals()}, "
                    f"the producers had {load['accepted_total']} accepted; the daemon "
                    f"{'runs' if daemon.running() else 'has exited'}; its log ends with:\n"
                    f"{daemon.log()[-3000:]}") from None
            cpu_drained = cpu_seconds(pid) - cpu0
        code = daemon.stop()
        if code != 0:
            raise RuntimeError(f"the daemon exited {code}: {daemon.log()[-2000:]}")
        final = daemon.state()
        if final is None:
            raise RuntimeError(f"the daemon left no state file: {daemon.log()[-2000:]}")
    calls, total, accepted = load["calls"], load["calls_total"], load["accepted_total"]
    events = final["events"]
    expected = {"received": accepted, "dropped": total - accepted, "overwritten": 0,
                "invalid": 0, "lost_on_restart": 0, "pending": 0, "no_lane": 0}
    return {
        "case": "emit", "offered_per_s": rate, **load,
        "side_cpu_s": cpu_drained,
        "side_cpu_s_per_m": cpu_drained / (calls / 1e6) if calls else None,
        "side_cpu_percent": 100 * cpu_producing / wall,
        "dropped_total": events["dropped"],
        "records_per_batch": final["event_path"]["records_per_batch"],
        "drain_lag_max_s": lag.highest, "lag_samples": lag.samples, "lag_late": lag.late,
        "metrics_scrapes": scraper.scrapes, "metrics_scrape_failures": scraper.failures,
        "daemon_started": started,
        "series": args.series, "threads": args.threads,
        "events": events,
        "counted": events_total(final),
        "reconciled": events == expected,
    }


def run_prometheus(rate: float, args: argparse.Namespace) -> dict[str, Any]:
    mp_dir = tempfile.mkdtemp(prefix="aibench-e2e-prom-")
    try:
        env = {**base_env(), MP_ENV: mp_dir}
        roles = [["--child-scraper"], *producer_roles("prometheus_mp", rate, args, args.seconds)]
        with ready_children(SCRIPT, roles, env) as (scraper, *producers):
            scraper.send("go")
            cpu_warm = warm_up(producers, args.warmup)
            cpu0, t0 = scraper.cpu(), time.monotonic()
            load = measured(producers, cpu_warm, args.seconds)
            cpu_producing, wall = scraper.cpu() - cpu0, time.monotonic() - t0
            scraper.send("stop")
            scrape = json.loads(scraper.line(CHILD_TIMEOUT_S))
            cpu_scraper = scraper.cpu() - cpu0
        counted = requests_counted(mp_dir)
    finally:
        shutil.rmtree(mp_dir, ignore_errors=True)
    calls = load["calls"]
    return {
        "case": "prometheus_mp", "offered_per_s": rate, **load,
        "side_cpu_s": cpu_scraper,
        "side_cpu_s_per_m": cpu_scraper / (calls / 1e6) if calls else None,
        "side_cpu_percent": 100 * cpu_producing / wall,
        "scrapes": scrape["scrapes"], "scrape_bytes": scrape["bytes"],
        "counted": counted,
        "reconciled": counted == load["calls_total"],
    }


def run_idle(seconds: float) -> dict[str, Any]:
    """The daemon's CPU with no producer at all, once its first state file is written."""
    with daemon_session() as daemon:
        daemon.wait_for(daemon.state, 30.0, "the daemon's first state file")
        pid = daemon.pid
        cpu0, t0 = cpu_seconds(pid), time.monotonic()
        time.sleep(seconds)
        cpu, wall = cpu_seconds(pid) - cpu0, time.monotonic() - t0
        daemon.stop()
    return {"seconds": wall, "cpu_s": cpu, "cpu_percent": 100 * cpu / wall}


RUNNERS: dict[str, Callable[[float, argparse.Namespace], dict[str, Any]]] = {
    "floor": run_floor,
    "emit": run_emit,
    "prometheus_mp": run_prometheus,
}


def with_total(run: dict[str, Any]) -> dict[str, Any]:
    side = run.get("side_cpu_s_per_m")
    own = run["producers_cpu_s_per_m"]
    run["total_cpu_s_per_m"] = None if own is None else own + (side or 0.0)
    return run


def search_zero_drop(args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    """Doubling, then bisection, of the offered rate. A probe passes when nothing was dropped
    after its warm-up and (about) the rate offered was achieved."""
    probes: list[dict[str, Any]] = []

    def probe(rate: int) -> bool:
        run = with_total(run_emit(rate, args, args.probe_seconds))
        offered = run["achieved_per_s"] >= OFFERED_FRACTION * rate
        run["sustained"] = run["dropped"] == 0 and offered
        run["failed_by"] = None if run["sustained"] else (
            "drops" if run["dropped"] else "producers")
        probes.append(run)
        log(f"zero-drop probe {rate:,} ev/s: achieved {run['achieved_per_s']:,.0f}, dropped "
            f"{run['dropped']:,} after the warm-up ({run['dropped_total']:,} in all), "
            f"{'sustained' if run['sustained'] else run['failed_by']}")
        return bool(run["sustained"])

    lo: int | None = None
    hi: int | None = None
    rate = args.search_start
    while rate <= args.search_max:
        if not probe(rate):
            hi = rate
            break
        lo, rate = rate, rate * 2
    if hi is not None:
        for _ in range(args.search_steps):
            mid = ((lo or 0) + hi) // 2
            if mid in (lo, hi) or mid <= 0:
                break
            if probe(mid):
                lo = mid
            else:
                hi = mid
    best = next((p for p in probes if p["offered_per_s"] == lo), None)
    limit = next((p["failed_by"] for p in probes if p["offered_per_s"] == hi), "search_max")
    cold = [p["offered_per_s"] for p in probes if p["sustained"] and p["dropped_total"] == 0]
    return {
        "highest_zero_drop_from_first_event_offered_per_s": max(cold, default=None),
        "highest_zero_drop_offered_per_s": lo,
        "highest_zero_drop_achieved_per_s": best["achieved_per_s"] if best else None,
        "lowest_failing_offered_per_s": hi,
        "limit": limit,
        "probes": probes,
    }


# -- summary and report --------------------------------------------------------------------
MEDIAN_KEYS = ("achieved_per_s", "producers_cpu_s_per_m", "side_cpu_s_per_m",
               "total_cpu_s_per_m", "producers_cpu_percent", "side_cpu_percent")


def median_of(group: list[dict[str, Any]], key: str) -> float | None:
    values = [run[key] for run in group if run.get(key) is not None]
    return statistics.median(values) if values else None


def summarize(runs: list[dict[str, Any]], rates: list[int]) -> list[dict[str, Any]]:
    """One row per rate and case: medians over the repeats, drops summed, reconciled in all."""
    rows = []
    for rate in rates:
        floor: float | None = None
        for case in CASES:
            group = [r for r in runs if r["case"] == case and r["offered_per_s"] == rate]
            if not group:
                continue
            row: dict[str, Any] = {"offered_per_s": rate, "case": case, "repeats": len(group)}
            row.update({key: median_of(group, key) for key in MEDIAN_KEYS})
            row["dropped"] = sum(r["dropped"] for r in group)
            row["reconciled"] = None if case == "floor" else all(r["reconciled"] for r in group)
            own = row["producers_cpu_s_per_m"]
            if case == "floor":
                floor = own
            row["over_floor_s_per_m"] = (own - floor if case != "floor" and None not in
                                         (own, floor) else None)
            side = row["side_cpu_s_per_m"]
            # The recorder's own cost plus its daemon or scraper: the "CPU per
            # million events, producers + daemon" counts (the pacing loop is the bench's).
            row["recorder_and_side_s_per_m"] = (row["over_floor_s_per_m"] + side if None not in
                                                (row["over_floor_s_per_m"], side) else None)
            lags = [r["drain_lag_max_s"] for r in group if r.get("drain_lag_max_s") is not None]
            row["drain_lag_max_s"] = max(lags) if lags else None
            rows.append(row)
    return rows


def fmt(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| offered ev/s | case | achieved ev/s | producers CPU s/M | over floor s/M "
        "| daemon/scraper CPU s/M | over floor + daemon/scraper s/M | total CPU s/M "
        "| producers CPU % | daemon/scraper CPU % | dropped after warm-up | max drain lag s "
        "| reconciled |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        rec = {None: "n/a", True: "exact", False: "**NO**"}[r["reconciled"]]
        lines.append(
            f"| {r['offered_per_s']:,} | {r['case']} | {fmt(r['achieved_per_s'], 0)} "
            f"| {fmt(r['producers_cpu_s_per_m'])} | {fmt(r['over_floor_s_per_m'])} "
            f"| {fmt(r['side_cpu_s_per_m'])} | {fmt(r['recorder_and_side_s_per_m'])} "
            f"| {fmt(r['total_cpu_s_per_m'])} | {fmt(r['producers_cpu_percent'], 1)} "
            f"| {fmt(r['side_cpu_percent'], 1)} | {r['dropped']:,} "
            f"| {fmt(r['drain_lag_max_s'])} | {rec} |"
        )
    return "\n".join(lines)


def search_table(search: dict[str, Any]) -> str:
    lines = ["| probe offered ev/s | achieved ev/s | dropped after warm-up | dropped in all "
             "| daemon CPU % | result |",
             "|---:|---:|---:|---:|---:|---|"]
    for p in search["probes"]:
        lines.append(f"| {p['offered_per_s']:,} | {p['achieved_per_s']:,.0f} | {p['dropped']:,} "
                     f"| {p['dropped_total']:,} | {fmt(p['side_cpu_percent'], 1)} "
                     f"| {'sustained' if p['sustained'] else 'failed: ' + p['failed_by']} |")
    return "\n".join(lines)


def search_line(search: dict[str, Any]) -> str:
    lo, hi = search["highest_zero_drop_offered_per_s"], search["lowest_failing_offered_per_s"]
    if lo is None:
        return f"no probed rate was sustained without drops (lowest probe {hi:,} ev/s)"
    why = {"drops": "it dropped events", "producers": "the producers could not offer it "
           "(CPU-bound, no drops)", "search_max": "the search stopped at --search-max"}
    above = f"; {hi:,} ev/s failed: {why[search['limit']]}" if hi else f"; {why['search_max']}"
    cold = search["highest_zero_drop_from_first_event_offered_per_s"]
    cold_text = f"{cold:,} ev/s" if cold else "none of the probes"
    return (f"highest rate sustained with zero drops after the warm-up: {lo:,} ev/s offered "
            f"({search['highest_zero_drop_achieved_per_s']:,.0f} achieved){above}. Without a "
            f"drop from the first event (new lanes, producers at full speed at once): "
            f"{cold_text}")


def checked_runs(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The runs whose counts were reconciled: emit and prometheus_mp runs, and the probes."""
    probes = report["zero_drop"]["probes"] if report["zero_drop"] else []
    return [r for r in report["runs"] + probes if r["reconciled"] is not None]


def reconciliation_line(report: dict[str, Any]) -> str:
    checked = checked_runs(report)
    exact = sum(r["reconciled"] for r in checked)
    return (f"reconciliation: {exact} of {len(checked)} runs exact (emit: the daemon's final "
            "events counters add up to every emit call, received = accepted, dropped = refused; "
            "prometheus_mp: the requests counter over all files = calls)")


def markdown(report: dict[str, Any]) -> str:
    p, idle = report["parameters"], report["idle"]
    return "\n".join([
        *header_lines("End to end: CPU per million events, producers plus daemon", report),
        f"- {p['producers']} producer processes of {p['threads']} thread(s) each (a lane per "
        f"thread), events over {p['series']} series, {p['warmup']:g} s warm-up and "
        f"{p['seconds']:g} s measured per run, median of {p['repeat']} repeat(s), a burst every "
        f"{p['tick_ms']:g} ms; wall {report['wall_s']:.0f} s",
        *([f"- the daemon's /metrics scraped every {p['scrape_seconds']:g} s (gzip) while "
           "emit is measured"] if p.get("scrape_seconds") else []),
        "",
        "CPU seconds per million events offered to the recorder (utime + stime of each process "
        "over the measured interval only, after the warm-up). `over floor` is what the recorder "
        "adds to the same paced loop calling a no-op; `daemon/scraper` is ai-analyticsd (until "
        "every record is drained) or the prometheus scraper (one `generate_latest` per second). "
        "CPU % is of one core. `max drain lag` is the age of the oldest record not yet "
        "drained, sampled from shared memory every 10 ms over the measured interval. See the "
        "docstring of `bench/endtoend.py` for how each figure is taken.",
        "",
        table(report["rows"]),
        "",
        *([f"- idle daemon (no producers, {idle['seconds']:.0f} s): {idle['cpu_s']:.2f} s of "
           f"CPU, {idle['cpu_percent']:.2f} % of one core"] if idle else []),
        *([f"- {search_line(report['zero_drop'])} (default config: max_queue_size 8192; "
           f"{p['producers']} producers; probes of {p['warmup']:g} s warm-up and "
           f"{p['probe_seconds']:g} s measured)"] if report["zero_drop"] else []),
        f"- {reconciliation_line(report)}",
        *(["", "## Zero-drop search", "", search_table(report["zero_drop"])]
          if report["zero_drop"] else []),
        "",
    ])


# -- the run -------------------------------------------------------------------------------
def rate_value(text: str) -> int:
    """10000, 10k or 1M."""
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:].lower(), 1)
    value = float(text[:-1] if scale > 1 else text) * scale
    if value < 1:
        raise argparse.ArgumentTypeError(f"a rate must be at least 1 event/s, got {text!r}")
    return int(value)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", type=lambda s: [rate_value(r) for r in s.split(",")],
                        default=[10_000, 100_000, 1_000_000],
                        help="offered events/s in all, comma-separated (default 10k,100k,1M)")
    parser.add_argument("--producers", type=int, default=4, help="producer processes (4)")
    parser.add_argument("--threads", type=int, default=1,
                        help="producer threads per process, a lane each (1)")
    parser.add_argument("--series", type=int, default=100,
                        help="(operation, model) series the events cycle through (100: the "
                             "10 x 10 mix)")
    parser.add_argument("--cases", type=lambda s: s.split(","), default=list(CASES),
                        help="cases to run, comma-separated (floor,emit,prometheus_mp)")
    parser.add_argument("--no-search", action="store_true", help="skip the zero-drop search")
    parser.add_argument("--daemon-setting", action="append", default=[], metavar="KEY=JSON",
                        help="a config setting of the daemon over its default (repeatable), "
                             "e.g. snapshot_interval_seconds=1")
    parser.add_argument("--scrape-seconds", type=float, default=0.0, metavar="S",
                        help="GET the daemon's /metrics every S seconds while emit is "
                             "measured, as Prometheus would (default 0: no scrapes)")
    parser.add_argument("--seconds", type=float, default=5.0,
                        help="measured seconds per run, after the warm-up (5)")
    parser.add_argument("--repeat", type=int, default=3, help="repeats; medians shown (3)")
    parser.add_argument("--tick-ms", type=float, default=1.0, help="pacing tick (1 ms)")
    parser.add_argument("--idle-seconds", type=float, default=30.0,
                        help="idle daemon (30 s; 0 skips it)")
    parser.add_argument("--probe-seconds", type=float, default=3.0,
                        help="measured seconds per zero-drop probe (3 s)")
    parser.add_argument("--warmup", type=float, default=2.0,
                        help="load before each measured interval, not measured (2 s)")
    parser.add_argument("--search-start", type=rate_value, default=10_000,
                        help="first zero-drop probe, events/s (10k)")
    parser.add_argument("--search-max", type=rate_value, default=4_000_000,
                        help="no probe above this rate (4M)")
    parser.add_argument("--search-steps", type=int, default=3, help="bisections (3)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run of a few seconds: " + ", ".join(
                            f"{k.replace('_', '-')} {v}" for k, v in QUICK.items()))
    parser.add_argument("--out", type=Path, default=HERE,
                        help="directory for ENDTOEND.md and endtoend_results.json (bench/)")
    parser.add_argument("--report", metavar="NAME",
                        help="write OUT/NAME.md and OUT/NAME.json instead of ENDTOEND.md and "
                             "endtoend_results.json")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    parser.add_argument("--child-producer", choices=CASES, help=argparse.SUPPRESS)
    parser.add_argument("--child-scraper", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child-rate", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--child-seed", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    if min(args.producers, args.repeat, args.threads, args.series) < 1 or args.search_steps < 0:
        parser.error("--producers, --threads, --series and --repeat must be at least 1, "
                     "--search-steps at least 0")
    if not args.cases or set(args.cases) - set(CASES):
        parser.error(f"--cases: choose among {', '.join(CASES)}")
    if min(args.seconds, args.tick_ms, args.probe_seconds) <= 0 or (
            min(args.warmup, args.idle_seconds) < 0):
        parser.error("--seconds, --tick-ms and --probe-seconds must be positive, --warmup "
                     "and --idle-seconds at least 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child_producer:
        return child_producer(args.child_producer, args.child_rate, args.warmup, args.seconds,
                              args.tick_ms / 1000, args.child_seed, args.threads, args.series)
    if args.child_scraper:
        return child_scraper()
    for setting in args.daemon_setting:
        key, _, value = setting.partition("=")
        DAEMON_SETTINGS[key] = json.loads(value)
    exit_on_sigterm()
    note_interrupts()
    start = RunStart()
    t0 = time.monotonic()
    log = progress(args.quiet)

    runs: list[dict[str, Any]] = []
    for rep, (i, rate) in itertools.product(range(args.repeat), enumerate(args.rates)):
        cases = [case for case in CASES if case in args.cases]
        k = (rep + i) % len(cases)
        for case in cases[k:] + cases[:k]:
            run = with_total(RUNNERS[case](rate, args))
            runs.append({"repeat": rep, **run})
            log(f"repeat {rep + 1}/{args.repeat}, {rate:,} ev/s offered, {case}: achieved "
                f"{run['achieved_per_s']:,.0f}, {fmt(run['total_cpu_s_per_m'])} CPU s/M"
                + ("" if run["reconciled"] is None else
                   f", reconciled {'exact' if run['reconciled'] else 'NOT EXACT'}"))
    idle = None
    if args.idle_seconds:
        log(f"idle daemon, {args.idle_seconds:g} s ...")
        idle = run_idle(args.idle_seconds)
    search = None if args.no_search else search_zero_drop(args, log)
    report: dict[str, Any] = {
        **start.header(),
        "wall_s": time.monotonic() - t0,
        "parameters": {k: v for k, v in vars(args).items() if not k.startswith("child_")
                       and k != "out"},
        "rows": summarize(runs, args.rates),
        "idle": idle,
        "zero_drop": search,
        "runs": runs,
    }
    raise_if_interrupted()
    print(table(report["rows"]))
    print()
    if idle:
        print(f"idle daemon: {idle['cpu_percent']:.2f} % of one core over "
              f"{idle['seconds']:.0f} s")
    if search:
        print(search_line(search))
    print(reconciliation_line(report))
    json_name, md_name = ((f"{args.report}.json", f"{args.report}.md") if args.report
                          else ("endtoend_results.json", "ENDTOEND.md"))
    write_results(report, args.out / json_name, args.out / md_name, markdown(report))
    return 0 if all(r["reconciled"] for r in checked_runs(report)) else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # everything was cleaned up on the way out
        sys.exit(130)
