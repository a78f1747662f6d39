"""Per-series figures from totals and sparse bucket counts: the stats dict of each series
(counts, rates, means, extremes, percentiles), built column by column with numpy; Python only
assembles the dicts."""

from __future__ import annotations

import numpy as np

from ai_analytics.daemon.stats import histogram as H

PERCENTILES: tuple[tuple[str, float], ...] = (
    ("p50", 0.5), ("p90", 0.9), ("p95", 0.95), ("p99", 0.99), ("p999", 0.999),
)
_QS = tuple(q for _, q in PERCENTILES)
_QUALITY_P10 = 0.1
# The prefix of a distribution's fields in the totals.
PREFIX = {H.LATENCY: "lat", H.TTFT: "ttft", H.QUEUE: "queue", H.QUALITY: "q"}


def _optional(values: np.ndarray, present: np.ndarray) -> list[float | None]:
    """Values rounded to 6 decimals, None where not ``present``."""
    absent = np.flatnonzero(~present).tolist()
    if len(absent) * 2 > len(values):
        out: list[float | None] = [None] * len(values)
        for index, value in zip(np.flatnonzero(present).tolist(),
                                np.round(values[present], 6).tolist(), strict=True):
            out[index] = value
        return out
    out = np.round(values, 6).tolist()
    for index in absent:
        out[index] = None
    return out


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio: np.ndarray = a / b
    return ratio


def _distributions(c: dict[str, np.ndarray], found: np.ndarray, prefix: str, n: np.ndarray,
                   count: bool) -> list[dict[str, object]]:
    """Mean, min, max and percentiles per series; percentiles clamped into the exact
    [min, max] (exact at the ends, never outside the data); None without values."""
    has = n > 0
    if not has.all():  # the series without values (no LLM fields, say) share one shape
        out: list[dict[str, object]] = list(map(dict.copy, [_NO_COUNT if count else _NO_VALUES]
                                                * len(n)))
        chosen = np.flatnonzero(has)
        if len(chosen):
            for index, value in zip(chosen.tolist(), _distributions(
                    {f: a[chosen] for f, a in c.items() if f.startswith(prefix)},
                    found[chosen], prefix, n[chosen], count), strict=True):
                out[index] = value
        return out
    low, high = c[f"{prefix}_min"], c[f"{prefix}_max"]
    clamped = np.minimum(np.maximum(found, low[:, None]), high[:, None])
    present = ~np.isnan(found)
    columns = [np.round(c[f"{prefix}_sum"] / n, 6).tolist(), np.round(low, 6).tolist(),
               np.round(high, 6).tolist(),
               *(_optional(clamped[:, k], present[:, k]) for k in range(len(PERCENTILES)))]
    if count:
        return [{"count": k, "mean": a, "min": b, "max": d, "p50": e, "p90": f, "p95": g,
                 "p99": h, "p999": i}
                for k, a, b, d, e, f, g, h, i in zip(n.astype(np.int64).tolist(), *columns,
                                                     strict=True)]
    return [{"mean": a, "min": b, "max": d, "p50": e, "p90": f, "p95": g, "p99": h, "p999": i}
            for a, b, d, e, f, g, h, i in zip(*columns, strict=True)]


_NO_VALUES: dict[str, object] = {"mean": None, "min": None, "max": None,
                                 **{name: None for name, _ in PERCENTILES}}
_NO_COUNT: dict[str, object] = {"count": 0, **_NO_VALUES}


def _no_events(span: float) -> dict[str, object]:
    """The stats of a series without events in the span."""
    return {
        "count": 0, "successes": 0, "errors": 0, "error_rate": None, "throughput_per_s": 0.0,
        "latency_ms": dict(_NO_VALUES),
        "quality": {"count": 0, "mean": None, "min": None, "p10": None},
        "cache": {"lookups": 0, "hits": 0, "hit_rate": None},
        "ttft_ms": dict(_NO_COUNT), "queue_ms": dict(_NO_COUNT),
        "tokens": {"in_total": 0, "out_total": 0, "in_per_s": 0.0, "out_per_s": 0.0},
    }


def describe(totals: dict[str, np.ndarray], blocks: list[H.Counts], span: float,
              sids: np.ndarray) -> list[dict[str, object]]:
    """One stats dict per series of ``sids`` (in that order) from totals (indexed by series
    id), sparse bucket counts (in pieces by series) and a span in seconds. Built column by
    column: numpy computes every figure, Python only assembles the dicts."""
    if len(sids) == 0:
        return []
    active = totals["count"][sids] > 0
    if not active.all():
        described = iter(describe(totals, blocks, span, sids[active]))
        return [next(described) if busy else _no_events(span) for busy in active.tolist()]
    series = int(sids.max()) + 1
    c = {f: a[sids] for f, a in totals.items()}

    every = np.full((len(H.WIDTHS), series, len(_QS) + 1), np.nan)
    for block in blocks:
        H.sparse_quantiles(block, series, (*_QS, _QUALITY_P10), out=every)
    every = every[:, sids]

    def found(metric: int, quantiles: tuple[float, ...]) -> np.ndarray:
        return every[metric, :, :len(_QS)] if quantiles == _QS else every[metric, :, len(_QS):]

    count, successes = c["count"], c["successes"]
    has = count > 0
    latency = _distributions(c, found(H.LATENCY, _QS), "lat", count, count=False)
    ttft = _distributions(c, found(H.TTFT, _QS), "ttft", c["ttft_count"], count=True)
    queue = _distributions(c, found(H.QUEUE, _QS), "queue", c["queue_count"], count=True)
    quality_n = c["q_count"]
    has_quality = quality_n > 0
    p10 = found(H.QUALITY, (_QUALITY_P10,))[:, 0]
    p10 = np.minimum(np.maximum(p10, c["q_min"]), c["q_max"])
    lookups = c["cache_lookups"]
    quality = [{"count": k, "mean": a, "min": b, "p10": d} for k, a, b, d in zip(
        quality_n.astype(np.int64).tolist(), _optional(_ratio(c["q_sum"], quality_n), has_quality),
        _optional(c["q_min"], has_quality), _optional(p10, has_quality & ~np.isnan(p10)),
        strict=True)]
    cache = [{"lookups": k, "hits": h, "hit_rate": r} for k, h, r in zip(
        lookups.astype(np.int64).tolist(), c["cache_hits"].astype(np.int64).tolist(),
        _optional(_ratio(c["cache_hits"], lookups), lookups > 0), strict=True)]
    tokens = [{"in_total": a, "out_total": b, "in_per_s": d, "out_per_s": e} for a, b, d, e in zip(
        c["tokens_in"].astype(np.int64).tolist(), c["tokens_out"].astype(np.int64).tolist(),
        np.round(c["tokens_in"] / span, 6).tolist(), np.round(c["tokens_out"] / span, 6).tolist(),
        strict=True)]
    return [
        {"count": n, "successes": s, "errors": n - s, "error_rate": rate, "throughput_per_s": per_s,
         "latency_ms": lat, "quality": q, "cache": cached, "ttft_ms": first, "queue_ms": queued,
         "tokens": tok}
        for n, s, rate, per_s, lat, q, cached, first, queued, tok in zip(
            count.astype(np.int64).tolist(), successes.astype(np.int64).tolist(),
            _optional(1 - _ratio(successes, count), has), np.round(count / span, 6).tolist(),
            latency, quality, cache, ttft, queue, tokens, strict=True)
    ]
