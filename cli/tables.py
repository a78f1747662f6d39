"""Plain-text tables and human number formats for the operator's terminal views.

``table`` lays out rows in aligned columns that fit a given width: columns marked ``shrink``
(names) are cut with "…", columns marked ``wrap`` (messages) are wrapped, the widest first,
down to their minimum. Every formatter turns None into "-".
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import math
import os
import shutil
import sys
import textwrap
from collections.abc import Sequence

from ai_analytics.core import times

DEFAULT_WIDTH = 100  # columns when there is no terminal to ask

MISSING = "-"
ELLIPSIS = "…"
GAP = "  "


@dataclasses.dataclass(frozen=True)
class Column:
    """One column: its header, alignment, and how far it may give way to fit the width."""

    header: str
    right: bool = False  # numbers align right
    shrink: int | None = None  # may be cut with "…" down to this many characters
    wrap: int | None = None  # may be wrapped onto more lines, down to this many characters
    max: int | None = None  # never wider than this, room or not (cut with "…")


def truncate(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters, the last one "…" when anything was cut."""
    if len(text) <= width:
        return text
    return text[: max(0, width - 1)] + ELLIPSIS if width > 0 else ""


def table(columns: Sequence[Column], rows: Sequence[Sequence[object]], width: int = 100,
          indent: int = 2) -> list[str]:
    """The rows under a header line, each column as wide as its widest cell, narrowed
    (shrink and wrap columns only) until a line fits in ``width``."""
    cells = [[MISSING if value is None else str(value) for value in row] for row in rows]
    widths = [max([len(c.header)] + [len(row[i]) for row in cells])
              for i, c in enumerate(columns)]
    widths = [min(w, c.max) if c.max else w for c, w in zip(columns, widths, strict=True)]
    budget = width - indent - len(GAP) * (len(columns) - 1)
    minimum = [c.shrink or c.wrap or w for c, w in zip(columns, widths, strict=True)]
    while sum(widths) > budget:
        flexible = [i for i in range(len(columns)) if widths[i] > minimum[i]]
        if not flexible:
            break
        widest = max(flexible, key=lambda i: widths[i])
        widths[widest] -= 1
    pad = " " * indent
    lines = [pad + _join([truncate(c.header, w) for c, w in zip(columns, widths, strict=True)],
                         columns, widths)]
    for row in cells:
        parts: list[list[str]] = []
        for text, column, w in zip(row, columns, widths, strict=True):
            if column.wrap is not None and len(text) > w:
                parts.append(textwrap.wrap(text, w, break_long_words=True) or [""])
            else:
                parts.append([truncate(text, w)])
        for k in range(max(len(p) for p in parts)):
            lines.append(pad + _join([p[k] if k < len(p) else "" for p in parts], columns,
                                     widths))
    return lines


def _join(texts: Sequence[str], columns: Sequence[Column], widths: Sequence[int]) -> str:
    return GAP.join(
        text.rjust(w) if c.right else text.ljust(w)
        for text, c, w in zip(texts, columns, widths, strict=True)
    ).rstrip()


# -- numbers for humans ------------------------------------------------------------------------

def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return None if math.isnan(value) or math.isinf(value) else float(value)


def count(value: object) -> str:
    """1234 → "1,234"."""
    number = _number(value)
    return MISSING if number is None else f"{round(number):,}"


def rate(value: object) -> str:
    """Events per second: "0", "0.25", "12.5", "125", "1,234"."""
    number = _number(value)
    if number is None:
        return MISSING
    if number == 0:
        return "0"
    if abs(number) < 1:
        return f"{number:.2f}"
    if abs(number) < 100:
        return f"{number:.1f}"
    return f"{round(number):,}"


def percent(fraction: object, digits: int = 1) -> str:
    """A fraction as a percentage: 0.0512 → "5.1%"."""
    number = _number(fraction)
    return MISSING if number is None else f"{number * 100:.{digits}f}%"


def percent_value(value: object) -> str:
    """A value that already is a percentage: 12.5 → "12.5%"."""
    number = _number(value)
    return MISSING if number is None else f"{number:.1f}%"


def milliseconds(value: object) -> str:
    """A duration in ms: "0.42 ms", "12.3 ms", "172 ms", "1.2 s", "2.5 min"."""
    number = _number(value)
    if number is None:
        return MISSING
    if number < 10:
        return f"{number:.2f} ms"
    if number < 100:
        return f"{number:.1f} ms"
    if number < 999.5:
        return f"{number:.0f} ms"
    return seconds(number / 1000)


def seconds(value: object) -> str:
    """A duration in seconds: "0.35 s", "12.3 s", "2.5 min", "1.2 h"."""
    number = _number(value)
    if number is None:
        return MISSING
    if number < 1:
        return f"{number:.2f} s"
    if number < 59.95:
        return f"{number:.1f} s"
    if number < 3600:
        return f"{number / 60:.1f} min"
    return f"{number / 3600:.1f} h"


def duration(value: object) -> str:
    """An uptime: "42 s", "5m 03s", "2h 07m", "3d 04h"."""
    number = _number(value)
    if number is None or number < 0:
        return MISSING
    total = int(number)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours:02d}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs} s"


def mebibytes(value: object) -> str:
    """A byte count in MB (2**20 bytes), no unit: 50954240 → "48.6"."""
    number = _number(value)
    if number is None:
        return MISSING
    return megabytes(number / 2**20)


def megabytes(value: object) -> str:
    """A value already in MB: 1536.0 → "1,536", 48.59 → "48.6"."""
    number = _number(value)
    if number is None:
        return MISSING
    return f"{number:.1f}" if number < 100 else f"{round(number):,}"


def fixed(value: object, digits: int = 3) -> str:
    """A plain number with ``digits`` decimals: 0.9 → "0.900"."""
    number = _number(value)
    return MISSING if number is None else f"{number:.{digits}f}"


def local_time(unix: object) -> str:
    """A Unix time as local date and time with its UTC offset, "-" if it is not one."""
    number = _number(unix)
    if number is None:
        return MISSING
    try:
        moment = datetime.datetime.fromtimestamp(number).astimezone()
    except (OverflowError, OSError, ValueError):
        return MISSING
    return moment.strftime("%Y-%m-%d %H:%M:%S %z")


def iso_utc(unix: object) -> str:
    """A Unix time as ISO 8601 UTC to the second, "-" if it is not one."""
    number = _number(unix)
    if number is None:
        return MISSING
    try:
        return times.iso_utc(number, timespec="seconds")
    except (OverflowError, OSError, ValueError):
        return MISSING


def terminal_width() -> int:
    """Terminal columns, kept between 60 and 120 so tables stay readable.

    On a terminal its size now (it may have been resized while a view refreshes), not
    $COLUMNS, which a shell may have exported at another size; piped, $COLUMNS or 100."""
    columns = shutil.get_terminal_size((DEFAULT_WIDTH, 24)).columns
    if sys.stdout.isatty():
        with contextlib.suppress(OSError, ValueError):
            columns = os.get_terminal_size(sys.stdout.fileno()).columns
    return max(60, min(columns, 120))
