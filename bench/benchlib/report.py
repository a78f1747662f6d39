"""Where a run was taken and how it is written down.

Every results file starts with the same facts (``RunStart.header``): the date, the command as
typed, the machine and its load, and the commit measured with any local change in client/ or
daemon/, so that two runs can be told apart and compared.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine(**extra: Any) -> dict[str, Any]:
    """The machine and its load right now; ``extra`` adds versions a script depends on."""
    return {
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "python_build": sys.version,
        "implementation": platform.python_implementation(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "loadavg": list(os.getloadavg()),
        **extra,
    }


def source_state() -> dict[str, Any]:
    """The commit measured, and whether client/ or daemon/ differed from it."""

    def git(*args: str) -> str:
        try:
            done = subprocess.run(
                ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.SubprocessError):
            return ""
        return done.stdout.rstrip() if done.returncode == 0 else ""

    changed = git("status", "--porcelain", "--", "client", "daemon")
    return {
        "commit": git("rev-parse", "HEAD") or "unknown",
        "modified": [line[3:] for line in changed.splitlines()],
    }


class RunStart:
    """The facts taken as a run starts (the machine and its load, the source measured);
    ``header()`` adds those of its end, for the top of the results file."""

    def __init__(self, **machine_extra: Any) -> None:
        self.machine = machine(**machine_extra)
        self.source = source_state()

    def header(self) -> dict[str, Any]:
        """What every results file starts with: when, how, where, and from which source."""
        return {
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "command": shlex.join(getattr(sys, "orig_argv", [sys.executable, *sys.argv])),
            "machine": self.machine,
            "source": self.source,
            "loadavg_after": list(os.getloadavg()),
        }


def header_lines(title: str, report: dict[str, Any]) -> list[str]:
    """The markdown opening of a results file made from ``RunStart.header``'s fields."""
    m, src = report["machine"], report["source"]
    modified = f" (modified: {', '.join(src['modified'])})" if src["modified"] else ""
    return [
        f"# {title}",
        "",
        f"- date: {report['date']}",
        f"- machine: {m['cpu_model']}, {m['cpu_count']} CPUs, {m['platform']}, "
        f"Python {m['python']}; load average before {m['loadavg']}, "
        f"after {report['loadavg_after']}",
        f"- command: `{report['command']}`",
        f"- commit: {src['commit']}{modified}",
    ]


def source_line(source: dict[str, Any]) -> str:
    """``commit 1234abcd5678, with local changes in ...``: the short form of the source."""
    changes = source["modified"]
    return f"commit {source['commit'][:12]}" + (
        f", with local changes in {', '.join(changes)}" if changes else ""
    )


def write_results(report: dict[str, Any], json_path: Path, md_path: Path, text: str) -> None:
    """The run as JSON and as markdown, folders made as needed; says where."""
    for path, content in ((json_path, json.dumps(report, indent=2) + "\n"), (md_path, text)):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
    print(f"\nwrote {json_path} and {md_path}")


def target_lines(targets: list[dict[str, Any]]) -> str:
    """``PASS  target  (value)`` lines; targets are reported, they never fail a script."""
    return "\n".join(
        f"{'PASS' if t['pass'] else 'FAIL'}  {t['target']}  ({t['value']})" for t in targets
    )


def progress(quiet: bool, started: float | None = None) -> Callable[[str], None]:
    """A function that prints a progress line to stderr (nothing when ``quiet``), prefixed
    with the seconds since ``started`` (a ``time.monotonic()``) when one is given."""

    def log(line: str) -> None:
        if quiet:
            return
        if started is not None:
            line = f"[{time.monotonic() - started:6.1f} s] {line}"
        print(line, file=sys.stderr, flush=True)

    return log


def exit_on_sigterm() -> None:
    """SIGTERM raises SystemExit, which unwinds through the finally blocks that clean up
    (children, segments, temporary directories) instead of killing the script where it is."""
    signal.signal(signal.SIGTERM, _terminate)


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


_interrupted = False


def note_interrupts() -> None:
    """Ctrl-C raises KeyboardInterrupt as usual and is also remembered: one that lands while
    the interpreter runs a finalizer (``__del__``, a weakref callback) is printed and
    swallowed there, and the run would go on to write results as if whole."""
    signal.signal(signal.SIGINT, _interrupt)


def _interrupt(signum: int, frame: object) -> None:
    global _interrupted
    _interrupted = True
    raise KeyboardInterrupt


def raise_if_interrupted() -> None:
    """Before writing results: an interrupted run writes none."""
    if _interrupted:
        raise KeyboardInterrupt
