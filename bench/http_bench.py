"""What ``GET /metrics`` and ``GET /status`` cost at the cardinality cap: a real daemon holding
1,024 series, asked by a real HTTP client.

Usage, from the repository root::

    .venv/bin/python bench/http_bench.py [--series 1024] [--llm-shares 0.25,1] [--requests 20]
                                         [--snapshots 3] [--before PYTHON]
                                         [--out bench/http_results.json] [--md bench/HTTP.md]

For each share of LLM series (``--llm-shares``), it starts one ``ai-analyticsd`` (``python -m
ai_analytics.daemon``) per build, at once, each on a free loopback port: this checkout's
Python, and ``--before``'s (a venv with another release of ai-analytics installed), for a
ratio taken in one run. One producer process per daemon emits 20 events on each of
``--series`` (operation, model) series (32 operations x ``series/32`` models; the LLM series
pass time to first token, queue time, tokens, a quality score and a cache lookup, the others
latency only), and the bench waits until a snapshot holds them all. Then, with
``http.client`` (one connection per request, as the daemon speaks HTTP/1.0), one daemon
after the other for each of ``--snapshots`` snapshots, so that the machine's load weighs on
the builds alike:

- the first request after a new snapshot, for ``/metrics`` with ``Accept-Encoding: gzip``
  (Prometheus's request) and for ``/status`` with gzip, then up to ``--requests`` more of
  each form, identity and gzip, on the same document. Times are from sending the request
  to the last byte of the answer read (decoding gzip not included);
- the answers' sizes, identity and gzip.

Then, off the request path, with the daemons stopped, in processes of each build's Python in
turn on the same document (this checkout's last /status): ``render`` (the /metrics text),
the /status JSON, zlib's gzip at levels 1 and 6; and, where the build has
``StatusServer.publish``, a server in that process: the time ``publish`` takes (both bodies,
both gzip forms) and the first gzip request after it.

A new snapshot is noticed from the state file's modification time (the daemon publishes its
document before it writes that file), so no request renders on the bench's behalf; the
requests on "the same document" stop when the next state file appears.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from ai_analytics.client._segments import NAMESPACE_ENV

from benchlib.daemon import DaemonProcess
from benchlib.report import RunStart, exit_on_sigterm, header_lines, progress, write_results

HERE = Path(__file__).resolve().parent
EVENTS_PER_SERIES = 20
OPERATIONS = 32
SNAPSHOT_SECONDS = 5.0  # the default
TARGET_MS = 50.0

PRODUCER = """
import math, sys, time
from ai_analytics import client
series, llm_every = int(sys.argv[1]), int(sys.argv[2])
for i in range(series):
    if i % 32 == 31:
        time.sleep(0.25)  # a lane holds 8192 events: room for a drain loop busy for seconds
    op, model = f"op{i % {operations}:02d}", f"model-{i // {operations}:03d}"
    llm = llm_every > 0 and i % llm_every == 0
    for k in range({events}):
        latency = math.exp(math.log(1.0) + (math.log(4000.0) * ((k * 7 + i) % {events}) / {events}))
        if llm:
            client.emit(op, latency, model=model, success=k % 19 != 0, quality=0.8,
                        cache_hit=k % 2 == 0, ttft_ms=latency / 5, queue_ms=latency / 20,
                        tokens_in=300, tokens_out=120)
        else:
            client.emit(op, latency, model=model, success=k % 19 != 0)
""".replace("{operations}", str(OPERATIONS)).replace("{events}", str(EVENTS_PER_SERIES))

# Run in the build's Python, on the document saved from /status: the rendering off the
# request path. Prints JSON: milliseconds, medians of ``rounds``.
RENDER = """
import json, statistics, sys, time, zlib
from ai_analytics.daemon.http.metrics import render
path, rounds = sys.argv[1], int(sys.argv[2])
with open(path) as f:
    document = json.load(f)
def timed(fn):
    times = []
    for _ in range(rounds):
        t = time.perf_counter(); out = fn(); times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times), out
def gz(data, level):
    c = zlib.compressobj(level, zlib.DEFLATED, 31)
    return c.compress(data) + c.flush()
from ai_analytics.daemon.http import server
try:  # the daemon's own encoder, where the build has it
    from ai_analytics.core.state import document_json as status_json
except ImportError:
    status_json = lambda d: json.dumps(d, separators=(",", ":")).encode() + b"\\n"
metrics_ms, text = timed(lambda: render(document))
status_ms, body = timed(lambda: status_json(document))
out = {"metrics_render_ms": metrics_ms, "status_json_ms": status_ms,
       "metrics_bytes": len(text), "status_bytes": len(body)}
for level in (1, 6):
    for name, data in (("metrics", text), ("status", body)):
        ms, packed = timed(lambda: gz(data, level))
        out[f"{name}_gzip{level}_ms"], out[f"{name}_gzip{level}_bytes"] = ms, len(packed)
if hasattr(server.StatusServer, "publish"):
    import http.client
    def get(port, path):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        t = time.perf_counter()
        conn.request("GET", path, headers={"Accept-Encoding": "gzip"})
        response = conn.getresponse(); response.read(); conn.close()
        assert response.getheader("Content-Encoding") == "gzip"
        return (time.perf_counter() - t) * 1000
    raw = open(path, "rb").read()
    http_server = server.StatusServer("127.0.0.1", 0, lambda: None, lambda: (True, ""),
                                      metrics=render)
    http_server.start()
    port = http_server.address[1]
    http_server.publish(json.loads(raw))
    get(port, "/metrics"), get(port, "/status")  # a scraper that asks for gzip
    publish, first_metrics, first_status = [], [], []
    for _ in range(rounds):
        fresh = json.loads(raw)  # another document object: rendered anew
        t = time.perf_counter(); http_server.publish(fresh)
        publish.append((time.perf_counter() - t) * 1000)
        first_metrics.append(get(port, "/metrics")); first_status.append(get(port, "/status"))
    http_server.stop(5.0)
    out.update(publish_ms=statistics.median(publish),
               published_first_metrics_gzip_ms=statistics.median(first_metrics),
               published_first_status_gzip_ms=statistics.median(first_status))
print(json.dumps(out))
"""


class BuildDaemon(DaemonProcess):
    """``DaemonProcess`` run by another Python (another venv: another build)."""

    def __init__(self, python: str, directory: Path, namespace: str, **settings: object):
        super().__init__(directory, namespace, **settings)
        self.python = python

    def start(self) -> BuildDaemon:
        env = {**os.environ, NAMESPACE_ENV: self.namespace}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [self.python, "-m", "ai_analytics.daemon", "--config", str(self.config_path)],
                env=env, stdout=log, stderr=log)
        self.wait_for(lambda: self.port_open(), 30.0, "the daemon's HTTP endpoint")
        return self

    @property
    def port(self) -> int:
        return int(json.loads(self.config_path.read_text().split("http_port: ")[1]
                              .splitlines()[0]))

    def port_open(self) -> bool:
        try:
            return get(self.port, "/healthz")[0] in (200, 503)
        except OSError:
            return False


def get(port: int, path: str, gzip_ok: bool = False) -> tuple[int, dict[str, str], bytes, float]:
    """One request: (status, headers, body, ms from sending to the last byte)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        started = time.perf_counter()
        conn.request("GET", path, headers={"Accept-Encoding": "gzip"} if gzip_ok else {})
        response = conn.getresponse()
        body = response.read()
        elapsed = (time.perf_counter() - started) * 1000
        return response.status, dict(response.getheaders()), body, elapsed
    finally:
        conn.close()


def state_mtime(daemon: DaemonProcess) -> int:
    try:
        return (daemon.state_dir / "state.json").stat().st_mtime_ns
    except OSError:
        return 0


class Run:
    """One build's daemon over one mix, and what was measured of it."""

    def __init__(self, name: str, python: str, directory: Path) -> None:
        self.name = name
        self.python = python
        self.daemon = BuildDaemon(python, directory, f"aibh{uuid.uuid4().hex[:8]}")
        self.last = 0
        self.events: dict[str, int] = {}
        self.rss: int | None = None
        self.firsts: dict[str, list[float]] = {"metrics_gzip": [], "status_gzip": []}
        self.warm: dict[str, list[float]] = {k: [] for k in (
            "metrics_gzip", "metrics_identity", "status_gzip", "status_identity")}
        self.sizes: dict[str, int] = {}
        self.document = b""
        self.renders: list[dict[str, float]] = []

    def load(self, series: int, llm_every: int) -> None:
        """Emit the workload; return once a snapshot holds every series."""
        daemon = self.daemon
        subprocess.run([self.python, "-c", PRODUCER, str(series), str(llm_every)],
                       env={**os.environ, NAMESPACE_ENV: daemon.namespace},
                       check=True, timeout=300)
        total = series * EVENTS_PER_SERIES

        def complete() -> dict[str, Any] | None:
            state = daemon.state()
            if state is None or state["cardinality"]["series"] != series:
                return None
            events = state["events"]
            return events if events["received"] + events["dropped"] == total else None

        self.events = daemon.wait_for(complete, 120.0, "a snapshot with every series")
        self.last = state_mtime(daemon)
        self.rss = psutil_rss(daemon.pid)

    def measure_snapshot(self, requests: int) -> None:
        """Wait for a new snapshot; its first requests, then the same document's."""
        daemon = self.daemon
        self.last = daemon.wait_for(lambda seen=self.last: (m := state_mtime(daemon)) != seen
                                    and m, 60.0, "a new snapshot")
        for path, key in (("/metrics", "metrics"), ("/status", "status")):
            status, headers, body, ms = get(daemon.port, path, gzip_ok=True)
            assert status == 200, (path, status, body[:200])
            self.firsts[f"{key}_gzip"].append(ms)
        for _ in range(requests):
            if state_mtime(daemon) != self.last:
                break  # a new document: what follows would be a first request
            for path, key in (("/metrics", "metrics"), ("/status", "status")):
                for gzip_ok in (True, False):
                    status, headers, body, ms = get(daemon.port, path, gzip_ok)
                    form = "gzip" if headers.get("Content-Encoding") == "gzip" else "identity"
                    self.warm[f"{key}_{'gzip' if gzip_ok else 'identity'}"].append(ms)
                    self.sizes[f"{key}_{form}_bytes"] = len(body)
                    if key == "status":
                        self.document = gzip.decompress(body) if form == "gzip" else body

    def measure_render(self, document: Path) -> None:
        """One process of the build's Python timing the rendering off the request path."""
        done = subprocess.run([self.python, "-c", RENDER, str(document), "3"],
                              capture_output=True, text=True, check=True, timeout=600)
        self.renders.append(json.loads(done.stdout))

    def result(self) -> dict[str, Any]:
        render = {key: statistics.median(r[key] for r in self.renders)
                  for key in self.renders[0]}
        return {
            "python": self.python,
            "daemon_rss_bytes": self.rss,
            "events": self.events,
            "first_after_snapshot_ms": {k: summary(v) for k, v in self.firsts.items()},
            "same_document_ms": {k: summary(v) for k, v in self.warm.items()},
            "sizes": self.sizes,
            "render": render,
        }


def measure_mix(builds: dict[str, str], llm_share: float, args: argparse.Namespace,
                log: Any) -> dict[str, Any]:
    """Every build's daemon up at once with the same workload, measured in alternation (a
    snapshot of one, then of the next, ...; then the renderings, one process of each build
    in turn), so that the machine's load weighs on each alike."""
    llm_every = round(1 / llm_share) if llm_share > 0 else 0
    with tempfile.TemporaryDirectory(prefix="aibench-http-") as tmp, \
            contextlib.ExitStack() as stack:
        runs = []
        for index, (name, python) in enumerate(builds.items()):
            directory = Path(tmp) / str(index)
            directory.mkdir()
            run = Run(name, python, directory)
            stack.enter_context(run.daemon)
            runs.append(run)
        for run in runs:
            log(f"{llm_share:.0%} LLM, {run.name}: {args.series} series ...")
            run.load(args.series, llm_every)
        for round_ in range(args.snapshots):
            for run in runs:
                run.measure_snapshot(args.requests)
            log(f"{llm_share:.0%} LLM: snapshot {round_ + 1}/{args.snapshots} measured")
        stack.close()  # the daemons stop: the renderings run on a quiet machine
        document = Path(tmp) / "document.json"
        document.write_bytes(runs[0].document)  # this checkout's: the same for every build
        if args.keep_document:
            args.keep_document.write_bytes(runs[0].document)
        log(f"{llm_share:.0%} LLM: rendering off the request path ...")
        for _ in range(args.render_rounds):
            for run in runs:
                run.measure_render(document)
    return {run.name: run.result() for run in runs}


def psutil_rss(pid: int) -> int | None:
    try:
        import psutil

        return int(psutil.Process(pid).memory_info().rss)
    except Exception:
        return None


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"median": statistics.median(ordered), "max": ordered[-1],
            "p90": ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))], "n": len(ordered)}


def shown_python(python: str) -> str:
    """An interpreter as the results show it: relative to this checkout when inside it, else
    only its virtual environment's last folders (the results name no machine paths)."""
    path = Path(python)
    if path.is_relative_to(HERE.parent):
        return str(path.relative_to(HERE.parent))
    return str(Path(*path.parts[-3:]))


def markdown(report: dict[str, Any]) -> str:
    p = report["parameters"]
    first = next(iter(report["mixes"].values()))
    lines = [*header_lines("/metrics and /status at the cardinality cap", report),
             f"- {p['series']} series ({OPERATIONS} operations x {p['series'] // OPERATIONS} "
             f"models), {EVENTS_PER_SERIES} events each; an LLM series passes TTFT, queue "
             "time, tokens, quality and a cache lookup, the others latency only; a snapshot "
             f"every {SNAPSHOT_SECONDS:g} s (the default)",
             "- client: http.client, one connection per request, on the same machine; ms from "
             "sending the request to the answer's last byte (gzip not decoded)",
             *(f"- {name}: `{shown_python(b['python'])}`" for name, b in first.items())]
    for share, builds in report["mixes"].items():
        lines += ["", f"## {float(share):.0%} of the series are LLM series", ""]
        table(lines, builds)
    lines += ["", f"Target: at most {TARGET_MS:.0f} ms per answer."]
    return "\n".join(lines) + "\n"


def table(lines: list[str], builds: dict[str, Any]) -> None:
    names = list(builds)
    head = "| | " + " | ".join(names) + (" | after / before |" if len(names) == 2 else " |")
    lines += [head, "|---|" + "---:|" * (len(names) + (1 if len(names) == 2 else 0))]

    def row(label: str, values: list[float | None], fmt: str = "{:.1f}") -> None:
        cells = ["-" if v is None else fmt.format(v) for v in values]
        ratio = ""
        if len(values) == 2:
            before, after = values[1], values[0]
            ratio = f" | {after / before:.3f}" if before and after is not None else " | -"
        lines.append(f"| {label} | " + " | ".join(cells) + ratio + " |")

    for kind, label in (("metrics", "/metrics"), ("status", "/status")):
        row(f"{label}, gzip: first request after a new snapshot, median ms",
            [b["first_after_snapshot_ms"][f"{kind}_gzip"]["median"] for b in builds.values()])
        row(f"{label}, gzip: first request after a new snapshot, max ms",
            [b["first_after_snapshot_ms"][f"{kind}_gzip"]["max"] for b in builds.values()])
        for form in ("gzip", "identity"):
            key = f"{kind}_{form}"
            row(f"{label}, {form} asked: same document, median ms",
                [b["same_document_ms"][key]["median"] for b in builds.values()])
            row(f"{label}, {form} asked: same document, p90 ms",
                [b["same_document_ms"][key]["p90"] for b in builds.values()])
        for form in ("identity", "gzip"):
            row(f"{label} answer, {form}, kB",
                [(b["sizes"].get(f"{kind}_{form}_bytes") or 0) / 1000 or None
                 for b in builds.values()], "{:.0f}")
    for key, label in (("publish_ms", "StatusServer.publish (both bodies and both gzip "
                                      "forms), ms"),
                       ("published_first_metrics_gzip_ms", "/metrics, gzip: first request "
                                                           "after publish, ms"),
                       ("published_first_status_gzip_ms", "/status, gzip: first request "
                                                          "after publish, ms"),
                       ("metrics_render_ms", "render of the /metrics text, ms"),
                       ("status_json_ms", "JSON of the /status body, ms"),
                       ("metrics_gzip1_ms", "gzip level 1 of the /metrics text, ms"),
                       ("metrics_gzip6_ms", "gzip level 6 of the /metrics text, ms"),
                       ("status_gzip1_ms", "gzip level 1 of the /status body, ms"),
                       ("metrics_gzip6_bytes", "/metrics text at gzip level 6, kB"),
                       ("status_gzip6_bytes", "/status body at gzip level 6, kB")):
        scale = 1000 if key.endswith("bytes") else 1
        prefix = "" if key.startswith("published_") else "off the request path: "
        row(f"{prefix}{label}",
            [b["render"][key] / scale if key in b["render"] else None
             for b in builds.values()])
    row("daemon RSS, MB", [(b["daemon_rss_bytes"] or 0) / 1e6 or None for b in builds.values()],
        "{:.0f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--series", type=int, default=1024, help="series (default 1024)")
    parser.add_argument("--llm-shares", default="0.25,1",
                        help="shares of the series that are LLM series, one run each "
                             "(default 0.25,1)")
    parser.add_argument("--requests", type=int, default=20,
                        help="requests of each form per snapshot (default 20)")
    parser.add_argument("--snapshots", type=int, default=3,
                        help="snapshots measured (default 3)")
    parser.add_argument("--render-rounds", type=int, default=5,
                        help="processes per build timing the renderings off the request "
                             "path, each the median of 3 (default 5)")
    parser.add_argument("--before", metavar="PYTHON",
                        help="a Python with another build installed, measured the same way")
    parser.add_argument("--keep-document", type=Path, metavar="PATH",
                        help="keep the last /status document of this checkout's run there")
    parser.add_argument("--out", type=Path, default=HERE / "http_results.json")
    parser.add_argument("--md", type=Path, default=HERE / "HTTP.md")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    args = parser.parse_args(argv)
    if args.series < 1 or args.requests < 1 or args.snapshots < 1 or args.render_rounds < 1:
        parser.error("--series, --requests, --snapshots and --render-rounds must be at least 1")
    try:
        shares = [float(share) for share in args.llm_shares.split(",")]
    except ValueError:
        shares = []
    if not shares or not all(0 <= share <= 1 for share in shares):
        parser.error("--llm-shares: numbers between 0 and 1, separated by commas")
    exit_on_sigterm()
    start = RunStart()
    log = progress(args.quiet, time.monotonic())
    builds = {"this checkout": sys.executable}
    if args.before:
        builds["before"] = args.before
    mixes = {str(share): measure_mix(builds, share, args, log) for share in shares}
    report = {**start.header(),
              "parameters": {"series": args.series, "llm_shares": shares,
                             "requests": args.requests, "snapshots": args.snapshots,
                             "events_per_series": EVENTS_PER_SERIES,
                             "snapshot_interval_seconds": SNAPSHOT_SECONDS},
              "mixes": mixes}
    text = markdown(report)
    print(text)
    write_results(report, args.out, args.md, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
