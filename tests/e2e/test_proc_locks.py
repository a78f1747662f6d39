"""/proc/locks as the daemon reads it, with a real process holding the lock."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
from pathlib import Path

from ai_analytics.core.proc_locks import flock_holder

from helpers import wait_for


def test_a_real_holder_is_found_by_its_file(tmp_path: Path) -> None:
    """A real process holding an exclusive flock is named by the real /proc/locks; once it
    lets go, nobody is."""
    path = tmp_path / "held"
    path.touch()
    # -o: the sleep it runs does not inherit the lock, which then goes with flock itself.
    holder = subprocess.Popen(["flock", "-o", "-x", str(path), "sleep", "60"],
                              start_new_session=True)
    try:
        wait_for(lambda: flock_holder(os.stat(path)) is not None, what="the lock taken")
        assert flock_holder(os.stat(path)) == holder.pid
        with open(path) as f:
            try:
                fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
                raise AssertionError("the lock is not held")
            except BlockingIOError:
                pass
    finally:
        os.killpg(holder.pid, signal.SIGKILL)  # flock and its sleep
        holder.wait()
    assert flock_holder(os.stat(path)) is None
