"""The namespace lock: a running ai-analyticsd holds an exclusive flock on it, and the kernel
drops the lock when the daemon exits, however it exits. Whether a daemon runs is read here,
for the CLI and for ``get_performance_snapshot``."""

from __future__ import annotations

import dataclasses
import os

from ai_analytics.client._segments import DEFAULT_SEGMENT_DIR, lock_held, lock_path
from ai_analytics.core.proc_locks import flock_holder


@dataclasses.dataclass(frozen=True)
class LockView:
    """The namespace lock: held by a running daemon, and the pid it recorded."""

    present: bool
    held: bool
    holder_pid: int | None  # from /proc/locks, where visible
    recorded_pid: int | None  # what the daemon wrote into the file


def read_lock(namespace: str, segment_dir: str) -> LockView:
    """Who holds the namespace lock: /proc/locks first (passive), else a shared-lock probe."""
    path = lock_path(namespace, segment_dir)
    try:
        info = os.stat(path, follow_symlinks=False)
    except OSError:
        return LockView(False, False, None, None)
    recorded: int | None = None
    try:
        with open(path, "rb") as f:
            text = f.read(32).decode("ascii", "replace").strip()
        recorded = int(text) if text.isdigit() else None
    except OSError:
        pass
    holder = flock_holder(info)
    return LockView(True, holder is not None or lock_held(path), holder, recorded)


def daemon_running(namespace: str, segment_dir: str = DEFAULT_SEGMENT_DIR) -> bool:
    """True while some ai-analyticsd holds the namespace lock.

    Read from /proc/locks where the holder is visible, so looking takes no lock at all;
    otherwise a shared-lock probe, which fails at once against the daemon's exclusive lock."""
    return read_lock(namespace, segment_dir).held
