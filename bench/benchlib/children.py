"""A script's own child processes, spoken to by lines on their stdin and stdout.

Producers and scrapers run in processes of their own, so that their CPU time is theirs alone
and they load only what a real worker would. Each is the same script started again with a
hidden ``--child-...`` option; it says "ready" once set up, and the parent drives it with
short lines ("go", "stop", "exit") and reads its reports as lines back. Waiting for a line
always has a deadline, so a child that hangs fails the run instead of stalling it.
"""

from __future__ import annotations

import contextlib
import select
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from .proc import cpu_seconds

READY_TIMEOUT_S = 60.0  # start-up, imports included, on a loaded machine


class Child:
    """``python SCRIPT ARGS...`` with its stdin and stdout as text pipes (``stderr``: where
    its stderr goes, inherited by default)."""

    def __init__(self, script: Path, args: Sequence[str], env: Mapping[str, str],
                 stderr: int | None = None) -> None:
        self.role = list(args)
        self.proc = subprocess.Popen(
            [sys.executable, str(script), *args],
            env=dict(env), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
            text=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def line(self, timeout: float) -> str:
        """Its next line, stripped; RuntimeError if none comes within ``timeout`` seconds."""
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], max(0.0, timeout))
        text = self.proc.stdout.readline() if ready else ""
        if not text:
            raise RuntimeError(f"child {self.proc.pid} ({self.role}) said nothing "
                               f"within {timeout:g} s (exit code {self.proc.poll()})")
        return text.strip()

    def expect(self, word: str, timeout: float) -> None:
        """Its next line must be ``word``."""
        line = self.line(timeout)
        if line != word:
            raise RuntimeError(f"child {self.proc.pid} said {line!r}, expected {word!r}")

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)

    def close(self) -> None:
        """Tell it to exit (stdin closed too); one still busy (mid-run, it reads "exit" only
        at its end) is terminated, then killed. Reaped either way."""
        with contextlib.suppress(OSError, ValueError):
            self.send("exit")
        with contextlib.suppress(OSError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        for stop, wait in ((None, 2.0), (self.proc.terminate, 5.0), (self.proc.kill, None)):
            if stop is not None:
                stop()
            try:
                self.proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@contextlib.contextmanager
def ready_children(script: Path, roles: Sequence[Sequence[str]],
                   env: Mapping[str, str]) -> Iterator[list[Child]]:
    """One child per role (its arguments), each waited for until it says "ready"; every one
    is stopped and reaped at the end, on error too."""
    started: list[Child] = []
    try:
        for role in roles:
            started.append(Child(script, role, env))
        for child in started:
            child.expect("ready", READY_TIMEOUT_S)
        yield started
    except BaseException:
        for child in started:  # mid-run, a child reads "exit" only at its end: stop them all
            with contextlib.suppress(OSError):
                child.proc.terminate()
        raise
    finally:
        for child in started:
            child.close()
