"""Bucketed distributions with a stated error bound, and quantiles read from them.

Latency-like values (ms) go into log-spaced buckets: bucket ``i >= 1`` covers
``[LOG_MIN_MS * GAMMA**(i-1), LOG_MIN_MS * GAMMA**i)`` and is reported as the point whose
relative distance to either edge is ``RELATIVE_ERROR = (GAMMA - 1) / (GAMMA + 1)`` (0.99 %),
so any quantile read from the buckets is within 1 % of the true order statistic for values
from 1 µs to 1 hour. Bucket 0 holds values below 1 µs (reported as 0), the last bucket values
beyond the regular range (just over 1 hour, reported as its lower edge); callers clamp
results into the exact [min, max] they keep beside the buckets. Quality scores in [0, 1] go
into 100 linear buckets (absolute error at most 0.005).

A series keeps its four distributions side by side in one row of ``HIST_WIDTH`` counters, so
the counts of many series are one 2-D array and a quantile over all of them is one
cumulative sum along the rows.
"""

from __future__ import annotations

import math

import numpy as np

LOG_MIN_MS = 1e-3  # 1 µs
LOG_MAX_MS = 3.6e6  # 1 hour
GAMMA = 1.02
RELATIVE_ERROR = (GAMMA - 1) / (GAMMA + 1)
_LOG_GAMMA = math.log(GAMMA)
# Regular buckets up to at least LOG_MAX_MS, plus one below LOG_MIN_MS and one above them.
LOG_BUCKETS = math.ceil(math.log(LOG_MAX_MS / LOG_MIN_MS) / _LOG_GAMMA) + 2
LOG_OVERFLOW_MS = LOG_MIN_MS * GAMMA ** (LOG_BUCKETS - 2)  # where the last bucket starts
QUALITY_BUCKETS = 100
QUALITY_ABSOLUTE_ERROR = 0.5 / QUALITY_BUCKETS

# A series' distributions side by side in one row of HIST_WIDTH counters: latency, quality,
# time to first token, queue time.
LATENCY, QUALITY, TTFT, QUEUE = range(4)
WIDTHS = (LOG_BUCKETS, QUALITY_BUCKETS, LOG_BUCKETS, LOG_BUCKETS)
OFFSETS = tuple(sum(WIDTHS[:i]) for i in range(4))
HIST_WIDTH = sum(WIDTHS)


_INV_LOG_GAMMA = 1 / _LOG_GAMMA
_BUCKET_OFFSET = 1 - math.log(LOG_MIN_MS) * _INV_LOG_GAMMA


def log_buckets(values_ms: np.ndarray) -> np.ndarray:
    """Bucket index of each value (finite, >= 0: the caller filters the rest).

    floor(log(v / LOG_MIN_MS) / log(GAMMA)) + 1, computed in place; truncation stands in
    for floor because every value that lands below 1 is clipped to bucket 0 anyway.
    """
    scaled = np.maximum(values_ms, 1e-300)
    np.log(scaled, out=scaled)
    scaled *= _INV_LOG_GAMMA
    scaled += _BUCKET_OFFSET
    np.clip(scaled, 0, LOG_BUCKETS - 1, out=scaled)
    return scaled.astype(np.int64)


def log_bucket_values(buckets: np.ndarray) -> np.ndarray:
    """The value each log bucket stands for (its error-balanced point)."""
    lower = LOG_MIN_MS * np.power(GAMMA, buckets.astype(np.float64) - 1)
    values = lower * (2 * GAMMA / (GAMMA + 1))
    values = np.where(buckets == 0, 0.0, values)
    return np.where(buckets >= LOG_BUCKETS - 1, LOG_OVERFLOW_MS, values)


def quality_buckets(scores: np.ndarray) -> np.ndarray:
    return np.clip(np.floor(scores * QUALITY_BUCKETS), 0, QUALITY_BUCKETS - 1).astype(np.int64)


def quality_bucket_values(buckets: np.ndarray) -> np.ndarray:
    return (buckets.astype(np.float64) + 0.5) / QUALITY_BUCKETS


def row_quantiles(rows: np.ndarray, metric: int, quantiles: tuple[float, ...]) -> np.ndarray:
    """Quantiles of one metric for every row (series) of a ``[series, HIST_WIDTH]`` count
    array: a ``[series, len(quantiles)]`` array, NaN where a row has no count.

    Quantile ``q`` is the bucket value of the order statistic of rank ``ceil(q * total)``
    (numpy's "inverted_cdf" definition).
    """
    block = rows[:, OFFSETS[metric] : OFFSETS[metric] + WIDTHS[metric]]
    cumulative = np.cumsum(block, axis=1, dtype=np.int64)
    totals = cumulative[:, -1]
    values = np.full((len(rows), len(quantiles)), np.nan)
    present = np.flatnonzero(totals)
    if len(present) == 0:
        return values
    cumulative, totals = cumulative[present], totals[present]
    to_value = quality_bucket_values if metric == QUALITY else log_bucket_values
    for column, q in enumerate(quantiles):
        rank = np.maximum(1, np.ceil(q * totals - 1e-9)).astype(np.int64)
        bucket = (cumulative < rank[:, None]).sum(axis=1)
        values[present, column] = to_value(bucket)
    return values


def count_keys(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique keys and how often each occurs."""
    if len(keys) == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    low, high = int(keys.min()), int(keys.max())
    if high - low < _DENSE_FACTOR * len(keys):  # tally over the range: no sort
        tally = np.bincount(keys - low, minlength=high - low + 1)
        present = np.flatnonzero(tally)
        return present + low, tally[present]
    # A sort and the run boundaries: a third of np.unique's time (0.3 ms for 66 k keys), the
    # more so with 32-bit keys, which sort in half the time of 64-bit ones.
    ordered = keys.astype(np.int32 if low >= 0 and high < 1 << 31 else np.int64)
    ordered.sort()
    edges = run_edges(ordered)
    return ordered[edges[:-1]], np.diff(edges)


def run_edges(ordered: np.ndarray) -> np.ndarray:
    """Where each run of equal values of sorted ``ordered`` starts, and its length at the end
    (so that run ``i`` is ``edges[i]:edges[i + 1]``)."""
    boundary = np.empty(len(ordered) + 1, bool)
    boundary[0] = boundary[-1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=boundary[1:-1])
    return np.flatnonzero(boundary)


# Below this many times as many keys as their range, counting by bincount over the range beats
# sorting them (a tally costs per slot of the range, a sort per key).
_DENSE_FACTOR = 8


# -- sparse counts ------------------------------------------------------------------------
# Bucket counts of many series as sorted unique keys ``series * HIST_WIDTH + OFFSETS[metric]
# + bucket`` with a count each: only the buckets that were hit cost memory.
KEY_DTYPE = np.int32  # max_series (65536) * HIST_WIDTH stays below 2**31
Counts = tuple[np.ndarray, np.ndarray]  # (sorted unique keys, counts)
EMPTY: Counts = (np.empty(0, KEY_DTYPE), np.empty(0, np.int64))


def narrow(counts: np.ndarray) -> np.ndarray:
    """Counts of a time slot (below 2**32) in the narrowest unsigned type that holds them:
    most slots' counts fit 16 bits, which saves a quarter of a part's bytes."""
    if len(counts) == 0 or int(counts.max()) < 1 << 16:
        return counts.astype(np.uint16)
    return counts.astype(np.uint32, copy=False)


def merge_counts(parts: list[Counts] | tuple[Counts, ...], dtype: type | None = np.int64
                 ) -> Counts:
    """The sum of sparse counts: sorted unique keys, counts of ``dtype`` (None: ``narrow``)."""
    parts = [part for part in parts if len(part[0])]
    cast = narrow if dtype is None else (lambda c: c.astype(dtype, copy=False))
    if not parts:
        return np.empty(0, KEY_DTYPE), cast(np.empty(0, np.int64))
    if len(parts) == 1:
        keys, counts = parts[0]
        return keys, cast(counts)
    largest = max(range(len(parts)), key=lambda i: len(parts[i][0]))
    rest = [part for i, part in enumerate(parts) if i != largest]
    if len(parts[largest][0]) > _INSERT_FACTOR * sum(len(k) for k, _ in rest):
        # One big part and a few small ones (a window's settled counts and its newest
        # seconds): the small ones go into the big one's places, no pass over a key range.
        keys, counts = add_counts(parts[largest], merge_counts(rest))
        return keys, cast(counts)
    keys = np.concatenate([k for k, _ in parts])
    counts = np.concatenate([c for _, c in parts])
    low, high = int(keys.min()), int(keys.max())
    if high - low < _DENSE_FACTOR * len(keys) and counts.dtype.itemsize <= 4:
        # Many parts over a narrow key range (a window's seconds of a block of series): a
        # tally over the range, no sort. Weights are summed as float64, exact for sums below
        # 2**53; parts hold no zero counts, so the keys present are those with a sum.
        tally = np.bincount(keys - low, weights=counts, minlength=high - low + 1)
        present = np.flatnonzero(tally)
        return (present + low).astype(KEY_DTYPE), cast(tally[present].astype(np.int64))
    if counts.dtype.itemsize <= 4 or int(counts.max()) < 1 << 31:
        # Key and count packed in one int64 and sorted as one: a plain sort, not an argsort
        # and a gather. The stable sort (timsort for int64) finds that the concatenation is
        # a few sorted runs, one per part, and merges them: 4.2 ms for ten parts of 38 k keys
        # where the default quicksort takes 18 ms.
        packed = keys.astype(np.int64) << 32
        packed |= counts
        packed.sort(kind="stable")
        keys = (packed >> 32).astype(KEY_DTYPE)
        counts = packed & 0xFFFFFFFF
    else:
        order = np.argsort(keys, kind="stable")
        keys, counts = keys[order], counts[order].astype(np.int64)
    starts = run_edges(keys)[:-1]
    return keys[starts], cast(np.add.reduceat(counts, starts))


# Above this many times as many entries in the biggest part as in the others together, merging
# the others into the biggest one's places beats a tally or a sort of all of them.
_INSERT_FACTOR = 4


def add_counts(base: Counts, delta: Counts) -> Counts:
    """``base`` plus ``delta`` (sorted unique keys each; ``delta``'s counts may be negative
    where ``base`` holds at least as much), keys whose sum is zero left out. The counts keep
    ``base``'s type where the sums fit it (int64 otherwise). Costs a binary search per entry
    of ``delta`` and one copy of ``base``."""
    keys, counts = base
    added_keys, added = delta
    if len(added_keys) == 0:
        return keys, counts.copy()
    at = np.searchsorted(keys, added_keys)
    found = at < len(keys)
    found[found] = keys[at[found]] == added_keys[found]
    at_found = at[found]
    sums = counts[at_found].astype(np.int64) + added[found]
    new = ~found
    fresh_at, fresh_keys, fresh = at[new], added_keys[new], added[new]
    top = max(int(sums.max(initial=0)), int(fresh.max(initial=0)))
    kind = counts.dtype if top <= np.iinfo(counts.dtype).max else np.dtype(np.int64)
    if len(fresh_at):
        keys, counts, at_found = _inserted(keys, counts.astype(kind, copy=False), fresh_at,
                                           fresh_keys, fresh, at_found)
    else:
        counts = counts.astype(kind)  # a copy: ``base`` is not changed
    counts[at_found] = sums
    if (sums == 0).any():
        kept = counts != 0
        keys, counts = keys[kept], counts[kept]
    return keys, counts


def _inserted(keys: np.ndarray, counts: np.ndarray, at: np.ndarray, new_keys: np.ndarray,
              new_counts: np.ndarray, positions: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``keys`` and ``counts`` with entries inserted before the places ``at`` (sorted), in new
    arrays, and where the old places ``positions`` moved to."""
    size = len(keys) + len(at)
    placed = at + np.arange(len(at))
    old = np.ones(size, bool)
    old[placed] = False
    wider_keys, wider_counts = np.empty(size, keys.dtype), np.empty(size, counts.dtype)
    wider_keys[old], wider_counts[old] = keys, counts
    wider_keys[placed], wider_counts[placed] = new_keys, new_counts
    return wider_keys, wider_counts, positions + np.searchsorted(at, positions, side="right")


def merged_blocks(parts: list[Counts] | tuple[Counts, ...], series: int,
                  block_series: int = 128) -> list[Counts]:
    """``merge_counts(parts)`` in pieces of ``block_series`` series each (in key order): the
    same entries, with a fraction of the temporary memory of one merge of everything."""
    parts = [part for part in parts if len(part[0])]
    if sum(len(k) for k, _ in parts) <= 1 << 18:
        return [merge_counts(parts)]
    edges = np.arange(0, series + block_series, block_series) * HIST_WIDTH
    bounds = [np.searchsorted(keys, edges).tolist() for keys, _ in parts]
    return [merge_counts([(keys[b[i]:b[i + 1]], counts[b[i]:b[i + 1]])
                          for (keys, counts), b in zip(parts, bounds, strict=True)])
            for i in range(len(edges) - 1)]


def metric_entries(counts: Counts, metric: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The entries of one distribution: (series, bucket, count) arrays, sorted by series then
    bucket."""
    keys, values = counts
    local = keys % HIST_WIDTH
    chosen = (local >= OFFSETS[metric]) & (local < OFFSETS[metric] + WIDTHS[metric])
    keys = keys[chosen]
    return keys // HIST_WIDTH, local[chosen] - OFFSETS[metric], values[chosen]


def sparse_quantiles(counts: Counts, series: int, quantiles: tuple[float, ...],
                     out: np.ndarray | None = None) -> np.ndarray:
    """``row_quantiles`` over sparse counts, for every distribution at once:
    ``[4 distributions, series, len(quantiles)]``, NaN for a series without a count of that
    distribution. Same definition (the bucket of rank ``ceil(q * total)``). With ``out``,
    only the series present in ``counts`` are written there. The keys need to be sorted, not
    unique. Entries of series at or beyond ``series`` are left out."""
    values = np.full((len(WIDTHS), series, len(quantiles)), np.nan) if out is None else out
    keys, hits = counts
    if len(keys) == 0:
        return values
    # Each (series, distribution) group starts at a known key, so a binary search per group
    # finds the groups: no arithmetic per entry beyond one cumulative sum. The starts are in
    # the keys' dtype: a search for wider values would copy the keys (twice the time).
    starts = (np.arange(series)[:, None] * HIST_WIDTH + np.asarray(OFFSETS)).ravel()
    bounds = np.searchsorted(keys, np.append(starts, series * HIST_WIDTH).astype(keys.dtype))
    cumulative = np.cumsum(hits, dtype=np.int64)
    before = np.concatenate(([0], cumulative))[bounds]
    group = np.flatnonzero(before[1:] != before[:-1])
    totals, before, base = before[group + 1] - before[group], before[group], starts[group]
    rank = np.maximum(1, np.ceil(np.multiply.outer(totals, quantiles) - 1e-9)).astype(np.int64)
    at = np.searchsorted(cumulative, before[:, None] + rank, side="left")
    bucket = keys[at] - base[:, None]
    group_sid, group_metric = np.divmod(group, len(WIDTHS))
    found = np.where((group_metric == QUALITY)[:, None], quality_bucket_values(bucket),
                     log_bucket_values(bucket))
    values[group_metric, group_sid] = found
    return values
