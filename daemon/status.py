"""What ``ai-analytics status`` shows: the daemon's last state, and whether it still runs.

Kept apart from the CLI so it can be called and tested without a terminal.
"""

from __future__ import annotations

import dataclasses
import fcntl
import os

from ai_analytics.client._segments import SHM_DIR

from .config import Config
from .state import read_state


def daemon_running(namespace: str) -> bool:
    """True while some ai-analyticsd holds the namespace lock (the kernel drops it on exit)."""
    path = os.path.join(SHM_DIR, f"{namespace}.daemon.lock")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


@dataclasses.dataclass
class StatusReport:
    running: bool
    document: dict[str, object] | None


def load_status(config: Config) -> StatusReport:
    """The last state document of the configured daemon, with ``daemon.running`` made true."""
    document = read_state(config.state_dir)
    running = daemon_running(config.namespace)
    if document is not None:
        daemon = document.setdefault("daemon", {})
        assert isinstance(daemon, dict)
        daemon["running"] = running
    return StatusReport(running, document)


def get_performance_snapshot(config: Config | None = None) -> dict[str, object] | None:
    """The latest snapshot of the daemon that ``config`` describes (defaults: the built-in
    config and $AI_ANALYTICS_NAMESPACE), or None if it has never written one. Inside the
    daemon's own process, ``Daemon.get_performance_snapshot()`` computes it afresh."""
    return load_status(config or Config()).document


def render_text(document: dict[str, object]) -> str:
    """A short human summary; the full operator view is a later addition."""
    events = document["events"]
    daemon = document["daemon"]
    summary = document["lanes_summary"]
    assert isinstance(events, dict) and isinstance(daemon, dict) and isinstance(summary, dict)
    state = "running" if daemon.get("running") else "NOT RUNNING (last state shown)"
    lines = [
        f"ai-analyticsd {state}: namespace {document['namespace']}, pid {daemon['pid']}, "
        f"state written {document['written_at']}",
        "events: " + ", ".join(f"{k} {v}" for k, v in events.items()),
        "lanes: " + ", ".join(f"{k} {v}" for k, v in summary.items()),
    ]
    operations = document.get("operations") or []
    assert isinstance(operations, list)
    if operations:
        width = max(len(str(row["operation"])) for row in operations)
        lines.append(f"{'operation':<{width}}  {'model':<24} {'count':>12}")
        for row in operations:
            model = row["model"] or "-"
            lines.append(f"{row['operation']:<{width}}  {model:<24} {row['count']:>12}")
    return "\n".join(lines)
