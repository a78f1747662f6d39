"""Another process's memory and CPU time, as the kernel keeps them (Linux)."""

from __future__ import annotations

import time

import psutil

MEMORY_FIELDS = ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem")


def proc_status(pid: int) -> dict[str, int]:
    """The memory lines of /proc/<pid>/status (``MEMORY_FIELDS``), in kB."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in MEMORY_FIELDS:
                out[key] = int(value.split()[0])
    return out


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of every thread of ``pid``, ended ones included, plus that of
    its children it has waited for (the daemon computes each snapshot's statistics in a
    child). Its own is the process CPU clock that clock_getcpuclockid(3) gives for it, read
    to the nanosecond (the utime and stime of /proc/PID/stat are the same time in 10 ms
    ticks, too coarse for short runs); the children's is the kernel's count, in those ticks
    (a child's run of a few hundred ms is counted within one tick)."""
    own = time.clock_gettime(((~pid) << 3) | 2)  # MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED)
    return own + children_cpu_seconds(pid)


def children_cpu_seconds(pid: int) -> float:
    """The CPU of the children ``pid`` has waited for (user + system)."""
    cpu = psutil.Process(pid).cpu_times()
    return cpu.children_user + cpu.children_system
