"""The bucketed distributions: the stated error bound holds against numpy.percentile."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from ai_analytics.daemon.stats import histogram as H

QUANTILES = (0.0, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0)


def rows_of(*columns: np.ndarray, metric: int = H.LATENCY) -> np.ndarray:
    """One histogram row per array of values."""
    rows = np.zeros((len(columns), H.HIST_WIDTH), np.int64)
    to_bucket = H.quality_buckets if metric == H.QUALITY else H.log_buckets
    for row, values in enumerate(columns):
        np.add.at(rows[row], H.OFFSETS[metric] + to_bucket(values), 1)
    return rows


def distributions() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(42)
    fast = rng.lognormal(mean=np.log(20.0), sigma=0.3, size=90_000)
    slow = rng.lognormal(mean=np.log(4000.0), sigma=0.5, size=10_000)
    return {
        "uniform": rng.uniform(1.0, 1000.0, 100_000),
        "lognormal": rng.lognormal(mean=np.log(50.0), sigma=1.0, size=100_000),
        "bimodal with a slow tail": np.concatenate([fast, slow]),
        "1 µs to 1 hour": np.exp(rng.uniform(np.log(1e-3), np.log(3.6e6), 100_000)),
    }


@pytest.mark.parametrize("name", list(distributions()))
def test_latency_quantiles_are_within_one_percent(name):
    """Every quantile is within 1 % of numpy's order statistic of the same rank."""
    values = distributions()[name]
    expected = np.percentile(values, [q * 100 for q in QUANTILES], method="inverted_cdf")
    got = H.row_quantiles(rows_of(values), H.LATENCY, QUANTILES)[0]
    relative = np.abs(got - expected) / expected
    assert H.RELATIVE_ERROR <= 0.01
    assert relative.max() <= H.RELATIVE_ERROR * (1 + 1e-9), relative


def test_each_bucket_value_is_within_the_bound_of_its_whole_range():
    """Any value between 1 µs and 1 h maps to a bucket value within RELATIVE_ERROR of it,
    including the values right at bucket edges."""
    edges = H.LOG_MIN_MS * H.GAMMA ** np.arange(0, H.LOG_BUCKETS - 2)
    probes = np.concatenate([edges, edges * (1 + 1e-12), edges * (1 - 1e-12),
                             edges * np.sqrt(H.GAMMA)])
    probes = probes[(probes >= H.LOG_MIN_MS) & (probes < H.LOG_MAX_MS)]
    represented = H.log_bucket_values(H.log_buckets(probes))
    assert (np.abs(represented - probes) / probes).max() <= H.RELATIVE_ERROR * (1 + 1e-9)


def test_out_of_range_values_land_in_the_edge_buckets():
    """Zero and sub-microsecond latencies read as 0; one hour is still a regular bucket;
    beyond the regular range everything reads as the overflow bucket's lower edge."""
    buckets = H.log_buckets(np.array([0.0, 5e-4, 3.6e6, 1e9]))
    assert buckets.tolist() == [0, 0, H.LOG_BUCKETS - 2, H.LOG_BUCKETS - 1]
    values = H.log_bucket_values(buckets)
    assert values[:2].tolist() == [0.0, 0.0]
    assert abs(values[2] - 3.6e6) / 3.6e6 <= H.RELATIVE_ERROR
    assert H.LOG_MAX_MS <= values[3] == H.LOG_OVERFLOW_MS < H.LOG_MAX_MS * H.GAMMA


def test_quality_quantiles_are_within_half_a_hundredth():
    """Quality scores use 100 linear buckets: absolute error at most 0.005."""
    values = np.random.default_rng(7).beta(8, 2, 50_000)
    expected = np.percentile(values, [q * 100 for q in QUANTILES], method="inverted_cdf")
    got = H.row_quantiles(rows_of(values, metric=H.QUALITY), H.QUALITY, QUANTILES)[0]
    assert np.abs(got - expected).max() <= H.QUALITY_ABSOLUTE_ERROR + 1e-9


def test_rows_are_answered_together_and_empty_rows_are_nan():
    """Each row is its own distribution; a row without counts gives NaN, not zero."""
    rng = np.random.default_rng(3)
    columns = [rng.lognormal(np.log(10.0 * (s + 1)), 0.4, 5000) for s in range(5)]
    rows = np.vstack([rows_of(*columns), np.zeros((1, H.HIST_WIDTH), np.int64)])
    got = H.row_quantiles(rows, H.LATENCY, (0.99,))
    for values, value in zip(columns, got[:5, 0], strict=True):
        truth = np.percentile(values, 99, method="inverted_cdf")
        assert abs(value - truth) / truth <= H.RELATIVE_ERROR * (1 + 1e-9)
    assert np.isnan(got[5, 0])
    assert np.isnan(H.row_quantiles(rows, H.TTFT, (0.5,))).all()


def test_count_keys_counts_exactly_with_and_without_sorting():
    """count_keys gives sorted unique keys and exact counts, dense range or not."""
    keys = np.array([3, 1, 3, 7, 1, 3], np.int64)
    assert [a.tolist() for a in H.count_keys(keys)] == [[1, 3, 7], [2, 3, 1]]
    spread = np.array([5, 10**12, 5], np.int64)  # too wide for a tally: sorted instead
    assert [a.tolist() for a in H.count_keys(spread)] == [[5, 10**12], [2, 1]]


def sparse_of(rows: np.ndarray) -> H.Counts:
    keys = np.flatnonzero(rows)
    return keys.astype(H.KEY_DTYPE), rows.reshape(-1)[keys]


def test_sparse_quantiles_equal_the_dense_ones():
    """Quantiles read from sparse counts (only the buckets hit) are those of the dense rows,
    for every distribution, with NaN for a series without values."""
    rng = np.random.default_rng(11)
    latency = [rng.lognormal(np.log(5.0 * (s + 1)), 0.9, 3000) for s in range(4)]
    rows = rows_of(*latency, np.zeros(0))
    rows += rows_of(*[rng.beta(5, 2, 500) for _ in range(5)], metric=H.QUALITY)
    rows[2] += rows_of(rng.lognormal(3, 0.5, 700), metric=H.TTFT)[0]
    qs = (0.1, 0.5, 0.9, 0.99, 0.999)
    sparse = H.sparse_quantiles(sparse_of(rows), len(rows), qs)
    for metric in (H.LATENCY, H.QUALITY, H.TTFT, H.QUEUE):
        np.testing.assert_array_equal(sparse[metric], H.row_quantiles(rows, metric, qs))


@pytest.mark.parametrize("key_range", [50_000, 1 << 30], ids=["tallied", "sorted"])
def test_merge_counts_sums_parts_exactly(key_range):
    """Merged sparse parts hold every key once, with the exact sum of its counts, whether
    they are tallied over a narrow key range or sorted (counts packed with the keys or
    not)."""
    rng = np.random.default_rng(12)
    expected: collections.Counter[int] = collections.Counter()
    parts = []
    for _ in range(7):
        keys = np.unique(rng.integers(0, key_range, 3000))
        counts = rng.integers(1, 1000, len(keys))
        expected.update(dict(zip(keys.tolist(), counts.tolist(), strict=True)))
        parts.append((keys.astype(H.KEY_DTYPE), counts.astype(np.uint32)))
    keys, counts = H.merge_counts(parts)
    assert keys.dtype == H.KEY_DTYPE
    assert keys.tolist() == sorted(expected)
    assert counts.tolist() == [expected[key] for key in keys.tolist()]
    big = [(np.array([3, 9], H.KEY_DTYPE), np.array([1 << 40, 1], np.int64)),
           (np.array([3], H.KEY_DTYPE), np.array([5], np.int64))]
    assert [a.tolist() for a in H.merge_counts(big)] == [[3, 9], [(1 << 40) + 5, 1]]
