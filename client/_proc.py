"""Process identity from /proc: a pid plus its start time survives pid reuse."""

from __future__ import annotations


def read_stat(pid: int) -> tuple[str, int] | None:
    """Return (state letter, start time in clock ticks) of ``pid``, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ")".
    fields = raw[raw.rfind(b")") + 2 :].split()
    try:
        return fields[0].decode("ascii", "replace"), int(fields[19])
    except (IndexError, ValueError):
        return None


def start_ticks(pid: int) -> int:
    """Start time of ``pid`` in clock ticks since boot, 0 when unknown."""
    stat = read_stat(pid)
    return stat[1] if stat else 0


def is_alive(pid: int, expected_start_ticks: int) -> bool:
    """True when ``pid`` runs, is not a zombie, and is the process that started then."""
    stat = read_stat(pid)
    if stat is None:
        return False
    state, ticks = stat
    if state in ("Z", "X"):
        return False
    return expected_start_ticks == 0 or ticks == expected_start_ticks
