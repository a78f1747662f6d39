"""The bucketed distributions: the stated error bound holds against numpy.percentile."""

from __future__ import annotations

import numpy as np
import pytest

from ai_analytics.daemon import histogram as H

QUANTILES = (0.0, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0)


def sketch_quantiles(values: np.ndarray, metric: int = H.LATENCY) -> np.ndarray:
    buckets = H.quality_buckets(values) if metric == H.QUALITY else H.log_buckets(values)
    keys, counts = H.count_keys(H.keys_for(np.zeros(len(values), np.int64), metric, buckets))
    groups, totals, result = H.grouped_quantiles(keys, counts, QUANTILES)
    assert groups.tolist() == [metric] and totals.tolist() == [len(values)]
    return result[0]


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
    got = sketch_quantiles(values)
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


def test_quality_quantiles_are_within_half_a_thousandth():
    """Quality scores use linear buckets: absolute error at most 0.0005."""
    values = np.random.default_rng(7).beta(8, 2, 50_000)
    expected = np.percentile(values, [q * 100 for q in QUANTILES], method="inverted_cdf")
    assert np.abs(sketch_quantiles(values, H.QUALITY) - expected).max() <= 0.0005 + 1e-12


def test_many_series_are_answered_in_one_query():
    """Distributions of several series and metrics in one sparse set keep apart."""
    rng = np.random.default_rng(3)
    parts = []
    truth = {}
    for series in range(5):
        values = rng.lognormal(np.log(10.0 * (series + 1)), 0.4, 5000)
        truth[series * H.METRICS + H.LATENCY] = np.percentile(values, 99, method="inverted_cdf")
        keys = H.keys_for(np.full(len(values), series), H.LATENCY, H.log_buckets(values))
        parts.append(H.count_keys(keys))
    keys, counts = H.merge(parts)
    groups, totals, result = H.grouped_quantiles(keys, counts, (0.99,))
    assert totals.tolist() == [5000] * 5
    for group, value in zip(groups.tolist(), result[:, 0], strict=True):
        assert abs(value - truth[group]) / truth[group] <= H.RELATIVE_ERROR * (1 + 1e-9)


def test_sparse_accumulates_across_adds():
    """Sparse keeps exact counts however many pieces it merges."""
    sparse = H.Sparse()
    for _ in range(40):
        sparse.add(*H.count_keys(np.array([3, 1, 3, 7], np.int64)))
    keys, counts = sparse.items()
    assert keys.tolist() == [1, 3, 7] and counts.tolist() == [40, 80, 40]
