"""Counts per (operation, model), with a cap on distinct names and series.

Names from every lane map to one daemon-wide id space; a record's series is the pair of its
operation and model ids. Memory is bounded by ``max_series``: past the cap new names and
pairs are counted under ``other`` and the overflow is counted too.
"""

from __future__ import annotations

import numpy as np

OTHER = "other"
EMPTY_ID, OTHER_ID = 0, 1


class OperationCounts:
    def __init__(self, max_series: int) -> None:
        self.max_series = max_series
        self.max_names = 2 * max_series + 2
        self.names: dict[str, int] = {"": EMPTY_ID, OTHER: OTHER_ID}
        self.name_list: list[str] = ["", OTHER]
        self.counts: dict[tuple[int, int], int] = {}
        self.overflow_events = 0  # events counted under "other" because a cap was hit

    def name_id(self, text: str | None) -> int:
        """Daemon-wide id of a name; OTHER_ID past the cap (or for an unusable name)."""
        if text is None:
            return OTHER_ID
        ident = self.names.get(text)
        if ident is None:
            if len(self.name_list) >= self.max_names:
                return OTHER_ID
            ident = len(self.name_list)
            self.names[text] = ident
            self.name_list.append(text)
        return ident

    def add(self, ops: np.ndarray, models: np.ndarray) -> None:
        """Count one batch; ``ops`` and ``models`` are daemon-wide ids, one per event."""
        if len(ops) == 0:
            return
        width = len(self.name_list)
        keys = ops.astype(np.int64) * width + models
        if width * width <= 1 << 18:
            tally = np.bincount(keys)
            found = np.flatnonzero(tally)
            pairs = zip(found.tolist(), tally[found].tolist(), strict=False)
        else:
            unique, counts = np.unique(keys, return_counts=True)
            pairs = zip(unique.tolist(), counts.tolist(), strict=False)
        for key, count in pairs:
            series = divmod(key, width)
            if series not in self.counts and len(self.counts) >= self.max_series:
                series = (OTHER_ID, OTHER_ID)
                self.overflow_events += count
            self.counts[series] = self.counts.get(series, 0) + count

    def rows(self) -> list[dict[str, object]]:
        names = self.name_list
        return [
            {"operation": names[op], "model": names[model], "count": count}
            for (op, model), count in sorted(self.counts.items(), key=lambda kv: -kv[1])
        ]

    def load(self, rows: list[dict[str, object]]) -> None:
        """Restore counts saved by an earlier daemon."""
        for row in rows:
            op = self.name_id(str(row["operation"]))
            model = self.name_id(str(row["model"]))
            series = (op, model)
            self.counts[series] = self.counts.get(series, 0) + int(row["count"])  # type: ignore[call-overload]
