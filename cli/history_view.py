"""``ai-analytics history``'s table: the rows of the history database, drawn with the same
table and number formats as ``ai-analytics status``."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ai_analytics.cli import tables as fmt
from ai_analytics.cli.tables import Column, table

Row = Mapping[str, Any]

# header, alignment, and the cell from one row of ``read_history``
_COLUMNS: tuple[tuple[Column, Callable[[Row], object]], ...] = (
    (Column("time"), lambda r: fmt.iso_utc(r["unix"])),
    (Column("operation"), lambda r: r["operation"]),
    (Column("model"), lambda r: r["model"]),
    (Column("count", right=True), lambda r: r["count"]),
    (Column("err%", right=True), lambda r: fmt.fixed(_scaled(r["error_rate"], 100.0), 2)),
    (Column("ops/s", right=True), lambda r: fmt.fixed(r["throughput_per_s"], 1)),
    (Column("p50 ms", right=True), lambda r: fmt.fixed(r["latency_p50_ms"], 2)),
    (Column("p95 ms", right=True), lambda r: fmt.fixed(r["latency_p95_ms"], 2)),
    (Column("p99 ms", right=True), lambda r: fmt.fixed(r["latency_p99_ms"], 2)),
    (Column("quality", right=True), lambda r: fmt.fixed(r["quality_mean"], 3)),
)


def _scaled(value: object, scale: float) -> object:
    return value * scale if isinstance(value, (int, float)) else value


def render_history(rows: Sequence[Row]) -> str:
    """The rows under a header line, "-" where there is no data. Never narrowed to the
    terminal: a history table is for reading whole, or piping."""
    lines = table([column for column, _ in _COLUMNS],
                  [[cell(row) for _, cell in _COLUMNS] for row in rows],
                  width=10_000, indent=0)
    return "\n".join(line.rstrip() for line in lines)
