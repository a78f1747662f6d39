"""Who holds which flock, from /proc/locks: pids as the reader's PID namespace sees them.

The kernel translates each lock owner's pid into the namespace of the process reading the
file, and leaves out (or shows as 0) owners it cannot see there. So a daemon on the host sees
the host pid of a worker in a container, and a daemon in a container of its own sees none of
the workers outside it: reading this never needs, nor gets, more than the PID namespace gives.
"""

from __future__ import annotations

import os

PROC_LOCKS = "/proc/locks"


def flock_holders(locks_path: str = PROC_LOCKS) -> dict[tuple[int, int], int]:
    """(st_dev, st_ino) of every file with an exclusive flock held by a visible process, to
    that process's pid; empty when /proc/locks cannot be read."""
    try:
        with open(locks_path, encoding="ascii", errors="replace") as f:
            lines = f.readlines()
    except OSError:
        return {}
    holders: dict[tuple[int, int], int] = {}
    for line in lines:
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 3696 00:1a:12345 0 EOF"; waiters have "->" after the id.
        if len(fields) < 6 or fields[1] != "FLOCK" or fields[3] != "WRITE":
            continue
        device = fields[5].split(":")
        if len(device) != 3 or not fields[4].isdigit() or int(fields[4]) <= 0:
            continue
        try:
            key = (os.makedev(int(device[0], 16), int(device[1], 16)), int(device[2]))
        except ValueError:
            continue
        holders.setdefault(key, int(fields[4]))
    return holders


def flock_holder(info: os.stat_result, locks_path: str = PROC_LOCKS) -> int | None:
    """The pid holding an exclusive flock on the file ``info`` describes, None when no such
    lock is listed or its holder is outside our PID namespace."""
    return flock_holders(locks_path).get((info.st_dev, info.st_ino))
