"""Merges of sparse bucket counts done by the drain thread a few milliseconds at a time.

Merging a second's or a time slot's parts takes tens of milliseconds at hundreds of busy
series (a million keys): done in one go it would pause the drain for longer than a lane takes
to fill. A ``Merge`` cuts ``merge_counts(parts)`` into key ranges of about ``STEP_KEYS``
input keys each; ``Merger.run`` steps the queued merges, oldest first, until its time budget
is spent, once per batch the engine adds. A finished merge is handed to its ``adopt``
callback, which puts the result in place of the parts it sums only where those parts (the
very objects, compared by identity) are still there: the engine may have moved or merged
them meanwhile, and then the result is dropped. Results are those of ``merge_counts`` (the
same keys, counts and count dtype), so when a merge ends changes no figure, only how many
parts a reader sums.

The drain thread does this itself, not a merger thread: a tally merge (``np.bincount``,
``np.concatenate``) holds the GIL, so a thread beside the drain would pause it anyway, by
as much as its longest call plus the GIL's switch interval, and at an uneven moment.

Memory stays bounded when the budget does not keep up: past ``MAX_PENDING`` queued merges,
``run`` goes on beyond its budget until the queue is back under it.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

import numpy as np

from ai_analytics.daemon.stats import histogram as H
from ai_analytics.daemon.stats.lineage import Lineage

# Input keys per step, and key range per step (a merge over a narrow range tallies: its cost
# follows the range): together about half a millisecond of merging on one core.
STEP_KEYS = 1 << 15
STEP_RANGE = 8 * STEP_KEYS
# Merging per batch, in seconds: the drain pauses this much longer (plus one step at most).
# A second's merges at 1,024 busy series take ~40 ms: with 3 ms they are done within a second
# (at 30 batches a second) and leave most batches alone.
BUDGET_SECONDS = 0.003
# Queued merges beyond which ``run`` ignores its budget (the merges fell behind).
MAX_PENDING = 24


class Merge:
    """``merge_counts(parts, dtype)`` in steps of a key range each."""

    __slots__ = ("_edges", "_live", "_pieces", "adopt", "dtype", "parts", "result")

    def __init__(self, parts: list[H.Counts] | tuple[H.Counts, ...], dtype: type | None,
                 adopt: Callable[[Merge], None]) -> None:
        self.parts = tuple(parts)  # the parts it sums: the adopter compares them by identity
        self.dtype, self.adopt = dtype, adopt
        self.result: H.Counts | None = None
        self._pieces: list[H.Counts] = []
        self._live = [part for part in self.parts if len(part[0])]
        self._edges = np.zeros(2, H.KEY_DTYPE)
        if self._live:
            low = min(int(k[0]) for k, _ in self._live)
            high = max(int(k[-1]) for k, _ in self._live) + 1
            steps = max(-(-sum(len(k) for k, _ in self._live) // STEP_KEYS),
                        -(-(high - low) // STEP_RANGE))
            # In the keys' dtype: a search for wider values would copy each part's keys.
            self._edges = np.linspace(low, high, steps + 1).astype(H.KEY_DTYPE)

    @property
    def steps(self) -> int:
        return len(self._edges) - 1

    def step(self) -> bool:
        """Merge the next key range; True once the result is complete."""
        i = len(self._pieces)
        edges = self._edges[i : i + 2]
        ranges = []
        for keys, counts in self._live:
            # The method, not np.searchsorted: that wrapper costs twice the search itself,
            # and a merge of a second's parts at 1 M events/s searches ~100 parts per step.
            low, high = keys.searchsorted(edges).tolist()
            ranges.append((keys[low:high], counts[low:high]))
        self._pieces.append(H.merge_counts(ranges, self.dtype))
        if len(self._pieces) < self.steps:
            return False
        # Concatenated counts take the widest piece's dtype: that of one merge of everything.
        pieces, self._pieces, self._live = self._pieces, [], []
        self.result = pieces[0] if len(pieces) == 1 else (
            np.concatenate([k for k, _ in pieces]), np.concatenate([c for _, c in pieces]))
        return True

    def finish(self) -> H.Counts:
        while self.result is None:
            self.step()
        return self.result


class Merger:
    """The queue of merges the engine does between batches. ``budget_seconds`` (None: no
    limit, every merge done as it is submitted) and ``max_pending`` are attributes so that a
    test can hold merges back and let them catch up. ``lineage`` records what each finished
    merge sums."""

    def __init__(self, budget_seconds: float | None = BUDGET_SECONDS,
                 max_pending: int = MAX_PENDING) -> None:
        self.budget_seconds, self.max_pending = budget_seconds, max_pending
        self._queue: deque[Merge] = deque()
        self.lineage = Lineage()

    def __len__(self) -> int:
        return len(self._queue)

    def submit(self, merge: Merge) -> None:
        self._queue.append(merge)
        if self.budget_seconds is None:
            self.run()

    def finish(self, merge: Merge) -> None:
        """Complete one merge now (its parts must not wait any longer) and adopt it."""
        if merge in self._queue:
            self._queue.remove(merge)
            self._done(merge, merge.finish())

    def run(self) -> None:
        """Step merges, oldest first, for the budget, and beyond it while too many wait."""
        budget = self.budget_seconds
        deadline = None if budget is None else time.perf_counter() + budget
        queue = self._queue
        while queue and (deadline is None or len(queue) > self.max_pending
                         or time.perf_counter() < deadline):
            merge = queue[0]
            if merge.step():
                queue.popleft()
                assert merge.result is not None
                self._done(merge, merge.result)

    def _done(self, merge: Merge, result: H.Counts) -> None:
        self.lineage.record(result, merge.parts)
        merge.adopt(merge)


def replace_run(parts: list[H.Counts], covered: tuple[H.Counts, ...], merged: H.Counts
                ) -> bool:
    """Put ``merged`` in place of ``covered`` in ``parts`` if ``covered`` (the same objects)
    is a contiguous run there; False, and ``parts`` unchanged, if not."""
    if not covered:
        return False
    first = covered[0]
    for start, part in enumerate(parts):
        if part is first:
            end = start + len(covered)
            if end <= len(parts) and all(a is b for a, b in zip(parts[start:end], covered,
                                                                strict=True)):
                parts[start:end] = [merged]
                return True
            return False
    return False
