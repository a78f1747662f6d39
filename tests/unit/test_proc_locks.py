"""/proc/locks as the daemon reads it: who holds an exclusive flock on which file."""

from __future__ import annotations

import os
from pathlib import Path

from ai_analytics.core.proc_locks import flock_holders

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


