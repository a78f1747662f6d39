"""Since-start counts on fixed bucket edges: the snapshot document's ``"histograms"`` section,
which /metrics exposes as Prometheus histograms.

The daemon keeps log-spaced bucket counts (``histogram``: ratio 1.02 between edges);
``latency_bucket_counts`` turns a series' since-start counts into the cumulative counts of
fixed edges (``BUCKETS_SECONDS``). A log bucket counts toward an edge when its *upper* edge is
at or below it, so a ``le`` count never includes a value above its edge, and misses at most
the values in the one log bucket straddling the edge: values in ``(edge / 1.02, edge]`` (a
value exactly on an edge lands in the next ``le`` up). The counts are therefore exact to
within that 2 % band below each edge. They are computed from a ``StatsCapture``, on any
thread; given the live ``Statistics``, they are computed as of now, on its thread.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ai_analytics.core.document import HistogramRow, HistogramsSection
from ai_analytics.daemon.stats import histogram as H
from ai_analytics.daemon.stats.statistics import Statistics, StatsCapture

# Upper bounds (seconds) of the exported histogram buckets; +Inf is added. Wide enough for
# a sub-millisecond cache hit and an hour-long batch job.
BUCKETS_SECONDS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
)
# Histogram name (its key in the section, and its metric name in /metrics) → (distribution in
# the daemon's bucket rows, its totals' prefix in Statistics).
HISTOGRAMS: dict[str, tuple[int, str]] = {
    "request_duration_seconds": (H.LATENCY, "lat"),
    "time_to_first_token_seconds": (H.TTFT, "ttft"),
    "queue_duration_seconds": (H.QUEUE, "queue"),
}

BucketCounts = tuple[str, str, list[int], int, float]


def latency_bucket_counts(stats: Statistics | StatsCapture, edges_seconds: Sequence[float],
                          metric: int = H.LATENCY) -> list[BucketCounts]:
    """Per series since this daemon started: (operation, model, cumulative count at each edge
    of ``edges_seconds``, count, sum in seconds), in series-id order.

    ``metric`` is ``histogram.LATENCY``, ``TTFT`` or ``QUEUE``. A log bucket counts toward an
    edge when its upper edge is at or below the edge (see the module docstring for the
    error). Given the live ``Statistics``, call it on the thread that feeds it.
    """
    edges = np.asarray(edges_seconds, dtype=np.float64)
    if (edges.ndim != 1 or edges.size == 0 or not np.all(np.isfinite(edges))
            or np.any(edges <= 0) or np.any(np.diff(edges) <= 0)):
        raise ValueError(f"edges must be finite, positive and increasing, got {edges_seconds!r}")
    prefix = next((p for m, p in HISTOGRAMS.values() if m == metric), None)
    if prefix is None:
        raise ValueError(f"no Prometheus histogram for distribution {metric}")
    capture = stats if isinstance(stats, StatsCapture) else stats.view()
    # Upper edge of log bucket i: LOG_MIN_MS * GAMMA**i (bucket 0 ends at LOG_MIN_MS); the
    # overflow bucket has none.
    upper_ms = H.LOG_MIN_MS * np.power(H.GAMMA, np.arange(H.WIDTHS[metric], dtype=np.float64))
    upper_ms[-1] = np.inf
    taken = np.searchsorted(upper_ms, edges * 1000.0, side="right")  # buckets under each edge
    at_edges, totals, sums = capture.since_start_at_edges(metric, taken)
    return [(operation, model, at_edges[sid], totals[sid], sums[sid] / 1000.0)
            for sid, (operation, model) in enumerate(capture.labels)]


def histogram_section(stats: Statistics | StatsCapture,
                      edges_seconds: Sequence[float] = BUCKETS_SECONDS) -> HistogramsSection:
    """The snapshot document's ``"histograms"`` section (JSON-ready): the edges, and per
    histogram the series with data, each with its cumulative counts at the edges, its count
    (the +Inf bucket) and its sum in seconds. Latency lists every series (a series with no
    event since this start shows zeros); TTFT and queue time only series that reported them.
    """
    capture = stats if isinstance(stats, StatsCapture) else stats.view()
    rows: dict[str, list[HistogramRow]] = {
        name: [
            {"operation": operation, "model": model, "buckets": buckets, "count": count,
             "sum": round(total, 9)}
            for operation, model, buckets, count, total
            in latency_bucket_counts(capture, edges_seconds, metric)
            if count or metric == H.LATENCY
        ]
        for name, (metric, _) in HISTOGRAMS.items()
    }
    return {
        "le_seconds": [float(e) for e in edges_seconds],
        "request_duration_seconds": rows["request_duration_seconds"],
        "time_to_first_token_seconds": rows["time_to_first_token_seconds"],
        "queue_duration_seconds": rows["queue_duration_seconds"],
    }


__all__ = ["BUCKETS_SECONDS", "HISTOGRAMS", "histogram_section", "latency_bucket_counts"]
