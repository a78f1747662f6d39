"""Shared test helpers: a real daemon process, producer processes, namespace cleanup."""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

SHM_DIR = "/dev/shm"


def shm_names(namespace: str) -> list[str]:
    """The segments and files of ``namespace`` in /dev/shm."""
    return sorted(n for n in os.listdir(SHM_DIR) if n.startswith(f"{namespace}."))


def lane_names(namespace: str) -> list[str]:
    return [n for n in shm_names(namespace) if n.startswith(f"{namespace}.lane.")]


def remove_namespace(namespace: str) -> None:
    for name in shm_names(namespace):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(SHM_DIR, name))


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def write_config(path: Path, **settings: object) -> Path:
    """Write a config.yaml from keyword settings (values rendered as YAML via json)."""
    path.write_text("".join(f"{key}: {json.dumps(value)}\n" for key, value in settings.items()))
    return path


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.02, what: str = "condition"):
    """Poll ``predicate`` until it returns a truthy value; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class DaemonProcess:
    """A real ``ai-analyticsd`` in a subprocess, always reaped. ``env``: variables added to
    its environment (e.g. systemd's NOTIFY_SOCKET); ``segment_dir``: the config's; ``wrap``:
    a command that runs it (``unshare ... --fork`` for a PID namespace of its own, whose
    forked child is the daemon: signals go to that child, which unshare does not forward)."""

    def __init__(self, config_path: Path, state_dir: Path, namespace: str, *,
                 env: dict[str, str] | None = None, segment_dir: str = SHM_DIR,
                 wrap: list[str] | None = None) -> None:
        self.config_path = config_path
        self.segment_dir = segment_dir
        self.state_dir = state_dir
        self.namespace = namespace
        self.env = dict(env or {})
        self.wrap = list(wrap or [])
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = config_path.with_suffix(".log")

    def start(self) -> DaemonProcess:
        env = {**os.environ, "AI_ANALYTICS_NAMESPACE": self.namespace, **self.env}
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in reap()
        self.proc = subprocess.Popen(
            [*self.wrap, sys.executable, "-m", "ai_analytics.daemon", "--config",
             str(self.config_path)],
            env=env, stderr=self._log, stdout=self._log,
        )
        # Ready for producers once the lanes' geometry is published: a lane made before then
        # gets the defaults, not this config's max_queue_size.
        wait_for(lambda: self._ready() or self.proc.poll() is not None, what="daemon start")
        assert self.proc.poll() is None, f"daemon exited at start:\n{self.log()}"
        return self

    def _ready(self) -> bool:
        from ai_analytics.client._segments import control_name

        published = os.path.exists(os.path.join(self.segment_dir, control_name(self.namespace)))
        return self._lock_held() and (published or b"cannot publish the control" in
                                      self.log_path.read_bytes())

    @property
    def pid(self) -> int:
        """The daemon's pid here: the wrapper's forked child where ``wrap`` forks."""
        assert self.proc is not None
        if "--fork" not in self.wrap:
            return self.proc.pid
        import psutil

        return wait_for(lambda: [c.pid for c in psutil.Process(self.proc.pid).children()],
                        what="the wrapped daemon")[0]

    def _lock_held(self) -> bool:
        from ai_analytics.core.namespace_lock import daemon_running

        return daemon_running(self.namespace, self.segment_dir)

    def state(self) -> dict:
        return json.loads((self.state_dir / "state.json").read_text())

    def state_after(self, predicate, timeout: float = 10.0, what: str = "state",
                    fresh: bool = True) -> dict:
        """Wait for a state file written after now that satisfies ``predicate``. ``fresh``
        False: any state file that satisfies it (for a daemon whose wall clock is not ours)."""
        since = time.time() if fresh else -math.inf

        def fresh_enough() -> dict | None:
            try:
                doc = self.state()
            except (FileNotFoundError, ValueError):
                return None
            return doc if doc["written_unix"] >= since and predicate(doc) else None

        return wait_for(fresh_enough, timeout, what=what)

    def stop(self, timeout: float = 15.0) -> int:
        assert self.proc is not None
        os.kill(self.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self.reap()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()
        self.reap()

    def reap(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if getattr(self, "_log", None) is not None:
            self._log.close()
            self._log = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def run_python(code: str, namespace: str, timeout: float = 60.0, check: bool = True,
               **popen: object) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter with the test's namespace; return its result."""
    env = {**os.environ, "AI_ANALYTICS_NAMESPACE": namespace, "PYTHONWARNINGS": "error"}
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
        timeout=timeout, **popen,
    )
    if check:
        assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def start_python(code: str, namespace: str, **popen: object) -> subprocess.Popen[str]:
    """Start ``code`` in a fresh interpreter with the test's namespace (caller must wait)."""
    env = {**os.environ, "AI_ANALYTICS_NAMESPACE": namespace, "PYTHONWARNINGS": "error"}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)], env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, **popen,
    )


def http_get(port: int, path: str) -> tuple[int, bytes]:
    """GET ``path`` from the loopback server on ``port``: status code and body, errors too."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def http_status(port: int) -> dict | None:
    """The daemon's /status document (served from memory), None while it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5) as response:
            return json.loads(response.read())
    except (OSError, ValueError):
        return None


def events_total(state: dict) -> int:
    """Sum of the outcome counters: every emit call made in the namespace."""
    return sum(state["events"].values())


# Emits about 4000 events/s until the file {stop!r} exists (at most two minutes); prints how
# many emit calls it made, whatever they returned.
EMITTER = """
import json, os, time
from ai_analytics import client
sent = 0
deadline = time.monotonic() + 120
while not os.path.exists({stop!r}) and time.monotonic() < deadline:
    for _ in range(20):
        client.emit("steady", 2.0, model="m")
        sent += 1
    time.sleep(0.005)
print(json.dumps(sent))
"""


class Emitters:
    """Producer processes that emit steadily until ``finish``; ``reap`` kills what is left."""

    def __init__(self, namespace: str, stop: Path, count: int = 2) -> None:
        self.stop = stop
        self.procs = [start_python(EMITTER.format(stop=str(stop)), namespace)
                      for _ in range(count)]

    def finish(self) -> int:
        """Stop them; the number of emit calls they made."""
        self.stop.touch()
        emitted = 0
        for proc in self.procs:
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0 and err == "", err
            emitted += json.loads(out)
        return emitted

    def reap(self) -> None:
        self.stop.touch()
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
