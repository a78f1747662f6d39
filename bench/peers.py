"""What recording one inference event costs with ``client.emit`` and with the usual peers.

Usage, from the repository root (the peers come with ``.venv/bin/pip install -e '.[bench]'``)::

    .venv/bin/python bench/peers.py [--rounds N] [--calls N] [--import-runs N]
                                    [--out bench/peers_results.json] [--md bench/PEERS.md]

One event is: an operation and a model label, a latency and a success flag. Everything but
prometheus_client's multiprocess mode runs in ONE process, in interleaved rounds: round r runs
every case once, in an order rotated by r. Per case the FASTEST round is the headline figure
(the least disturbed one) and the median is shown beside it; each is also given as a ratio to
``emit``'s figure of the same kind. Compare ratios, not absolute times.

Every case times ``--calls`` calls per round through the same loop as ``bench/emit_bench.py``
(``for _ in range(n): f("text_generation", 12.5, "llama-3-8b", 0.9)``, gc off while timed, in
chunks of at most half a lane). For a peer, ``f`` is the function a user would write around it,
``record(operation, latency_ms, model, quality, success, cache_hit)`` with emit's signature, so
every case pays the same loop and call overhead and the peer's own work on top:

``noop``          a Python function with emit's signature that does nothing: the floor.
``emit``          ``client.emit`` into this thread's lane in a private namespace, which the
                  script keeps drained between timed chunks (shared tail := head), exactly as
                  ``bench/emit_bench.py`` does (``benchlib.lanes.Lanes``). This is the
                  compiled path (client/_fastemit.c) when it is built and not turned off; the
                  report says which path ``client.emit`` took (``emit_path``).
``emit_python``   the pure-Python path of the same call (``_emit.emit_python``, what
                  ``AI_ANALYTICS_PURE_PYTHON=1`` selects), into the same lane. Here the
                  thread-local is the compiled path's watched subclass, whose attribute read
                  costs the pure path some 15 ns more than the plain ``threading.local`` an
                  install without the compiled module (or with the variable set) uses.
``prometheus_observe`` prometheus_client's ``Histogram.labels(op, model).observe(s)`` alone
                  (own registry): the single call the target compares emit with.
``prometheus``    prometheus_client, single-process: ``Histogram.labels(op, model).observe(s)``
                  and ``Counter.labels(op, model, outcome).inc()`` (own registry): the pair
                  that records what one emit records.
``prometheus_mp`` the same in multiprocess mode: measured in a subprocess started with
                  ``PROMETHEUS_MULTIPROC_DIR`` set to a fresh temporary directory (the variable
                  is read when prometheus_client is imported). The subprocess runs the same
                  interleaved rounds over noop, emit and this case and prints its samples as
                  JSON; its ratios are taken to the subprocess's own emit.
``opentelemetry`` opentelemetry-sdk metrics: a ``MeterProvider`` with an ``InMemoryMetricReader``
                  (never collected while timed); ``histogram.record(ms, attributes)`` and
                  ``counter.add(1, attributes)`` with a fresh attributes dict per call.
``statsd``        the ``statsd`` package's ``StatsClient`` to 127.0.0.1:<port> of a UDP socket
                  bound here and drained by a thread: ``timing`` + ``incr`` (names carry the
                  labels, as statsd has none). After each statsd run the script waits until the
                  drain thread has gone quiet, so its backlog does not land on the next case.
``asyncio_queue`` an in-process queue, the usual alternative to shared memory: ``await
                  asyncio.wait_for(queue.put(event), timeout=1.0)`` into
                  ``asyncio.Queue(maxsize=1000)`` drained by a task, in one event loop; the
                  timed chunk runs inside that loop, the drain task's work is part of the cost
                  (it shares the thread), and the queue is emptied untimed between chunks.

A peer that cannot be imported (or set up) is reported as "not installed" (or with its error);
the script never fails because of one. The prometheus recorder is ``benchlib.prometheus``'s,
which ``bench/endtoend.py`` runs in its producers too.

Second part: the import-time cost of the client. ``python -X importtime -c "from ai_analytics
import client"`` in ``--import-runs`` fresh subprocesses, next to ``python -X importtime -c
pass``: the modules that only the client import brings in, their summed self time (fastest run)
and the top contributors (each module's fastest self time); and the wall time of ``python -c
"from ai_analytics import client"`` minus ``python -c pass`` (interleaved runs, fastest and
median).

Every segment of the private namespaces (``aibench-peers-<pid>.``) and the multiprocess
directory are removed at the end, on error and on SIGTERM too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
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
from ai_analytics.client import _emit

from benchlib.lanes import Lanes, remove_segments
from benchlib.prometheus import MP_ENV, NotInstalled, Recorder, setup_prometheus
from benchlib.report import RunStart, exit_on_sigterm, header_lines, progress, write_results
from benchlib.timing import interleaved_rounds, loop_basic, noop, time_calls

HERE = Path(__file__).resolve().parent
ALL_ROWS = (
    "noop",
    "emit",
    "emit_python",
    "prometheus_observe",
    "prometheus",
    "prometheus_mp",
    "opentelemetry",
    "statsd",
    "asyncio_queue",
)
DESCRIPTION = {
    "noop": "no-op Python call, same arguments (floor)",
    "emit": "ai_analytics `client.emit` (shared-memory lane), compiled path",
    "emit_python": "the same `client.emit`, pure-Python path (`AI_ANALYTICS_PURE_PYTHON=1`)",
    "prometheus_observe": "prometheus_client `Histogram.labels(op, model).observe(s)` alone",
    "prometheus": "prometheus_client, single process (Histogram + Counter)",
    "prometheus_mp": "prometheus_client, multiprocess mode (own subprocess)",
    "opentelemetry": "opentelemetry-sdk metrics (histogram.record + counter.add)",
    "statsd": "statsd UDP to 127.0.0.1 (timing + incr)",
    "asyncio_queue": "original design: `wait_for(queue.put(event), 1.0)`, Queue(1000) + task",
}
IMPORT_STMT = "from ai_analytics import client"


# -- the peers: each returns (record function, close function) ------------------------------
def setup_opentelemetry() -> Recorder:
    try:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    except ImportError as e:
        raise NotInstalled(str(e)) from e
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    meter = provider.get_meter("ai-analytics-bench")
    hist = meter.create_histogram("inference.latency", unit="ms")
    count = meter.create_counter("inference.requests")
    h_record, c_add = hist.record, count.add

    def record(
        operation: str,
        latency_ms: float,
        model: str = "",
        quality: float | None = None,
        success: bool = True,
        cache_hit: bool | None = None,
    ) -> None:
        h_record(latency_ms, {"operation": operation, "model": model})
        c_add(
            1,
            {"operation": operation, "model": model, "outcome": "success" if success else "error"},
        )

    def close() -> None:
        reader.get_metrics_data()  # the data was really aggregated (raises if not)
        provider.shutdown()

    return record, close


def setup_prometheus_observe() -> Recorder:
    """``Histogram.labels(op, model).observe(s)`` alone, in a registry of its own."""
    try:
        from prometheus_client import CollectorRegistry, Histogram
    except ImportError as e:
        raise NotInstalled(str(e)) from e
    hist = Histogram(
        "inference_latency_seconds", "latency", ["operation", "model"],
        registry=CollectorRegistry(),
    )
    h_labels = hist.labels

    def record(
        operation: str,
        latency_ms: float,
        model: str = "",
        quality: float | None = None,
        success: bool = True,
        cache_hit: bool | None = None,
    ) -> None:
        h_labels(operation, model).observe(latency_ms / 1000.0)

    return record, lambda: None


class UdpSink:
    """A UDP socket on 127.0.0.1 drained by a thread (counts datagrams)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.5)
        self.port = self.sock.getsockname()[1]
        self.received = 0
        self.running = True
        self.thread = threading.Thread(target=self._drain, name="statsd-sink", daemon=True)
        self.thread.start()

    def _drain(self) -> None:
        recv = self.sock.recv
        while self.running:
            try:
                recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            self.received += 1

    def quiesce(self, quiet_s: float = 0.02, limit_s: float = 2.0) -> None:
        """Wait until the drain thread has received nothing for ``quiet_s`` (bounded)."""
        deadline = time.monotonic() + limit_s
        last = -1
        while time.monotonic() < deadline and self.received != last:
            last = self.received
            time.sleep(quiet_s)

    def close(self) -> None:
        self.running = False
        self.thread.join(timeout=2.0)
        self.sock.close()


def setup_statsd() -> tuple[Callable[..., object], Callable[[], None], UdpSink]:
    try:
        from statsd import StatsClient
    except ImportError as e:
        raise NotInstalled(str(e)) from e
    sink = UdpSink()
    stats = StatsClient("127.0.0.1", sink.port, prefix="inference")
    timing, incr = stats.timing, stats.incr

    def record(
        operation: str,
        latency_ms: float,
        model: str = "",
        quality: float | None = None,
        success: bool = True,
        cache_hit: bool | None = None,
    ) -> None:
        timing(f"{operation}.{model}.latency", latency_ms)
        incr(f"{operation}.{model}.{'success' if success else 'error'}")

    def close() -> None:
        stats.close()
        sink.close()

    return record, close, sink


class AsyncioQueuePeer:
    """An in-process queue: a bounded asyncio.Queue, put with wait_for, drained by a task."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.queue: asyncio.Queue[dict[str, Any]] = self.loop.run_until_complete(self._make())
        self.taken = 0
        self.drainer = self.loop.create_task(self._drain())

    @staticmethod
    async def _make() -> asyncio.Queue[dict[str, Any]]:
        return asyncio.Queue(maxsize=1000)

    async def _drain(self) -> None:
        get = self.queue.get
        while True:
            await get()
            self.taken += 1

    async def record(
        self,
        operation: str,
        latency_ms: float,
        model: str = "",
        quality: float | None = None,
        success: bool = True,
        cache_hit: bool | None = None,
    ) -> None:
        event = {
            "operation": operation,
            "model": model,
            "latency_ms": latency_ms,
            "quality": quality,
            "success": success,
            "cache_hit": cache_hit,
            "timestamp": time.time(),
        }
        await asyncio.wait_for(self.queue.put(event), timeout=1.0)

    async def _chunk(self, n: int) -> None:
        record = self.record
        for _ in range(n):
            await record("text_generation", 12.5, "llama-3-8b", 0.9)

    def loop_fn(self, f: Callable[..., object], n: int) -> None:
        """``timing.loop_basic``'s shape, run inside the one event loop (f is unused)."""
        self.loop.run_until_complete(self._chunk(n))

    async def _empty(self) -> None:
        while not self.queue.empty():
            await asyncio.sleep(0)

    def between(self) -> None:
        self.loop.run_until_complete(self._empty())

    def close(self) -> None:
        self.drainer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            self.loop.run_until_complete(self.drainer)
        self.loop.close()


# -- measuring -----------------------------------------------------------------------------
def round_logger(
    rounds: int, log: Callable[[str], None]
) -> Callable[[int, dict[str, list[float]]], None]:
    def after_round(r: int, samples: dict[str, list[float]]) -> None:
        log(
            f"round {r + 1}/{rounds}: "
            + ", ".join(f"{name} {values[-1]:.0f}" for name, values in samples.items())
        )

    return after_round


def measure_main(
    rounds: int, calls: int, namespace: str, log: Callable[[str], None]
) -> tuple[dict[str, list[float]], dict[str, str], dict[str, Any], int]:
    """Interleaved rounds over noop, emit and the in-process peers. Returns samples, the
    peers that are missing (name -> reason), extra facts, and the chunk length."""
    os.environ.pop(MP_ENV, None)  # single-process mode here, whatever the caller's env says
    missing: dict[str, str] = {}
    facts: dict[str, Any] = {}
    closers: list[Callable[[], None]] = []
    with Lanes(namespace) as lanes:
        chunk = lanes.chunk(calls)

        def plain(f: Callable[..., object]) -> Callable[[], float]:
            return lambda: time_calls(loop_basic, f, calls, chunk)[0]

        runs: dict[str, Callable[[], float]] = {
            "noop": plain(noop),
            "emit": lambda: lanes.time_emit(loop_basic, calls),
            "emit_python": lambda: lanes.time_emit(loop_basic, calls, _emit.emit_python),
        }
        facts["emit_path"] = client.emit_path()
        if client.emit_path() != "compiled":
            facts["emit_path_reason"] = _emit.emit_path_reason()
        try:
            for name, setup in (
                ("prometheus_observe", setup_prometheus_observe),
                ("prometheus", setup_prometheus),
                ("opentelemetry", setup_opentelemetry),
            ):
                try:
                    record, close = setup()
                    record("text_generation", 12.5, "llama-3-8b", 0.9)  # labels made untimed
                except NotInstalled as e:
                    missing[name] = f"not installed ({e})"
                    continue
                except Exception as e:  # a peer that breaks is reported, never fatal
                    missing[name] = f"setup failed: {type(e).__name__}: {e}"
                    continue
                closers.append(close)
                runs[name] = plain(record)

            sink: UdpSink | None = None
            sent = 0
            try:
                s_record, s_close, sink = setup_statsd()
                s_record("text_generation", 12.5, "llama-3-8b", 0.9)
                sent = 2
            except NotInstalled as e:
                missing["statsd"] = f"not installed ({e})"
            except Exception as e:
                missing["statsd"] = f"setup failed: {type(e).__name__}: {e}"
            else:
                closers.append(s_close)

                def run_statsd() -> float:
                    nonlocal sent
                    assert sink is not None
                    ns, made = time_calls(loop_basic, s_record, calls, chunk)
                    sent += 2 * made
                    sink.quiesce()
                    return ns

                runs["statsd"] = run_statsd

            aq: AsyncioQueuePeer | None = None
            try:
                aq = AsyncioQueuePeer()
            except Exception as e:
                missing["asyncio_queue"] = f"setup failed: {type(e).__name__}: {e}"
            else:
                closers.append(aq.close)
                runs["asyncio_queue"] = lambda: time_calls(
                    aq.loop_fn, noop, calls, chunk, aq.between
                )[0]

            samples = interleaved_rounds(runs, rounds, round_logger(rounds, log))
            if sink is not None:
                sink.quiesce()
                facts["statsd_datagrams_sent"] = sent
                facts["statsd_datagrams_received"] = sink.received
            if aq is not None:
                aq.between()
                facts["asyncio_queue_events_drained"] = aq.taken
        finally:
            for close in reversed(closers):
                with contextlib.suppress(Exception):
                    close()
    return samples, missing, facts, chunk


def child_multiprocess(rounds: int, calls: int) -> int:
    """The multiprocess-mode subprocess: print its samples as one JSON object."""
    namespace = f"aibench-peers-{os.getpid()}"
    result: dict[str, Any] = {"samples": {}, "error": None}
    mp_dir = os.environ.get(MP_ENV, "")
    try:
        if not mp_dir or "prometheus_client" in sys.modules:
            raise RuntimeError(f"{MP_ENV} must be set before prometheus_client is imported")
        try:
            record, _ = setup_prometheus()
            from prometheus_client import values
        except NotInstalled as e:
            result["error"] = f"not installed ({e})"
            print(json.dumps(result))
            return 0
        if values.ValueClass.__name__ != "MmapedValue":
            raise RuntimeError(f"multiprocess mode is not active: {values.ValueClass!r}")
        record("text_generation", 12.5, "llama-3-8b", 0.9)
        with Lanes(namespace) as lanes:
            chunk = lanes.chunk(calls)
            runs: dict[str, Callable[[], float]] = {
                "noop": lambda: time_calls(loop_basic, noop, calls, chunk)[0],
                "emit": lambda: lanes.time_emit(loop_basic, calls),
                "prometheus_mp": lambda: time_calls(loop_basic, record, calls, chunk)[0],
            }
            result["samples"] = interleaved_rounds(runs, rounds)
        result["files"] = sorted(os.listdir(mp_dir))
    except Exception as e:
        result["error"] = f"{type(e).__name__}: {e}"
    finally:
        remove_segments(namespace)
    print(json.dumps(result))
    return 0


def measure_multiprocess(rounds: int, calls: int) -> dict[str, Any]:
    mp_dir = tempfile.mkdtemp(prefix="aibench-prom-mp-")
    env = dict(os.environ, **{MP_ENV: mp_dir})
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child-multiprocess",
        "--rounds",
        str(rounds),
        "--calls",
        str(calls),
    ]
    try:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        lines = done.stdout.strip().splitlines()
        if done.returncode != 0 or not lines:
            return {
                "samples": {},
                "error": f"subprocess rc={done.returncode}: {done.stderr.strip()[-500:]}",
            }
        out: dict[str, Any] = json.loads(lines[-1])
        return out
    except (OSError, subprocess.SubprocessError, ValueError) as e:
        return {"samples": {}, "error": f"{type(e).__name__}: {e}"}
    finally:
        shutil.rmtree(mp_dir, ignore_errors=True)


def summarize(
    samples: dict[str, list[float]], ref: dict[str, list[float]] | None = None
) -> dict[str, Any]:
    """fastest/median per case; ratios to emit (to ``ref``'s emit when given)."""
    emit = (ref or samples)["emit"]
    e_fast, e_med = min(emit), statistics.median(emit)
    out = {}
    for case, values in samples.items():
        fast, med = min(values), statistics.median(values)
        out[case] = {
            "unit": "ns/event",
            "fastest": fast,
            "median": med,
            "ratio_fastest": fast / e_fast,
            "ratio_median": med / e_med,
            "samples": values,
        }
    return out


# -- import time ---------------------------------------------------------------------------
def parse_importtime(stderr: str) -> dict[str, int]:
    """module -> self µs, from ``-X importtime`` output."""
    out: dict[str, int] = {}
    for line in stderr.splitlines():
        if not line.startswith("import time:"):
            continue
        parts = line[len("import time:") :].split("|")
        if len(parts) != 3 or not parts[0].strip().isdigit():
            continue
        out[parts[2].strip()] = int(parts[0])
    return out


def measure_import(runs: int) -> dict[str, Any]:
    py = sys.executable
    env = dict(os.environ)
    env.pop("PYTHONPROFILEIMPORTTIME", None)
    base_mods: set[str] = set()
    client_runs: list[dict[str, int]] = []
    wall: dict[str, list[float]] = {"pass": [], "client": []}
    for r in range(runs):
        order = (("pass", "pass"), ("client", IMPORT_STMT))
        for name, stmt in order if r % 2 == 0 else order[::-1]:
            done = subprocess.run(
                [py, "-X", "importtime", "-c", stmt],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            )
            mods = parse_importtime(done.stderr)
            if name == "pass":
                base_mods |= set(mods)
            else:
                client_runs.append(mods)
            t0 = time.perf_counter_ns()
            subprocess.run([py, "-c", stmt], env=env, timeout=60, check=True)
            wall[name].append((time.perf_counter_ns() - t0) / 1e6)
    own = [{m: us for m, us in mods.items() if m not in base_mods} for mods in client_runs]
    totals = [sum(mods.values()) for mods in own]
    best: dict[str, int] = {}
    for mods in own:
        for m, us in mods.items():
            best[m] = min(us, best.get(m, us))
    top = sorted(best.items(), key=lambda kv: -kv[1])[:10]
    heavy = sorted({m for mods in own for m in mods} & {"numpy", "psutil", "pynvml", "yaml"})
    return {
        "runs": runs,
        "importtime_total_us_fastest": min(totals),
        "importtime_total_us_median": statistics.median(totals),
        "modules_imported": len(best),
        "modules": sorted(best),
        "heavy_modules_imported": heavy,
        "top": [{"module": m, "self_us": us} for m, us in top],
        "wall_ms": {
            name: {"fastest": min(v), "median": statistics.median(v), "samples": v}
            for name, v in wall.items()
        },
        "wall_extra_ms_fastest": min(wall["client"]) - min(wall["pass"]),
        "wall_extra_ms_median": statistics.median(wall["client"]) - statistics.median(wall["pass"]),
    }


# -- report --------------------------------------------------------------------------------
def table(report: dict[str, Any]) -> str:
    rows = [
        "| case | what | fastest ns/event | median ns/event "
        "| ratio to emit (fastest) | ratio to emit (median) | ratio to no-op (fastest) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    cases, missing = report["cases"], report["missing"]
    floor = cases["noop"]["fastest"]
    for name in ALL_ROWS:
        if name in cases:
            c = cases[name]
            # prometheus_mp ran in its own process: its no-op ratio is to that process's
            to_noop = c.get("ratio_noop_fastest", c["fastest"] / floor)
            rows.append(
                f"| {name} | {DESCRIPTION[name]} | {c['fastest']:.0f} | {c['median']:.0f} "
                f"| {c['ratio_fastest']:.2f} | {c['ratio_median']:.2f} | {to_noop:.2f} |"
            )
        else:
            why = missing.get(name, "not measured")
            rows.append(f"| {name} | {DESCRIPTION[name]} | {why} | | | | |")
    return "\n".join(rows)


def target_summary(report: dict[str, Any]) -> list[str]:
    """The targets for the compiled emit, from the fastest rounds of this run."""
    cases = report["cases"]
    emit, noop_ = cases["emit"]["fastest"], cases["noop"]["fastest"]
    lines = [
        f"- `client.emit` took the {report['facts']['emit_path']} path",
        f"- compiled emit / no-op: {emit / noop_:.2f} (target <= 4, aim 3): "
        f"{'PASS' if emit / noop_ <= 4 else 'FAIL'}",
    ]
    if "emit_python" in cases:
        py = cases["emit_python"]["fastest"]
        lines.append(f"- pure-Python emit / no-op: {py / noop_:.2f}; "
                     f"pure-Python / compiled: {py / emit:.2f}")
    if "prometheus_observe" in cases:
        obs = cases["prometheus_observe"]["fastest"]
        lines.append(f"- prometheus_client labels().observe / compiled emit: {obs / emit:.1f} "
                     f"(target >= 15): {'PASS' if obs / emit >= 15 else 'FAIL'}")
    if "prometheus" in cases:
        lines.append(f"- prometheus_client Histogram + Counter / compiled emit: "
                     f"{cases['prometheus']['fastest'] / emit:.1f}")
    return lines


def import_table(imp: dict[str, Any]) -> str:
    w = imp["wall_ms"]
    rows = [
        "| measure | fastest | median |",
        "|---|---:|---:|",
        f"| `-X importtime`: self time of the modules only the client import brings in "
        f"({imp['modules_imported']} modules) | {imp['importtime_total_us_fastest']} µs "
        f"| {imp['importtime_total_us_median']:.0f} µs |",
        f'| wall: `python -c "{IMPORT_STMT}"` | {w["client"]["fastest"]:.1f} ms '
        f"| {w['client']['median']:.1f} ms |",
        f"| wall: `python -c pass` | {w['pass']['fastest']:.1f} ms "
        f"| {w['pass']['median']:.1f} ms |",
        f"| wall: client import minus `pass` | {imp['wall_extra_ms_fastest']:.1f} ms "
        f"| {imp['wall_extra_ms_median']:.1f} ms |",
        "",
        "| top contributors (fastest self time over the runs) | self µs |",
        "|---|---:|",
    ]
    rows += [f"| `{t['module']}` | {t['self_us']} |" for t in imp["top"]]
    return "\n".join(rows)


def markdown(report: dict[str, Any]) -> str:
    p = report["parameters"]
    mp = report.get("multiprocess_subprocess", {})
    notes = [f"- {k}: {v}" for k, v in report["facts"].items()]
    if mp.get("own_emit"):
        e = mp["own_emit"]
        notes.append(
            f"- prometheus_mp ratios are to the subprocess's own emit "
            f"(fastest {e['fastest']:.0f} ns, median {e['median']:.0f} ns)"
        )
    imp = report["import"]
    heavy = ", ".join(imp["heavy_modules_imported"]) or "none"
    return "\n".join(
        [
            *header_lines("Recording one inference event: emit and its peers", report),
            f"- {p['rounds']} interleaved rounds of {p['calls_made']} calls per case "
            f"(timed chunks of {p['chunk']}); figures in ns per event; ratios to emit",
            "",
            "See the docstring of `bench/peers.py` for what each case does. Compare ratios, "
            "not absolute times.",
            "",
            table(report),
            "",
            *target_summary(report),
            *notes,
            "",
            "## Import time of the client",
            "",
            f"{imp['runs']} fresh subprocesses each; `-X importtime` of `{IMPORT_STMT}` next to "
            f"`-c pass`. Heavy modules (numpy, psutil, pynvml, yaml) imported: {heavy}.",
            "",
            import_table(imp),
            "",
        ]
    )


# -- the run -------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds (default 15)")
    parser.add_argument(
        "--calls", type=int, default=20_000, help="calls per case per round (default 20000)"
    )
    parser.add_argument(
        "--import-runs",
        type=int,
        default=10,
        help="fresh subprocesses per import measure (default 10)",
    )
    parser.add_argument("--out", type=Path, default=HERE / "peers_results.json")
    parser.add_argument("--md", type=Path, default=HERE / "PEERS.md")
    parser.add_argument("--quiet", action="store_true", help="no per-round progress lines")
    parser.add_argument("--child-multiprocess", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.calls < 1 or args.import_runs < 1:
        parser.error("--rounds, --calls and --import-runs must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    exit_on_sigterm()
    if args.child_multiprocess:
        return child_multiprocess(args.rounds, args.calls)
    namespace = f"aibench-peers-{os.getpid()}"
    start = RunStart()

    log = progress(args.quiet)
    try:
        samples, missing, facts, chunk = measure_main(args.rounds, args.calls, namespace, log)
    finally:
        left = remove_segments(namespace)
        if left:
            log(f"removed leftover segments: {', '.join(left)}")
    cases = summarize(samples)
    log("prometheus multiprocess mode, in its own subprocess ...")
    mp = measure_multiprocess(args.rounds, args.calls)
    mp_info: dict[str, Any] = {"error": mp.get("error"), "files": mp.get("files")}
    if mp.get("samples"):
        sub = summarize(mp["samples"])
        cases["prometheus_mp"] = sub["prometheus_mp"]
        cases["prometheus_mp"]["ratio_noop_fastest"] = (
            sub["prometheus_mp"]["fastest"] / sub["noop"]["fastest"]
        )
        mp_info["own_emit"] = {k: sub["emit"][k] for k in ("fastest", "median")}
        mp_info["own_noop"] = {k: sub["noop"][k] for k in ("fastest", "median")}
        mp_info["ratio_to_main_emit_fastest"] = (
            sub["prometheus_mp"]["fastest"] / cases["emit"]["fastest"]
        )
    else:
        err = mp.get("error") or "no samples"
        missing["prometheus_mp"] = err if err.startswith("not installed") else f"failed: {err}"
    log("import time ...")
    imp = measure_import(args.import_runs)
    report: dict[str, Any] = {
        **start.header(),
        "parameters": {
            "rounds": args.rounds,
            "calls": args.calls,
            "chunk": chunk,
            "calls_made": -(-args.calls // chunk) * chunk,
            "import_runs": args.import_runs,
        },
        "cases": cases,
        "missing": missing,
        "facts": facts,
        "multiprocess_subprocess": mp_info,
        "import": imp,
    }
    print(table(report))
    print()
    print("\n".join(target_summary(report)))
    print()
    print(import_table(imp))
    write_results(report, args.out, args.md, markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
