"""What the one-line instrumentation costs next to ``client.emit``, and the first call in a
thread with and without ``client.prepare()``.

Usage, from the repository root::

    .venv/bin/python bench/instrument_bench.py [--rounds N] [--calls N] [--threads N]
                                               [--out bench/instrument_results.json]
                                               [--md bench/INSTRUMENT.md]

Part one, per event, in one process in interleaved rounds (``benchlib.timing``; the fastest
round is the figure, the median beside it, both also as ratios to emit's):

``noop``             a function with emit's signature that does nothing: the floor.
``emit``             ``client.emit("text_generation", 12.5, "llama-3-8b", 0.9)`` into this
                     thread's lane, drained between timed chunks (``benchlib.lanes``).
``timed_block``      ``with client.timed("text_generation", model="llama-3-8b", quality=0.9):
                     pass``: the handle made, the clock read twice, the current event set and
                     reset, and the same emit.
``timed_decorator``  a function decorated with ``@client.timed(...)``, called with no body.
``prometheus_time``  the peer's one-line form: ``with histogram.labels(op, model).time():
                     pass`` (prometheus_client, own registry), which records a latency only.
``asgi_plain``       a request through a three-message ASGI app (read the request, start the
                     answer, one body chunk), driven in this process by an event loop.
``asgi_middleware``  the same request through ``integrations.asgi.AnalyticsMiddleware``
                     around it (its route finder names it ``POST /v1/embed``).
``wsgi_plain``       a request through a WSGI app answering one chunk (called, iterated,
                     closed as a server would).
``wsgi_middleware``  the same through ``integrations.wsgi.AnalyticsMiddleware``.
``fastapi_plain``, ``fastapi_middleware``, ``flask_plain``, ``flask_middleware``: the same
                     request to the smallest endpoint of each framework (a dict answered as
                     JSON), bare and with the middleware; where the framework is not
                     installed, the results say so.

A middleware's cost is the difference between its case and the plain one, given beside emit
in the results.

Part two, the first event of a new thread: ``--threads`` threads one after another, half of
them calling ``client.prepare()`` first (untimed, as a server's startup hook would), each
timing its first ``emit``, in alternation, in a namespace of its own whose segments are
removed after each thread. Once on a quiet cache and once after touching 64 MiB (what an
inference step does to the caches before the first event of a request).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ai_analytics import client
from ai_analytics.client._segments import NAMESPACE_ENV
from ai_analytics.integrations.asgi import AnalyticsMiddleware as AsgiMiddleware
from ai_analytics.integrations.wsgi import AnalyticsMiddleware as WsgiMiddleware

from benchlib.lanes import MODEL, OP, Lanes, remove_segments
from benchlib.report import RunStart, exit_on_sigterm, header_lines, progress, write_results
from benchlib.timing import interleaved_rounds, loop_basic, noop, time_calls

HERE = Path(__file__).resolve().parent
CASES = {
    "noop": "a no-op function with emit's signature",
    "emit": "`client.emit(op, 12.5, model, 0.9)`",
    "timed_block": "`with client.timed(op, model=..., quality=0.9): pass`",
    "timed_decorator": "a function decorated with `@client.timed(...)`, empty body",
    "prometheus_time": "prometheus_client: `with histogram.labels(op, model).time(): pass`",
    "asgi_plain": "a request through a minimal ASGI app",
    "asgi_middleware": "the same through the ASGI `AnalyticsMiddleware`",
    "wsgi_plain": "a request through a minimal WSGI app",
    "wsgi_middleware": "the same through the WSGI `AnalyticsMiddleware`",
    "fastapi_plain": "a request to the smallest FastAPI endpoint",
    "fastapi_middleware": "the same with `app.add_middleware(AnalyticsMiddleware)`",
    "flask_plain": "a request to the smallest Flask endpoint",
    "flask_middleware": "the same with `app.wsgi_app = AnalyticsMiddleware(app.wsgi_app)`",
}
EVICT_BYTES = 64 * 2**20


def loop_timed_block(timed: Callable[..., Any], n: int) -> None:
    for _ in range(n):
        with timed(OP, model=MODEL, quality=0.9):
            pass


def loop_decorated(work: Callable[[], None], n: int) -> None:
    for _ in range(n):
        work()


def loop_prometheus_time(histogram: Any, n: int) -> None:
    for _ in range(n):
        with histogram.labels(OP, MODEL).time():
            pass


def prometheus_histogram() -> Any:
    from prometheus_client import CollectorRegistry, Histogram  # the daemon's dependency

    return Histogram("request_seconds", "latency", ["operation", "model"],
                     registry=CollectorRegistry())


# -- a request through each middleware, in this process: no server, no socket, so that what
# is measured is the middleware's own work (the same app with and without it).
HTTP_SCOPE = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
              "scheme": "http", "path": "/v1/embed", "raw_path": b"/v1/embed", "query_string": b"",
              "root_path": "", "headers": [], "client": ("127.0.0.1", 50000),
              "server": ("127.0.0.1", 8000)}
START = {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
BODY = {"type": "http.response.body", "body": b"ok", "more_body": False}
REQUEST = {"type": "http.request", "body": b"", "more_body": False}


async def plain_asgi(scope, receive, send):
    await receive()
    await send(START)
    await send(BODY)


async def _receive():
    return REQUEST


async def _send(message):
    pass


def asgi_loop(runner):
    def loop(app, n):
        async def requests():
            for _ in range(n):
                await app(dict(HTTP_SCOPE), _receive, _send)
        runner.run_until_complete(requests())
    return loop


WSGI_ENVIRON = {"REQUEST_METHOD": "POST", "PATH_INFO": "/v1/embed", "SCRIPT_NAME": "",
                "QUERY_STRING": "", "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000",
                "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http", "CONTENT_LENGTH": "0",
                "wsgi.input": io.BytesIO(), "wsgi.errors": sys.stderr, "wsgi.version": (1, 0),
                "wsgi.multithread": False, "wsgi.multiprocess": False, "wsgi.run_once": False}
HEADERS = [("Content-Length", "2")]


def plain_wsgi(environ, start_response):
    start_response("200 OK", HEADERS)
    return [b"ok"]


def _start_response(status, headers, exc_info=None):
    return None


def wsgi_loop(app, n):
    for _ in range(n):
        body = app(dict(WSGI_ENVIRON), _start_response)
        for _chunk in body:
            pass
        close = getattr(body, "close", None)
        if close is not None:
            close()


def asgi_route(scope: Any, root_path: str) -> str:
    return "/v1/embed"


def wsgi_route(environ: Any) -> str:
    return "/v1/embed"


def framework_apps() -> tuple[dict[str, Any], dict[str, str]]:
    """The smallest FastAPI and Flask endpoints at POST /v1/embed, bare and with the
    middleware (frameworks are the test extras: a missing one is reported, not fatal)."""
    apps: dict[str, Any] = {}
    missing: dict[str, str] = {}
    try:
        from fastapi import FastAPI
    except ImportError as e:
        missing["fastapi"] = f"not installed ({e})"
    else:
        for name, wrapped in (("fastapi_plain", False), ("fastapi_middleware", True)):
            fast = FastAPI()
            fast.post("/v1/embed")(_fastapi_embed)
            if wrapped:
                fast.add_middleware(AsgiMiddleware, model=MODEL)
            apps[name] = fast
    try:
        from flask import Flask
    except ImportError as e:
        missing["flask"] = f"not installed ({e})"
    else:
        for name, wrapped in (("flask_plain", False), ("flask_middleware", True)):
            flask = Flask(name)
            flask.post("/v1/embed")(_flask_embed)
            if wrapped:
                flask.wsgi_app = WsgiMiddleware(flask.wsgi_app, model=MODEL)  # type: ignore[method-assign]
            apps[name] = flask
    return apps, missing


async def _fastapi_embed() -> dict[str, bool]:
    return {"ok": True}


def _flask_embed() -> dict[str, bool]:
    return {"ok": True}


def measure_calls(rounds: int, calls: int, namespace: str,
                  log: Callable[[str], None]
                  ) -> tuple[dict[str, list[float]], int, dict[str, str]]:
    runner = asyncio.new_event_loop()
    loop_asgi = asgi_loop(runner)
    with Lanes(namespace) as lanes, contextlib.closing(runner):
        chunk = lanes.chunk(calls)

        @client.timed(OP, model=MODEL, quality=0.9)
        def work() -> None:
            pass

        def checked(loop: Callable[[Any, int], None], f: Any) -> Callable[[], float]:
            def run() -> float:
                live = lanes.live
                assert live is not None
                head, dropped = live.head, live.dropped
                ns, made = time_calls(loop, f, calls, chunk, lanes.drain_live)
                if live.head - head != made or live.dropped != dropped:
                    raise RuntimeError("an event was not written")
                return ns
            return run

        runs: dict[str, Callable[[], float]] = {
            "noop": lambda: time_calls(loop_basic, noop, calls, chunk)[0],
            "emit": lambda: lanes.time_emit(loop_basic, calls),
            "timed_block": checked(loop_timed_block, client.timed),
            "timed_decorator": checked(loop_decorated, work),
            "prometheus_time": lambda: time_calls(loop_prometheus_time, prometheus_histogram(),
                                                  calls, chunk)[0],
            "asgi_plain": lambda: time_calls(loop_asgi, plain_asgi, calls, chunk)[0],
            "asgi_middleware": checked(loop_asgi, AsgiMiddleware(plain_asgi, model=MODEL,
                                                                 route=asgi_route)),
            "wsgi_plain": lambda: time_calls(wsgi_loop, plain_wsgi, calls, chunk)[0],
            "wsgi_middleware": checked(wsgi_loop, WsgiMiddleware(plain_wsgi, model=MODEL,
                                                                 route=wsgi_route)),
        }
        apps, missing = framework_apps()
        for name, app in apps.items():
            loop = loop_asgi if name.startswith("fastapi") else wsgi_loop
            runs[name] = (checked(loop, app) if name.endswith("_middleware")
                          else lambda loop=loop, app=app: time_calls(loop, app, calls, chunk)[0])

        def after_round(r: int, samples: dict[str, list[float]]) -> None:
            log(f"round {r + 1}/{rounds}: " + ", ".join(
                f"{name} {values[-1]:.0f} ns" for name, values in samples.items()))

        return interleaved_rounds(runs, rounds, after_round), chunk, missing


def first_emit_us(prepared: bool, evict: bytearray | None) -> float:
    """In a new thread: optionally prepare, optionally touch ``evict``, then time the first
    emit (microseconds)."""
    took: list[float] = []

    def body() -> None:
        if prepared and not client.prepare():
            raise RuntimeError("prepare() found no usable segment directory")
        if evict is not None:
            evict[::4096] = b"\x01" * len(evict[::4096])  # one store per page: caches cold
        start = time.perf_counter_ns()
        written = client.emit(OP, 12.5, MODEL, 0.9)
        took.append((time.perf_counter_ns() - start) / 1e3)
        if not written:
            raise RuntimeError("the first emit was dropped")

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    if not took:
        raise RuntimeError("the measuring thread failed")
    return took[0]


def measure_first_calls(threads: int, namespace: str,
                        log: Callable[[str], None]) -> dict[str, dict[str, float]]:
    saved = os.environ.get(NAMESPACE_ENV)
    os.environ[NAMESPACE_ENV] = namespace
    evict = bytearray(EVICT_BYTES)
    samples: dict[str, list[float]] = {}
    try:
        for cache, buffer in (("quiet", None), ("after 64 MiB touched", evict)):
            for index in range(threads):
                prepared = index % 2 == 1
                key = f"{'prepared' if prepared else 'not prepared'}, {cache}"
                samples.setdefault(key, []).append(first_emit_us(prepared, buffer))
                remove_segments(namespace)
            log(f"first calls, {cache}: done")
    finally:
        remove_segments(namespace)
        if saved is None:
            os.environ.pop(NAMESPACE_ENV, None)
        else:
            os.environ[NAMESPACE_ENV] = saved
    return {key: {"median_us": statistics.median(values), "max_us": max(values),
                  "min_us": min(values), "threads": len(values)}
            for key, values in samples.items()}


def summarize(samples: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    emit_fast, emit_median = min(samples["emit"]), statistics.median(samples["emit"])
    return {name: {"fastest": min(values), "median": statistics.median(values),
                   "ratio_fastest": min(values) / emit_fast,
                   "ratio_median": statistics.median(values) / emit_median}
            for name, values in samples.items()}


def middleware_costs(cases: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """What each middleware adds to a request (its case minus the plain one, fastest rounds),
    in ns and as a multiple of emit."""
    emit = cases["emit"]["fastest"]
    costs = {}
    for kind in ("asgi", "wsgi", "fastapi", "flask"):
        if f"{kind}_middleware" not in cases:
            continue
        added = cases[f"{kind}_middleware"]["fastest"] - cases[f"{kind}_plain"]["fastest"]
        costs[kind] = {"added_ns": added, "ratio_to_emit": added / emit}
    return costs


def markdown(report: dict[str, Any]) -> str:
    p = report["parameters"]
    lines = [
        *header_lines("One-line instrumentation: its cost next to emit", report),
        f"- {p['rounds']} interleaved rounds of {p['calls']} calls per case (chunks of "
        f"{p['chunk']}); {p['threads']} new threads for the first calls",
        "",
        "See the docstring of `bench/instrument_bench.py` for what each case does. Compare "
        "ratios, not absolute times.",
        "",
        "| case | what | fastest ns/event | median ns/event | ratio to emit (fastest) "
        "| ratio to emit (median) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, case in report["cases"].items():
        lines.append(f"| {name} | {CASES[name]} | {case['fastest']:.0f} | {case['median']:.0f} "
                     f"| {case['ratio_fastest']:.2f} | {case['ratio_median']:.2f} |")
    lines += ["", "What each middleware adds to a request (its case minus the plain one, "
              "fastest rounds):", ""]
    for kind, cost in report["middleware_costs"].items():
        lines.append(f"- {kind}: {cost['added_ns']:.0f} ns, "
                     f"{cost['ratio_to_emit']:.1f} times emit")
    lines += [f"- {name}: {why}" for name, why in report["missing"].items()]
    lines += ["", "## The first emit of a new thread", "",
              "| thread | median µs | max µs | min µs | threads |", "|---|---:|---:|---:|---:|"]
    for key, first in report["first_calls"].items():
        lines.append(f"| {key} | {first['median_us']:.1f} | {first['max_us']:.1f} "
                     f"| {first['min_us']:.1f} | {first['threads']} |")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds (default 15)")
    parser.add_argument("--calls", type=int, default=20_000,
                        help="calls per case per round (default 20000)")
    parser.add_argument("--threads", type=int, default=40,
                        help="new threads timed for the first-call part (default 40)")
    parser.add_argument("--out", type=Path, default=HERE / "instrument_results.json")
    parser.add_argument("--md", type=Path, default=HERE / "INSTRUMENT.md")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.calls < 1 or args.threads < 2:
        parser.error("--rounds and --calls must be at least 1, --threads at least 2")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    exit_on_sigterm()
    start = RunStart()
    log = progress(args.quiet, time.monotonic())
    namespace = f"aibench-instrument-{os.getpid()}"
    try:
        samples, chunk, missing = measure_calls(args.rounds, args.calls, namespace, log)
        first_calls = measure_first_calls(args.threads, f"{namespace}-first", log)
    finally:
        remove_segments(namespace)
    report = {
        **start.header(),
        "parameters": {"rounds": args.rounds, "calls": args.calls, "chunk": chunk,
                       "threads": args.threads},
        "cases": (cases := summarize(samples)),
        "middleware_costs": middleware_costs(cases),
        "missing": missing,
        "first_calls": first_calls,
        "samples": samples,
    }
    text = markdown(report)
    print(text)
    write_results(report, args.out, args.md, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
