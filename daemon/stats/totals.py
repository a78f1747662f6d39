"""Per-second totals of every series: counts, sums, minimums and maximums for the last
RING_SECONDS seconds, in blocks of BLOCK_SECONDS seconds copied on write (a capture keeps the
blocks of its moment), and the totals of a window folded from them.

Exact: a second's counts fit 32 bits, each minimum and maximum keeps its field's precision,
and folds are float64 (exact for counts below 2**53).
"""

from __future__ import annotations

import numpy as np

RING_SECONDS = 300  # seconds of per-second totals kept

SUM_FIELDS = (
    "count", "successes", "lat_sum", "q_count", "q_sum", "cache_lookups", "cache_hits",
    "ttft_count", "ttft_sum", "queue_count", "queue_sum", "tokens_in", "tokens_out",
)
MIN_FIELDS = ("lat_min", "q_min", "ttft_min", "queue_min")
MAX_FIELDS = ("lat_max", "q_max", "ttft_max", "queue_max")

# One second of one series, compact: a second's counts fit 32 bits, and each minimum and
# maximum keeps its record field's own precision (latency float64, the others float32), so
# they stay exact. The LLM fields live apart, only for the series that report them.
CORE_DTYPE = np.dtype([
    ("lat_sum", "f8"), ("q_sum", "f8"), ("lat_min", "f8"), ("lat_max", "f8"),
    ("count", "u4"), ("successes", "u4"), ("q_count", "u4"), ("cache_lookups", "u4"),
    ("cache_hits", "u4"), ("q_min", "f4"), ("q_max", "f4"),
])
LLM_DTYPE = np.dtype([
    ("ttft_sum", "f8"), ("queue_sum", "f8"), ("tokens_in", "f8"), ("tokens_out", "f8"),
    ("ttft_count", "u4"), ("queue_count", "u4"), ("ttft_min", "f4"), ("ttft_max", "f4"),
    ("queue_min", "f4"), ("queue_max", "f4"),
])
CORE_FIELDS: tuple[str, ...] = CORE_DTYPE.names or ()
LLM_FIELDS: tuple[str, ...] = LLM_DTYPE.names or ()
BLOCK_SECONDS = 10  # per-second totals are copied on write in blocks of this many seconds


def _blank_record(dtype: np.dtype) -> np.ndarray:
    record = np.zeros((), dtype)
    for name in dtype.names or ():
        if name in MIN_FIELDS:
            record[name] = np.inf
        elif name in MAX_FIELDS:
            record[name] = -np.inf
    return record


_BLANK_CORE = _blank_record(CORE_DTYPE)
_BLANK_LLM = _blank_record(LLM_DTYPE)


def blank(shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    arrays = {f: np.full(shape, 0.0) for f in SUM_FIELDS}
    arrays.update({f: np.full(shape, np.inf) for f in MIN_FIELDS})
    arrays.update({f: np.full(shape, -np.inf) for f in MAX_FIELDS})
    return arrays


def grow(arrays: dict[str, np.ndarray], capacity: int) -> dict[str, np.ndarray]:
    """New arrays with the last axis widened to ``capacity`` series (the old ones unchanged:
    a capture may hold them)."""
    old = next(iter(arrays.values())).shape
    grown = blank((*old[:-1], capacity))
    for name, array in arrays.items():
        grown[name][..., : old[-1]] = array
    return grown


def combine(into: dict[str, np.ndarray], part: dict[str, np.ndarray]) -> None:
    width = next(iter(part.values())).shape[-1]
    for f in SUM_FIELDS:
        into[f][..., :width] += part[f]
    for f in MIN_FIELDS:
        np.minimum(into[f][..., :width], part[f], out=into[f][..., :width])
    for f in MAX_FIELDS:
        np.maximum(into[f][..., :width], part[f], out=into[f][..., :width])


def combined(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A new ``a + b`` (``a`` at least as wide as ``b``)."""
    out = {f: array.copy() for f, array in a.items()}
    combine(out, b)
    return out


def _touched(shape: tuple[int, ...], fill: np.ndarray) -> np.ndarray:
    """An array filled now, so resident now: np.zeros alone maps pages lazily, so RSS would
    creep up as slots are first written, and look like a leak."""
    array: np.ndarray = np.empty(shape, fill.dtype)
    array[...] = fill
    return array


class TotalsBlock:
    """BLOCK_SECONDS slots of the per-second ring: which second each holds, and its totals
    per series (core) and per LLM series (llm)."""

    __slots__ = ("core", "generation", "llm", "second")

    def __init__(self, second: np.ndarray, core: np.ndarray, llm: np.ndarray,
                 generation: int) -> None:
        self.second, self.core, self.llm, self.generation = second, core, llm, generation

    @classmethod
    def blank(cls, capacity: int, llm_capacity: int, generation: int) -> TotalsBlock:
        return cls(np.full(BLOCK_SECONDS, -1, np.int64),
                   _touched((BLOCK_SECONDS, capacity), _BLANK_CORE),
                   _touched((BLOCK_SECONDS, llm_capacity), _BLANK_LLM), generation)

    def copy(self, capacity: int, llm_capacity: int, generation: int) -> TotalsBlock:
        block = TotalsBlock.blank(capacity, llm_capacity, generation)
        block.second[:] = self.second
        block.core[:, : self.core.shape[1]] = self.core
        block.llm[:, : self.llm.shape[1]] = self.llm
        return block


class TotalsRing:
    """Per-second totals for the last RING_SECONDS seconds, in blocks copied on write: the
    engine writes only blocks of its current generation; ``freeze`` hands the blocks out
    and starts a new generation, so a frozen block never changes."""

    def __init__(self, capacity: int) -> None:
        self.capacity, self.llm_capacity, self.generation = capacity, 0, 0
        self.blocks = [TotalsBlock.blank(capacity, 0, 0)
                       for _ in range(RING_SECONDS // BLOCK_SECONDS)]

    def grow(self, capacity: int, llm_capacity: int) -> None:
        self.capacity, self.llm_capacity = capacity, llm_capacity
        self.blocks = [block.copy(capacity, llm_capacity, self.generation)
                       for block in self.blocks]

    def freeze(self) -> tuple[TotalsBlock, ...]:
        self.generation += 1
        return tuple(self.blocks)

    def add(self, second: int, part: dict[str, np.ndarray], llm_sids: np.ndarray,
            llm_rows: np.ndarray) -> None:
        """Add one second's totals ([capacity] per field); the LLM fields of the series
        ``llm_sids`` go to their LLM rows ``llm_rows``."""
        index, row = divmod(second % RING_SECONDS, BLOCK_SECONDS)
        block = self.blocks[index]
        if block.generation != self.generation:
            block = block.copy(self.capacity, self.llm_capacity, self.generation)
            self.blocks[index] = block
        if block.second[row] != second:
            block.second[row] = second
            block.core[row] = _BLANK_CORE
            block.llm[row] = _BLANK_LLM
        core = block.core[row]
        for f in CORE_FIELDS:
            into = core[f]
            if f in MIN_FIELDS:
                np.minimum(into, part[f], out=into, casting="unsafe")
            elif f in MAX_FIELDS:
                np.maximum(into, part[f], out=into, casting="unsafe")
            else:
                np.add(into, part[f], out=into, casting="unsafe")
        if len(llm_sids):
            llm = block.llm[row]
            for f in LLM_FIELDS:
                into = llm[f]
                if f in MIN_FIELDS:
                    into[llm_rows] = np.minimum(into[llm_rows], part[f][llm_sids])
                elif f in MAX_FIELDS:
                    into[llm_rows] = np.maximum(into[llm_rows], part[f][llm_sids])
                else:
                    into[llm_rows] = into[llm_rows] + part[f][llm_sids]


def _grouped(fields: tuple[str, ...]) -> tuple[str, ...]:
    """``fields`` as sums, then minimums, then maximums: a fold is three slices."""
    return tuple(f for kind in (SUM_FIELDS, MIN_FIELDS, MAX_FIELDS) for f in fields if f in kind)


CORE_ORDER, LLM_ORDER = _grouped(CORE_FIELDS), _grouped(LLM_FIELDS)
_CORE_SPLIT = (sum(f in SUM_FIELDS for f in CORE_FIELDS), len(CORE_FIELDS)
               - sum(f in MAX_FIELDS for f in CORE_FIELDS))
_LLM_SPLIT = (sum(f in SUM_FIELDS for f in LLM_FIELDS), len(LLM_FIELDS)
              - sum(f in MAX_FIELDS for f in LLM_FIELDS))
# The totals of some seconds of one block: [len(CORE_ORDER), capacity] and
# [len(LLM_ORDER), llm capacity], float64 (exact for the counts and the minimums and maximums).
BlockFold = tuple[np.ndarray, np.ndarray]


def _fold_rows(block: TotalsBlock, chosen: np.ndarray) -> BlockFold:
    """The totals of the ``chosen`` rows (seconds) of ``block``, per series and LLM row."""
    return (_fold_fields(block.core[chosen], CORE_ORDER, _CORE_SPLIT),
            _fold_fields(block.llm[chosen], LLM_ORDER, _LLM_SPLIT))


def _fold_fields(rows: np.ndarray, order: tuple[str, ...], split: tuple[int, int]
                 ) -> np.ndarray:
    folded = np.empty((len(order), rows.shape[1]))
    for index, f in enumerate(order):
        if index < split[0]:
            rows[f].sum(axis=0, dtype=np.float64, out=folded[index])
        elif index < split[1]:
            folded[index] = rows[f].min(axis=0)
        else:
            folded[index] = rows[f].max(axis=0)
    return folded


def _blank_fold(order: tuple[str, ...], split: tuple[int, int], width: int) -> np.ndarray:
    folded = np.empty((len(order), width))
    folded[: split[0]] = 0.0
    folded[split[0] : split[1]] = np.inf
    folded[split[1] :] = -np.inf
    return folded


def _add_fold(into: np.ndarray, part: np.ndarray, split: tuple[int, int]) -> None:
    width = into.shape[1]
    sums, low = split
    into[:sums] += part[:sums, :width]
    np.minimum(into[sums:low], part[sums:low, :width], out=into[sums:low])
    np.maximum(into[low:], part[low:, :width], out=into[low:])


class Folds:
    """Folds of whole blocks, by the block (frozen blocks never change): the ones used in one
    ``operations()``, reused by the next one."""

    __slots__ = ("kept", "used")

    def __init__(self, kept: dict[int, tuple[TotalsBlock, BlockFold]]) -> None:
        self.kept = kept
        self.used: dict[int, tuple[TotalsBlock, BlockFold]] = {}

    def fold(self, block: TotalsBlock, chosen: np.ndarray) -> BlockFold:
        if not chosen.all():  # a window's edge: changes with the clock, not worth keeping
            return _fold_rows(block, chosen)
        entry = self.used.get(id(block)) or self.kept.get(id(block))
        if entry is None or entry[0] is not block:
            entry = (block, _fold_rows(block, chosen))
        self.used[id(block)] = entry
        return entry[1]


def window_totals(blocks: tuple[TotalsBlock, ...], llm_sids: np.ndarray,
                   llm_rows: np.ndarray, now: int, seconds: int, series: int, folds: Folds
                   ) -> dict[str, np.ndarray]:
    """Totals per series over the seconds (now - seconds, now]. Blocks are added in ring
    order whatever the clock, so the float sums are the same however they were reached."""
    core = _blank_fold(CORE_ORDER, _CORE_SPLIT, series)
    llm = _blank_fold(LLM_ORDER, _LLM_SPLIT, blocks[0].llm.shape[1])
    for block in blocks:
        chosen = (block.second > now - seconds) & (block.second <= now)
        if chosen.any():
            core_part, llm_part = folds.fold(block, chosen)
            _add_fold(core, core_part, _CORE_SPLIT)
            if len(llm_sids):
                _add_fold(llm, llm_part, _LLM_SPLIT)
    per_series = _blank_fold(LLM_ORDER, _LLM_SPLIT, series)
    per_series[:, llm_sids] = llm[:, llm_rows]
    return {**dict(zip(CORE_ORDER, core, strict=True)),
            **dict(zip(LLM_ORDER, per_series, strict=True))}
