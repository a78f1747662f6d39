"""``ai-analytics demo``: a daemon plus simulated workers in a private namespace."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

import click

from ai_analytics.cli.status import page_line, render_text
from ai_analytics.cli.tables import terminal_width
from ai_analytics.client._segments import segment_dir_from_env
from ai_analytics.core.config import Config, config_from_mapping
from ai_analytics.core.state import load_status

START_TIMEOUT_SECONDS = 15.0
REFRESH_SECONDS = 2.0
WORKER_STOP_SECONDS = 10.0  # a worker ends its burst (3 s at most) and prints its count
CLEAR = "\x1b[H\x1b[2J"  # cursor home, clear screen
DEMO_LANE_RECORDS = 1024  # the demo daemon's max_queue_size (see run_demo)


def run_demo(duration: float, workers: int, rate: int) -> int:
    namespace = f"demo-{os.getpid()}"
    with tempfile.TemporaryDirectory(prefix="ai-analytics-demo-") as state_dir:
        # The workers inherit $AI_ANALYTICS_SEGMENT_DIR: the daemon looks where they write.
        settings = {"namespace": namespace, "state_dir": state_dir,
                    "segment_dir": segment_dir_from_env(),
                    "batch_timeout_seconds": 0.5, "snapshot_interval_seconds": 1.0,
                    # Small lanes: worker 0's burst (one thread emitting flat out) must
                    # overfill its lane for the event_loss finding to show, and the daemon
                    # drains a default 8,192-record lane about as fast as one thread fills it.
                    "max_queue_size": DEMO_LANE_RECORDS,
                    "http_host": "127.0.0.1", "http_port": _http_port()}
        config = config_from_mapping(settings)
        path = os.path.join(state_dir, "config.yaml")
        with open(path, "w", encoding="utf-8") as f:
            f.writelines(f"{key}: {json.dumps(value)}\n" for key, value in settings.items())
        env = {**os.environ, "AI_ANALYTICS_NAMESPACE": namespace}
        log_path = os.path.join(state_dir, "daemon.log")
        with open(log_path, "wb") as log_file:  # the daemon's log, shown if something fails
            # This interpreter and our own module, as an argument list: no shell, no user text.
            daemon = subprocess.Popen(  # noqa: S603
                [sys.executable, "-m", "ai_analytics.daemon", "--config", path], env=env,
                # Not the demo's stdout: a caller reading it to the end must not wait for
                # the daemon.
                stdout=log_file, stderr=log_file, start_new_session=True,
            )
        procs: list[subprocess.Popen[str]] = []
        try:
            if not _wait_for_state(config, daemon):
                click.echo(f"demo: the daemon did not start:\n{_tail(log_path)}", err=True)
                return 1
            click.echo(f"demo: daemon pid {daemon.pid}, {workers} workers x {rate} events/s "
                       f"for {duration:g} s in namespace {namespace} (Ctrl-C stops)")
            click.echo(f"demo: in another terminal: ai-analytics status --config {path} "
                       "(or: lanes, history --since 5m, status --json)")
            click.echo(f"demo: live {page_line(config)} (open it in a browser)")
            procs = [
                subprocess.Popen(  # noqa: S603 (this interpreter, our module, numbers)
                    [sys.executable, "-m", "ai_analytics.cli.demo_worker", str(duration),
                     str(rate), str(seed)], env=env, stdout=subprocess.PIPE, text=True,
                    start_new_session=True,  # Ctrl-C reaches the demo only: it stops them in order
                )
                for seed in range(workers)
            ]
            _watch(config, procs)
        except KeyboardInterrupt:
            click.echo("\ndemo: stopping")
        finally:
            try:
                emitted = _stop_workers(procs)
            finally:
                daemon.send_signal(signal.SIGTERM)
                try:
                    daemon.wait(timeout=config.stop_timeout_seconds + 5)
                except subprocess.TimeoutExpired:
                    daemon.kill()
                    daemon.wait()
                _remove_namespace_files(namespace)
        report = load_status(config)
        if report.document is None or daemon.returncode != 0:
            click.echo(f"demo: the daemon failed (exit {daemon.returncode}):\n{_tail(log_path)}",
                       err=True)
            return 1
        click.echo(render_text(report.document, width=terminal_width()))
        if emitted is None:
            click.echo("reconciliation: not possible, a worker did not stop within "
                       f"{WORKER_STOP_SECONDS:g} s and was killed before it said how many "
                       "events it emitted", err=True)
            return 1
        events = report.document["events"]
        accounted = sum(count for count in events.values() if isinstance(count, int))
        click.echo(f"reconciliation: workers emitted {emitted}, the daemon accounts for "
                   f"{accounted} ({'exact' if accounted == emitted else 'MISMATCH'})")
        return 0 if accounted == emitted else 1


def _http_port() -> int:
    """The default port when it is free (the URL the docs show), else one the kernel picks
    as free: a daemon already running here keeps its port, and the demo still starts."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", Config.http_port))
        except OSError:
            probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _tail(path: str, lines: int = 20) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        return "".join(f.readlines()[-lines:])


def _wait_for_state(config, daemon: subprocess.Popen) -> bool:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline and daemon.poll() is None:
        if load_status(config).document is not None:
            return True
        time.sleep(0.1)
    return False


def _watch(config, procs: list[subprocess.Popen[str]]) -> None:
    """The live status: on a terminal the full view, redrawn; piped, one line a second."""
    interactive = sys.stdout.isatty()
    last = None
    while any(p.poll() is None for p in procs):
        time.sleep(REFRESH_SECONDS if interactive else 1.0)
        document = load_status(config).document
        if document is None:
            continue
        if interactive:
            click.echo(CLEAR + render_text(document, width=terminal_width())
                       + "\n\ndemo running · Ctrl-C stops it")
            continue
        events = document["events"]
        received = events["received"]
        speed = "" if last is None else f" ({received - last:,}/s)"
        last = received
        findings = ", ".join(f"{f['kind']} {f['subject']['name']}" for f in document["findings"])
        click.echo(f"received {received:,}{speed}  dropped {events['dropped']:,}  "
                   f"findings: {findings or 'none'}")


def _stop_workers(procs: list[subprocess.Popen[str]]) -> int | None:
    """Stop the workers; the events they emitted in all, or None if one had to be killed."""
    emitted: int | None = 0
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=WORKER_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            emitted = None
            continue
        if emitted is not None:
            emitted += int(out.strip() or 0)
    return emitted


def _remove_namespace_files(namespace: str) -> None:
    directory = segment_dir_from_env()
    for name in os.listdir(directory):
        if name.startswith(f"{namespace}."):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(directory, name))
