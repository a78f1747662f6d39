"""Bucketed distributions with a stated error bound, stored sparsely, queried vectorized.

Latency-like values (ms) go into log-spaced buckets: bucket ``i >= 1`` covers
``[LOG_MIN_MS * GAMMA**(i-1), LOG_MIN_MS * GAMMA**i)`` and is reported as the point whose
relative distance to either edge is ``RELATIVE_ERROR = (GAMMA - 1) / (GAMMA + 1)`` (0.99 %),
so any quantile read from the buckets is within 1 % of the true order statistic for values
from 1 µs to 1 hour. Bucket 0 holds values below 1 µs (reported as 0), the last bucket values
beyond the regular range (just over 1 hour, reported as its lower edge); callers clamp
results into the exact [min, max] they keep beside the buckets. Quality scores in [0, 1] go
into 1000 linear buckets (absolute error at most 0.0005).

Counts are kept as sparse (key, count) pairs: sorted unique int64 keys and their counts. The
key of a value is ``(group * METRICS + metric) * BLOCK + bucket``, where a group is one
(operation, model) series, so one sorted array holds every series' distributions and a
quantile query over all of them is a single cumulative sum and ``searchsorted``.
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
QUALITY_BUCKETS = 1000

# Distributions kept per series, each in a block of BLOCK keys.
LATENCY, TTFT, QUEUE, QUALITY = range(4)
METRICS = 4
BLOCK = LOG_BUCKETS
assert QUALITY_BUCKETS <= BLOCK


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


def keys_for(groups: np.ndarray, metric: int, buckets: np.ndarray) -> np.ndarray:
    return (groups.astype(np.int64) * METRICS + metric) * BLOCK + buckets


class Sparse:
    """A multiset of int64 keys as sorted unique ``keys`` and their ``counts``.

    ``add`` only appends; the pieces are merged when read (or when too many pile up), so a
    batch costs one append and merging happens at most once per query.
    """

    __slots__ = ("_counts", "_keys", "_pending")

    MAX_PENDING = 16

    def __init__(self) -> None:
        self._keys = np.empty(0, np.int64)
        self._counts = np.empty(0, np.int64)
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []

    def add(self, keys: np.ndarray, counts: np.ndarray) -> None:
        if len(keys):
            self._pending.append((keys, counts))
            if len(self._pending) >= self.MAX_PENDING:
                self._compact()

    def add_sparse(self, other: Sparse) -> None:
        keys, counts = other.items()
        self.add(keys, counts)

    def items(self) -> tuple[np.ndarray, np.ndarray]:
        self._compact()
        return self._keys, self._counts

    def __len__(self) -> int:
        return len(self.items()[0])

    def _compact(self) -> None:
        if not self._pending:
            return
        keys, counts = merge([(self._keys, self._counts), *self._pending])
        self._keys, self._counts = keys, counts
        self._pending = []


# Below this key range, counting by bincount over the range beats sorting the keys.
_DENSE_RANGE = 1 << 22


def count_keys(keys: np.ndarray, counts: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique keys and how often each occurs (weighted by ``counts`` if given)."""
    if len(keys) == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    low, high = int(keys.min()), int(keys.max())
    if high - low < max(_DENSE_RANGE, 4 * len(keys)):
        tally = np.bincount(keys - low, weights=counts, minlength=high - low + 1)
        present = np.flatnonzero(tally)
        return present + low, tally[present].astype(np.int64)
    if counts is None:
        return np.unique(keys, return_counts=True)
    unique, inverse = np.unique(keys, return_inverse=True)
    return unique, np.bincount(inverse, weights=counts, minlength=len(unique)).astype(np.int64)


def merge(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Sum several sparse multisets into one."""
    parts = [part for part in parts if len(part[0])]
    if not parts:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    if len(parts) == 1:
        return parts[0]
    return count_keys(np.concatenate([k for k, _ in parts]),
                      np.concatenate([c for _, c in parts]))


def grouped_quantiles(
    keys: np.ndarray, counts: np.ndarray, quantiles: tuple[float, ...]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Quantiles of every (series, metric) distribution in a sparse multiset.

    Returns ``(distributions, totals, values)``: the ``series * METRICS + metric`` numbers
    present, their event counts, and a ``len(distributions) x len(quantiles)`` array of
    values. Quantile ``q`` is the bucket value of the order statistic of rank
    ``ceil(q * total)`` (numpy's "inverted_cdf" definition).
    """
    if len(keys) == 0:
        empty = np.empty(0, np.int64)
        return empty, empty, np.empty((0, len(quantiles)))
    distribution = keys // BLOCK
    buckets = keys % BLOCK
    starts = np.flatnonzero(np.r_[True, distribution[1:] != distribution[:-1]])
    cumulative = np.cumsum(counts)
    before = np.r_[0, cumulative[starts[1:] - 1]]
    ends = np.r_[starts[1:], len(keys)]
    totals = cumulative[ends - 1] - before
    metric = distribution[starts] % METRICS
    values = np.empty((len(starts), len(quantiles)))
    for column, q in enumerate(quantiles):
        rank = np.maximum(1, np.ceil(q * totals - 1e-9))
        index = np.searchsorted(cumulative, before + rank, side="left")
        chosen = buckets[index]
        values[:, column] = np.where(
            metric == QUALITY, quality_bucket_values(chosen), log_bucket_values(chosen)
        )
    return distribution[starts], totals, values
