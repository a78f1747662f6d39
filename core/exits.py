"""Exit statuses of the two programs, each value with one meaning per program.

``ai-analyticsd`` speaks to systemd and container runtimes, which restart on failure: it
keeps to 0-2, because systemd gives 3-7 meanings of its own (4 is NOPERMISSION).
``ai-analytics`` speaks to scripts and monitoring checks: its values follow the LSB
``status`` convention (0 running, 3 not running, 4 unknown), with 1 for "running, but look".
"""

from __future__ import annotations

from enum import IntEnum


class DaemonExit(IntEnum):
    OK = 0  # stopped on request, after the final drain and state write
    FAILURE = 1  # could not run: the namespace or the port is taken, the state file is damaged
    CONFIG = 2  # the config file or a setting in it is unusable (systemd's INVALIDARGUMENT)


class CliExit(IntEnum):
    OK = 0  # the daemon runs and no finding is a warning or critical
    FINDINGS = 1  # the daemon runs, and some finding is a warning or critical
    USAGE = 2  # a bad option or config file (click's own usage status is 2 as well)
    NOT_RUNNING = 3  # no ai-analyticsd holds the namespace (or there is nothing to show)
    UNREADABLE = 4  # the state file or history cannot be read: the status is unknown
    INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a command stopped by Ctrl-C
