"""Wall-clock times as text: the one format the state file, the history rows and the terminal
views share (ISO 8601 in UTC)."""

from __future__ import annotations

import datetime


def iso_utc(unix: float, timespec: str = "milliseconds") -> str:
    """``1700000000.25`` → ``2023-11-14T22:13:20.250+00:00``; ``timespec`` as for
    ``datetime.isoformat``. OverflowError, OSError or ValueError for a time that is none."""
    moment = datetime.datetime.fromtimestamp(unix, datetime.UTC)
    return moment.isoformat(timespec=timespec)
