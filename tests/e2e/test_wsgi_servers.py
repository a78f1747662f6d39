"""The WSGI middleware under gunicorn with two worker processes: a Flask app with sync
workers (and the post_fork hook: each worker's lane exists before its first request), the
same app with gevent workers (greenlets share their OS thread's lane), and a Django site.
A real HTTP client sends a known number of requests of each kind, concurrently, so that both
workers serve; once the servers have stopped, a Daemon in this process drains their lanes
and every (operation, model) is reconciled exactly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from ai_analytics.client import _layout as L
from ai_analytics.client._segments import lane_prefix
from ai_analytics.core.lane_header import NotReady, parse_header

from helpers import (
    SHM_DIR,
    TESTS,
    fetch,
    free_port,
    interruptible,
    lane_names,
    wait_for,
)

APPS = TESTS / "apps"
HOOK = "python:ai_analytics.integrations.gunicorn"
CONCURRENCY = 6


def _children(pid: int) -> set[int]:
    try:
        return {int(child) for child in
                Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}
    except FileNotFoundError:  # gone already
        return set()


class Gunicorn:
    """``gunicorn --workers 2`` on a free loopback port, with the test's namespace."""

    def __init__(self, target: str, log: Path, *options: str, env: dict[str, str],
                 prefix: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        self._log = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.log_path = log
        self.prefix = prefix  # a command gunicorn runs under (unshare: a PID namespace)
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", "gunicorn", "--workers", "2", "--bind",
             f"127.0.0.1:{self.port}", "--chdir", str(APPS), "--graceful-timeout", "30",
             "--no-control-socket",
             *options, target],
            env={**os.environ, **env}, stdout=self._log, stderr=self._log,
            preexec_fn=interruptible)

    def master(self) -> int | None:
        """The gunicorn master's pid (here; under a prefix, the prefix's one child)."""
        if not self.prefix:
            return self.proc.pid
        return min(_children(self.proc.pid), default=None)

    def workers(self) -> set[int]:
        """The worker processes' pids, as this test sees them (the master's children)."""
        master = self.master()
        return set() if master is None else _children(master)

    def request(self, method: str, path: str, body: object = None) -> tuple[int, bytes]:
        """One request on a connection of its own; a generous timeout for a busy machine
        (the first ones wait in the listen queue while the workers boot)."""
        payload = None if body is None else json.dumps(body).encode()
        status, _, answer = fetch(self.port, method, path, payload,
                                  {"Content-Type": "application/json"} if payload else None,
                                  timeout=60)
        return status, answer

    def stop(self) -> None:
        if self.proc.poll() is None:
            # The master, which a prefix (unshare --fork) waits for and ends with.
            os.kill(self.master() or self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def gunicorn(tmp_path: Path, namespace: str) -> Iterator[Callable[..., Gunicorn]]:
    started: list[Gunicorn] = []

    def start(target: str, *options: str, env: dict[str, str] | None = None,
              prefix: tuple[str, ...] = ()) -> Gunicorn:
        server = Gunicorn(target, tmp_path / f"gunicorn-{len(started)}.log", *options,
                          env={"AI_ANALYTICS_NAMESPACE": namespace, **(env or {})},
                          prefix=prefix)
        started.append(server)
        wait_for(lambda: server.proc.poll() is not None or len(server.workers()) == 2,
                 timeout=60, what="two gunicorn workers")
        assert server.proc.poll() is None, server.log()
        return server

    yield start
    for server in started:
        server.stop()


def lanes_by_pid(namespace: str) -> dict[int, int]:
    """How many lanes each process has (its writer's pid is in a lane's header). A lane still
    being made (its header not yet published) is not counted yet."""
    found: dict[int, int] = {}
    for name in lane_names(namespace):
        with open(os.path.join(SHM_DIR, name), "rb") as segment:
            raw = segment.read(L.HEADER_SIZE)
            size = os.fstat(segment.fileno()).st_size
        try:
            header = parse_header(name, lane_prefix(namespace), raw, size)
        except NotReady:
            continue
        found[header.pid] = found.get(header.pid, 0) + 1
    return found


def workload(server: Gunicorn, stream_path: str) -> tuple[dict[str, int], set[int]]:
    """Send the requests of each kind, concurrently, until both workers have served slow
    ones; return how many of each kind were sent and the pids that served."""
    sent = {"slow": 0}
    pids: set[int] = set()
    kinds: list[tuple[str, str, str, object, int]] = [
        ("embed-bge", "POST", "/v1/embed/alpha", {"model": "bge"}, 200),
        ("embed-bge", "POST", "/v1/embed/beta", {"model": "bge"}, 200),
        ("embed-e5", "POST", "/v1/embed/gamma", {"model": "e5"}, 200),
        ("stream", "GET", stream_path, None, 200),
        ("missing", "GET", "/no/such/route", None, 404),
        ("bad", "GET", "/v1/bad", None, 400),
        ("fail", "GET", "/v1/fail", None, 500),
    ] * 2
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        answers = list(pool.map(lambda k: (k, server.request(k[1], k[2], k[3])), kinds))
        for (kind, _, _, _, status), (got, body) in answers:
            assert got == status, (kind, got, body, server.log())
            sent[kind] = sent.get(kind, 0) + 1
            if kind == "stream":
                assert body == b"token\n" * 3
        deadline = time.monotonic() + 60
        while len(pids) < 2:  # until both workers have held a slow request
            assert time.monotonic() < deadline, f"one worker served everything: {pids}"
            for got, body in pool.map(lambda _: server.request("GET", "/v1/slow/200"),
                                      range(CONCURRENCY)):
                assert got == 200, (got, body)
                sent["slow"] += 1
                pids.add(json.loads(body)["pid"])
    return sent, pids


def reconcile(make_daemon: Callable[..., Any], sent: dict[str, int], model: str,
              templates: dict[str, str]) -> dict[tuple[str, str], Any]:
    """Drain every lane and check each (operation, model)'s count and errors exactly."""
    daemon = make_daemon()
    daemon.lanes.scan()
    daemon.drain()
    rows = {(row["operation"], row["model"]): row["windows"]["since_start"]
            for row in daemon.get_performance_snapshot()["operations"]}
    expected = {
        (templates["embed"], "bge"): (sent["embed-bge"], 0),
        (templates["embed"], "e5"): (sent["embed-e5"], 0),
        ("chat_stream", model): (sent["stream"], 0),
        ("unmatched 4xx", model): (sent["missing"], 0),
        ("GET /v1/bad 4xx", model): (sent["bad"], 0),
        ("GET /v1/fail", model): (sent["fail"], sent["fail"]),
        (templates["slow"], model): (sent["slow"], 0),
    }
    assert {key: (s["count"], s["errors"]) for key, s in rows.items()} == expected
    stream = rows[("chat_stream", model)]
    assert stream["ttft_ms"]["count"] == sent["stream"]
    assert stream["latency_ms"]["min"] >= 60.0  # three tokens 20 ms apart: to the last one
    assert stream["ttft_ms"]["max"] < stream["latency_ms"]["min"]
    return rows


FLASK = {"embed": "POST /v1/embed/<name>", "slow": "GET /v1/slow/<int:ms>"}


def test_flask_sync_workers_with_the_post_fork_hook(gunicorn, make_daemon, namespace):
    make_daemon()  # publishes the lanes' geometry before the workers make theirs
    server = gunicorn("flask_app:app", "-c", HOOK)
    workers = server.workers()
    # post_fork made each worker's lane before any request was sent.
    wait_for(lambda: set(lanes_by_pid(namespace)) == workers, timeout=60,
             what="a lane per worker, made by post_fork")
    sent, pids = workload(server, "/v1/chat/x/stream")
    assert pids == workers
    server.stop()
    assert lanes_by_pid(namespace) == dict.fromkeys(workers, 1)
    reconcile(make_daemon, sent, "flask-app", FLASK)


def test_flask_gevent_workers_share_one_lane_per_os_thread(gunicorn, make_daemon, namespace):
    make_daemon()
    server = gunicorn("flask_app:app", "--worker-class", "gevent")
    sent, pids = workload(server, "/v1/chat/x/stream")
    server.stop()
    # Many greenlets served concurrently in each worker, and each worker made one lane.
    assert lanes_by_pid(namespace) == dict.fromkeys(pids, 1)
    assert sum(sent.values()) > 2 * CONCURRENCY
    reconcile(make_daemon, sent, "flask-app", FLASK)


def test_django_under_gunicorn(gunicorn, make_daemon, namespace):
    make_daemon()
    server = gunicorn("django_wsgi:application", "-c", HOOK,
                      env={"DJANGO_SETTINGS_MODULE": "django_site"})
    sent, pids = workload(server, "/v1/chat/x/stream")
    assert pids == server.workers()
    server.stop()
    reconcile(make_daemon, sent, "django-app",
              {"embed": "POST /v1/embed/<str:name>", "slow": "GET /v1/slow/<int:ms>"})


PID_NAMESPACE = ("unshare", "--pid", "--fork", "--mount-proc", "--kill-child")


def test_flask_in_a_pid_namespace_of_its_own(gunicorn, make_daemon, namespace):
    """As in a container: the server's processes are pids 1, 2, 3 of their own PID
    namespace, the daemon is in another; the hook's lanes, the middleware's events and
    their exact count hold there."""
    refused = subprocess.run([*PID_NAMESPACE, "true"], capture_output=True, text=True,
                             check=False)
    if refused.returncode != 0:
        pytest.skip(f"cannot make PID namespaces here (needs root and unshare): "
                    f"{refused.stderr.strip()}")
    make_daemon()
    server = gunicorn("flask_app:app", "-c", HOOK, prefix=PID_NAMESPACE)
    sent, pids = workload(server, "/v1/chat/x/stream")
    outside = server.workers()
    assert pids.isdisjoint(outside)  # the app's own pids are its namespace's
    server.stop()
    assert lanes_by_pid(namespace) == dict.fromkeys(pids, 1)  # made by post_fork, one each
    reconcile(make_daemon, sent, "flask-app", FLASK)
