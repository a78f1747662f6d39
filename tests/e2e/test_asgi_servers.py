"""The ASGI middleware under real servers with two worker processes: tests/apps/fastapi_app.py
served by uvicorn and by gunicorn with uvicorn's worker class, a real daemon, a real HTTP
client; every request the client sent is counted by the daemon, exactly, per series."""

from __future__ import annotations

import collections
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from helpers import TESTS, fetch, free_port, interruptible, wait_for

APPS = TESTS / "apps"
Key = tuple[str, str]  # (operation, model)


def request(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    # A generous timeout: on a busy machine a worker may take seconds to start accepting.
    status, _, answer = fetch(port, method, path, body,
                              {"Content-Type": "application/json"} if body else None, timeout=60)
    return status, answer


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def server(namespace: str, tmp_path: Path
           ) -> Iterator[Callable[[list[str]], tuple[int, subprocess.Popen[bytes]]]]:
    """Start a server command (``{port}`` in it is a free port) in this test's namespace;
    return its port, once it listens, and its process. Stopped at the end if still running."""
    started: list[subprocess.Popen[bytes]] = []

    def start(command: list[str]) -> tuple[int, subprocess.Popen[bytes]]:
        port = free_port()
        log = open(tmp_path / f"server-{len(started)}.log", "wb")  # noqa: SIM115 - the child's
        proc = subprocess.Popen([part.format(port=port) for part in command], cwd=APPS,
                                env={**os.environ, "AI_ANALYTICS_NAMESPACE": namespace},
                                stdout=log, stderr=log, preexec_fn=interruptible)
        log.close()
        started.append(proc)
        wait_for(lambda: listening(port) or proc.poll() is not None, timeout=60,
                 what="the server to listen")
        assert proc.poll() is None, (tmp_path / f"server-{len(started) - 1}.log").read_text()
        return port, proc

    yield start
    for proc in started:
        stop(proc)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, as a supervisor stops it: the workers finish their requests and exit."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def send_workload(port: int) -> collections.Counter[Key]:
    """Every kind of request, concurrently (so that both workers serve); what the daemon must
    count for them, per (operation, model), and the number of failures as ("errors", "")."""
    expected: collections.Counter[Key] = collections.Counter()
    calls: list[tuple[str, str, bytes | None, int, Key]] = []
    for i in range(20):
        calls.append(("POST", f"/v1/embed/doc-{i}", json.dumps({"model": f"bge-{i % 2}"})
                      .encode(), 200, ("POST /v1/embed/{name}", f"bge-{i % 2}")))
        calls.append(("GET", f"/v1/items/{i}", None, 200,
                      ("GET /v1/items/{item_id}", "default-model")))
    for i in range(6):
        calls.append(("GET", f"/v1/items/{1000 + i}", None, 404,
                      ("GET /v1/items/{item_id} 4xx", "default-model")))
        calls.append(("GET", f"/no/such/path/{i}", None, 404, ("unmatched 4xx", "default-model")))
    for _ in range(4):
        calls.append(("GET", "/v1/fail", None, 500, ("GET /v1/fail", "default-model")))
        calls.append(("GET", "/v1/unavailable", None, 503,
                      ("GET /v1/unavailable", "default-model")))
    for i in range(10):
        calls.append(("GET", f"/v1/stream/m{i}", None, 200,
                      ("GET /v1/stream/{model}", "default-model")))

    def one(call: tuple[str, str, bytes | None, int, Key]) -> None:
        method, path, body, status, _ = call
        got, answer = request(port, method, path, body)
        assert got == status, (method, path, got, answer)
        if "/stream/" in path:
            assert answer.count(b"data: ") == 4 and answer.endswith(b"data: [DONE]\n\n")

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(one, calls))
        # Ask who serves until both workers have (the kernel hands connections to either).
        pids: collections.Counter[int] = collections.Counter()

        def whoami(_: int) -> int:
            status, answer = request(port, "GET", "/v1/whoami")
            assert status == 200
            return json.loads(answer)["pid"]

        wait_for(lambda: pids.update(pool.map(whoami, range(16))) or len(pids) >= 2,
                 timeout=120, interval=0, what="both workers to serve")
    assert len(pids) == 2, pids
    for call in calls:
        expected[call[4]] += 1
    for pid, served in pids.items():
        expected[("GET /v1/whoami", f"pid-{pid}")] += served
    expected[("errors", "")] = 8  # /v1/fail raises, /v1/unavailable answers 503
    return expected


def reconcile(state: dict, expected: collections.Counter[Key]) -> None:
    counted = {(row["operation"], row["model"]): row["windows"]["since_start"]["count"]
               for row in state["operations"]}
    errors = sum(row["windows"]["since_start"]["errors"] for row in state["operations"])
    assert {**counted, ("errors", ""): errors} == dict(expected)
    assert state["events"]["received"] == sum(counted.values())
    assert state["events"]["dropped"] == 0 and state["events"]["invalid"] == 0
    # Two processes served: each worker's pid is a model with its own count.
    assert len([key for key in counted if key[1].startswith("pid-")]) == 2
    streams = next(row for row in state["operations"]
                   if row["operation"] == "GET /v1/stream/{model}")
    assert streams["windows"]["since_start"]["ttft_ms"]["count"] == 10


SERVERS = {
    "uvicorn": [sys.executable, "-m", "uvicorn", "fastapi_app:app", "--workers", "2",
                "--host", "127.0.0.1", "--port", "{port}", "--log-level", "warning"],
    # uvicorn.workers is deprecated in favour of the uvicorn-worker package, and still there.
    "gunicorn": [sys.executable, "-m", "gunicorn", "--workers", "2", "--worker-class",
                 "uvicorn.workers.UvicornWorker", "--bind", "127.0.0.1:{port}",
                 "--log-level", "warning", "fastapi_app:app"],
}


@pytest.mark.parametrize("name", sorted(SERVERS))
def test_fastapi_with_two_workers_reconciles_exactly(name, daemon_factory, server):
    daemon = daemon_factory()
    port, proc = server(SERVERS[name])
    expected = send_workload(port)
    # A request's event is recorded just after its last chunk went to the server: once the
    # server has stopped, every one is in a lane, and the daemon drains them all as it stops.
    stop(proc)
    assert proc.returncode == 0
    assert daemon.stop() == 0
    reconcile(daemon.state(), expected)
