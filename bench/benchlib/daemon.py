"""A real ``ai-analyticsd`` in a subprocess, and waiting for conditions with a deadline.

The benchmarks that measure the daemon as deployed (``endtoend``, ``soak``, the daemon case
of ``aggregate_bench``) run ``python -m ai_analytics.daemon`` with a config of their own: a
private namespace, a temporary ``state_dir``, HTTP on a free loopback port, every other
setting at its default unless the script says otherwise. Whatever happens, the process is
reaped and the namespace's segments are removed (``close``, or the ``with`` block's end).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from ai_analytics.client._segments import NAMESPACE_ENV

from .lanes import SHM_DIR, remove_segments

T = TypeVar("T")
STOP_TIMEOUT_S = 20.0  # SIGTERM to exit: the final drain and the last state file


def wait_for(predicate: Callable[[], T | None], timeout: float, what: str,
             interval: float = 0.02) -> T:
    """Poll ``predicate`` until it returns something true, and return that; TimeoutError
    naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def events_total(state: dict[str, Any]) -> int:
    """Sum of a state file's outcome counters: every emit call made in the namespace."""
    return sum(state["events"].values())


class DaemonProcess:
    """``ai-analyticsd`` for ``namespace``, its files in ``directory``: ``daemon.yaml`` (the
    config: ``settings`` over the namespace, ``directory/state`` as ``state_dir`` and a free
    HTTP port), ``daemon.log`` (its output) and the state directory."""

    def __init__(self, directory: Path, namespace: str, **settings: object) -> None:
        self.namespace = namespace
        self.config_path = directory / "daemon.yaml"
        self.log_path = directory / "daemon.log"
        config: dict[str, object] = {
            "namespace": namespace,
            "state_dir": str(directory / "state"),
            "http_port": free_port(),
            **settings,
        }
        self.state_dir = Path(str(config["state_dir"]))
        self.http_port = int(str(config["http_port"]))
        self.config_path.write_text(
            "".join(f"{key}: {json.dumps(value)}\n" for key, value in config.items()),
            encoding="utf-8",
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> DaemonProcess:
        """Start it; return once it has published its control segment (lanes created from
        then on take its geometry)."""
        env = {**os.environ, NAMESPACE_ENV: self.namespace}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ai_analytics.daemon", "--config", str(self.config_path)],
                env=env, stdout=log, stderr=log,
            )
        control = os.path.join(SHM_DIR, f"{self.namespace}.control")
        self.wait_for(lambda: os.path.exists(control), 30.0, "the daemon's control segment")
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_for(self, predicate: Callable[[], T | None], timeout: float, what: str) -> T:
        """``wait_for``, but a daemon that exits meanwhile fails it at once, with its log."""

        def check() -> T | None:
            value = predicate()
            if not value and self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"the daemon exited ({self.proc.returncode}) while waiting "
                                   f"for {what}: {self.log()[-2000:]}")
            return value

        return wait_for(check, timeout, what)

    def state(self) -> dict[str, Any] | None:
        """The last state file, None before the first (each is renamed into place whole)."""
        try:
            doc: dict[str, Any] = json.loads(
                (self.state_dir / "state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return doc

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM; its exit code once it has exited. Killed if it takes longer than
        ``timeout`` (and subprocess.TimeoutExpired raised)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()

    def log(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def close(self) -> None:
        """Stop it if it still runs, and remove the namespace's segments."""
        try:
            if self.running():
                with contextlib.suppress(subprocess.TimeoutExpired):  # then it was killed
                    self.stop()
        finally:
            remove_segments(self.namespace)

    def __enter__(self) -> DaemonProcess:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()
