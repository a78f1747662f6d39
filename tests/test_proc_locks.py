"""/proc/locks as the daemon reads it: who holds an exclusive flock on which file."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
from pathlib import Path

from ai_analytics.core.proc_locks import flock_holder, flock_holders

from helpers import wait_for

SAMPLE = """\
1: FLOCK  ADVISORY  WRITE 3696 00:1a:12345 0 EOF
1: -> FLOCK  ADVISORY  WRITE 4000 00:1a:12345 0 EOF
2: FLOCK  ADVISORY  READ  3697 00:1a:12346 0 EOF
3: POSIX  ADVISORY  WRITE 3698 00:1a:12347 0 EOF
4: OFDLCK ADVISORY  WRITE -1 00:1a:12348 0 EOF
5: FLOCK  ADVISORY  WRITE 0 00:1a:12349 0 EOF
6: FLOCK  ADVISORY  WRITE 3700 fd:01:77 0 EOF
7: garbage
"""


def test_only_exclusive_flocks_of_visible_holders_count(tmp_path: Path) -> None:
    """Exclusive flocks map (device, inode) to the holder's pid; waiters ("->"), shared
    flocks, POSIX and OFD locks, and holders outside our PID namespace (pid 0) do not."""
    locks = tmp_path / "locks"
    locks.write_text(SAMPLE)
    assert flock_holders(str(locks)) == {
        (os.makedev(0x00, 0x1a), 12345): 3696, (os.makedev(0xfd, 0x01), 77): 3700}
    assert flock_holders(str(tmp_path / "missing")) == {}


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
