"""Which parts each merge's result sums, remembered for as long as the result lives.

A window's sum is cached with the parts it summed (``statistics.OperationsCache``). Between
two ``operations()`` the engine merges some of those parts into one (a ring slot's
compaction, a closed second): the window then reads the result in place of its parts, the
same counts in fewer pieces. Without its lineage that looks like a window that lost many
parts and gained a big one, and the window is summed afresh (60 ms for the 5-minute window
at 1,024 busy series, every ten seconds). With it, the result cancels against its parts and
the cached sum stands.

A part is named by its two arrays (``signature``): parts are immutable, so two parts made of
the same arrays hold the same counts, whichever tuple holds them. The lineage refers to
arrays weakly, so it keeps no counts alive; an entry leaves with its result's arrays.
Entries are added by the thread that runs the merges and read by any other: each is one
dict operation, atomic under the GIL.
"""

from __future__ import annotations

import weakref
from collections import Counter

import numpy as np

from ai_analytics.daemon.stats import histogram as H

Signature = tuple[int, int]
_Refs = tuple["weakref.ref[np.ndarray]", "weakref.ref[np.ndarray]"]


def signature(part: H.Counts) -> Signature:
    """What names a part: its arrays (alive while the part is, so not reused meanwhile)."""
    return id(part[0]), id(part[1])


class Lineage:
    """For each merge result still alive, the parts it is the sum of."""

    def __init__(self) -> None:
        self._sources: dict[Signature, tuple[_Refs, tuple[_Refs, ...]]] = {}

    def __len__(self) -> int:
        return len(self._sources)

    def record(self, result: H.Counts, parts: tuple[H.Counts, ...]) -> None:
        """``result`` is the sum of ``parts``."""
        key = signature(result)
        sources = tuple((weakref.ref(keys), weakref.ref(counts)) for keys, counts in parts
                        if len(keys))

        def forget(_: object) -> None:
            if self._sources.get(key) is entry:
                del self._sources[key]

        entry = ((weakref.ref(result[0], forget), weakref.ref(result[1], forget)), sources)
        self._sources[key] = entry

    def sources(self, part: H.Counts) -> list[H.Counts] | None:
        """The parts ``part`` is the sum of, if it is a merge's result and they all live."""
        entry = self._sources.get(signature(part))
        if entry is None:
            return None
        (keys_ref, counts_ref), sources = entry
        if keys_ref() is not part[0] or counts_ref() is not part[1]:
            return None
        found: list[H.Counts] = []
        for keys_ref, counts_ref in sources:
            keys, counts = keys_ref(), counts_ref()
            if keys is None or counts is None:
                return None
            found.append((keys, counts))
        return found

    def cancel(self, changes: Counter[Signature], parts: dict[Signature, H.Counts]) -> None:
        """Take out of ``changes`` (signature → times added, negative where removed) each added
        part whose sources, or their sources in turn, are all among the removed ones, with
        those removed parts: the sum they make is the same. ``parts`` maps signatures to
        parts."""
        for key, times in list(changes.items()):
            for _ in range(max(times, 0)):
                removed = Counter({k: -n for k, n in changes.items() if n < 0})
                if not self._taken(parts[key], removed, depth=0):
                    break
                changes[key] -= 1
                for k in list(changes):
                    if changes[k] < 0:
                        changes[k] = -removed[k]

    def _taken(self, part: H.Counts, removed: Counter[Signature], depth: int) -> bool:
        """Whether ``part`` is made of removed parts; takes them from ``removed`` if so."""
        if depth and removed[signature(part)] > 0:
            removed[signature(part)] -= 1
            return True
        sources = self.sources(part) if depth < _MAX_DEPTH else None
        if not sources:
            return False
        return all(self._taken(source, removed, depth + 1) for source in sources)


# A result's sources may be results in turn (a second's sum, compacted into a slot's): this
# many levels are followed, enough for every merge the engine chains.
_MAX_DEPTH = 4
