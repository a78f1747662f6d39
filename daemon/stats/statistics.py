"""Statistics per (operation, model) series over windows of 10 s, 1 min, 5 min and since
start, from per-second buckets in a bounded ring. Everything is vectorized numpy.

Exact: counts, successes, errors, sums (so means and rates), minimum and maximum, from
per-second totals kept for 300 seconds. Bucketed, with the bound stated in ``histogram``:
latency, time-to-first-token and queue-time percentiles (within 1 %), quality percentiles
(within 0.005), from bucket counts kept at three resolutions: per second for the 10 s window,
per 10 s for the 1 min window, per 30 s for the 5 min window (those windows' percentiles
start on a 10 s or 30 s boundary: they cover 50-60 s and 270-300 s).

Events are placed by their own timestamp (the producer's monotonic clock, which is
system-wide on Linux), so drain delay does not smear them across seconds. Each batch goes to
the ring (for the windows) and to an "interval" accumulator that the daemon closes at every
snapshot (one history row per series per snapshot: every received event is in exactly one
row) and folds into the since-start totals.

Memory depends on the number of series, not on the event rate: per series, 21 totals for
each of 300 seconds (50 KiB) and 26 rows of bucket counts (26 x 13.8 KiB), all allocated and
touched when the series appears, so a daemon's RSS does not creep up under steady load. The
number of series is capped (see ``series``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping

import numpy as np

from ai_analytics.client import _layout as L
from ai_analytics.daemon.stats import histogram as H
from ai_analytics.daemon.stats.series import SeriesRegistry

RING_SECONDS = 300
WINDOWS: tuple[tuple[str, int], ...] = (("10s", 10), ("1m", 60), ("5m", 300))
# Bucket-count rings: (slot length in seconds, slots), one per window.
BUCKET_RINGS = {"10s": (1, 10), "1m": (10, 6), "5m": (30, 10)}
PERCENTILES: tuple[tuple[str, float], ...] = (
    ("p50", 0.5), ("p90", 0.9), ("p95", 0.95), ("p99", 0.99), ("p999", 0.999),
)
_QS = tuple(q for _, q in PERCENTILES)
_QUALITY_P10 = 0.1

SUM_FIELDS = (
    "count", "successes", "lat_sum", "q_count", "q_sum", "cache_lookups", "cache_hits",
    "ttft_count", "ttft_sum", "queue_count", "queue_sum", "tokens_in", "tokens_out",
)
MIN_FIELDS = ("lat_min", "q_min", "ttft_min", "queue_min")
MAX_FIELDS = ("lat_max", "q_max", "ttft_max", "queue_max")
FIELDS = SUM_FIELDS + MIN_FIELDS + MAX_FIELDS


def _blank(shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    arrays = {f: np.full(shape, 0.0) for f in SUM_FIELDS}  # written, so resident (see _touched)
    arrays.update({f: np.full(shape, np.inf) for f in MIN_FIELDS})
    arrays.update({f: np.full(shape, -np.inf) for f in MAX_FIELDS})
    return arrays


def _grow(arrays: dict[str, np.ndarray], capacity: int) -> dict[str, np.ndarray]:
    """The same arrays with their last axis widened to ``capacity`` series."""
    old = next(iter(arrays.values())).shape
    grown = _blank((*old[:-1], capacity))
    for name, array in arrays.items():
        grown[name][..., : old[-1]] = array
    return grown


def _combine(into: dict[str, np.ndarray], part: dict[str, np.ndarray]) -> None:
    width = next(iter(part.values())).shape[-1]
    for f in SUM_FIELDS:
        into[f][..., :width] += part[f]
    for f in MIN_FIELDS:
        np.minimum(into[f][..., :width], part[f], out=into[f][..., :width])
    for f in MAX_FIELDS:
        np.maximum(into[f][..., :width], part[f], out=into[f][..., :width])


def _touched(shape: tuple[int, ...], dtype: type) -> np.ndarray:
    """Zeros that are resident now: np.zeros alone maps pages lazily, so RSS would creep up
    as slots are first written, and look like a leak."""
    array: np.ndarray = np.empty(shape, dtype)
    array.fill(0)
    return array


def _grow_rows(array: np.ndarray, capacity: int, axis: int) -> np.ndarray:
    shape = list(array.shape)
    shape[axis] = capacity
    grown = _touched(tuple(shape), array.dtype.type)
    grown[tuple(slice(0, n) for n in array.shape)] = array
    return grown


class Accumulator:
    """Totals and bucket counts per series: the interval, and since start."""

    def __init__(self, capacity: int) -> None:
        self.arrays = _blank((capacity,))
        self.buckets = _touched((capacity, H.HIST_WIDTH), np.int64)

    def grow(self, capacity: int) -> None:
        self.arrays = _grow(self.arrays, capacity)
        self.buckets = _grow_rows(self.buckets, capacity, 0)

    def add_buckets(self, keys: np.ndarray, counts: np.ndarray) -> None:
        self.buckets.reshape(-1)[keys] += counts  # keys are unique: a plain scatter-add

    def add_accumulator(self, other: Accumulator) -> None:
        _combine(self.arrays, other.arrays)
        self.buckets += other.buckets

    def reset(self) -> None:
        self.arrays = _blank((len(self.buckets),))
        self.buckets.fill(0)


class BucketRing:
    """Bucket counts per series in ``slots`` time slots of ``resolution`` seconds."""

    def __init__(self, resolution: int, slots: int, capacity: int) -> None:
        self.resolution = resolution
        self.period = np.full(slots, -1, np.int64)  # which period (second // resolution)
        self.counts = _touched((slots, capacity, H.HIST_WIDTH), np.uint32)

    def grow(self, capacity: int) -> None:
        self.counts = _grow_rows(self.counts, capacity, 1)

    def add(self, second: int, keys: np.ndarray, counts: np.ndarray) -> None:
        period = second // self.resolution
        index = period % len(self.period)
        if self.period[index] < period:
            self.period[index] = period
            self.counts[index] = 0
        elif self.period[index] > period:
            return  # older than the ring: only since-start keeps it
        self.counts[index].reshape(-1)[keys] += counts.astype(np.uint32)

    def window(self, now: int, seconds: int) -> np.ndarray:
        """Counts summed over the slots whose period overlaps (now - seconds, now]."""
        last = now // self.resolution
        first = (now - seconds + 1) // self.resolution
        chosen = (self.period >= first) & (self.period <= last)
        return self.counts[chosen].sum(axis=0, dtype=np.int64)


class SecondRing:
    """Per-second totals for the last RING_SECONDS seconds, and a bucket ring per window."""

    def __init__(self, capacity: int) -> None:
        self.second = np.full(RING_SECONDS, -1, np.int64)  # which second each slot holds
        self.arrays = _blank((RING_SECONDS, capacity))
        self.buckets = {name: BucketRing(resolution, slots, capacity)
                        for name, (resolution, slots) in BUCKET_RINGS.items()}

    def grow(self, capacity: int) -> None:
        self.arrays = _grow(self.arrays, capacity)
        for ring in self.buckets.values():
            ring.grow(capacity)

    def add(self, second: int, arrays: dict[str, np.ndarray], keys: np.ndarray,
            counts: np.ndarray) -> None:
        index = second % RING_SECONDS
        if self.second[index] != second:
            self.second[index] = second
            for name, array in self.arrays.items():
                array[index] = 0.0 if name in SUM_FIELDS else (
                    np.inf if name in MIN_FIELDS else -np.inf)
        _combine({f: a[index] for f, a in self.arrays.items()}, arrays)
        for ring in self.buckets.values():
            ring.add(second, keys, counts)

    def window(self, name: str, now: int, seconds: int
               ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Totals over the seconds (now - seconds, now]; bucket counts over the slots of the
        window's own bucket ring that overlap them."""
        chosen = (self.second > now - seconds) & (self.second <= now)
        totals = {f: a[chosen].sum(axis=0) for f, a in self.arrays.items() if f in SUM_FIELDS}
        totals.update({f: self.arrays[f][chosen].min(axis=0, initial=np.inf)
                       for f in MIN_FIELDS})
        totals.update({f: self.arrays[f][chosen].max(axis=0, initial=-np.inf)
                       for f in MAX_FIELDS})
        return totals, self.buckets[name].window(now, seconds)


class Statistics:
    """The daemon's statistics engine; ``clock`` is injectable (monotonic seconds)."""

    def __init__(self, max_operations: int, max_models: int, max_series: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.registry = SeriesRegistry(max_operations, max_models, max_series)
        self.capacity = 16
        self.ring = SecondRing(self.capacity)
        self.interval = Accumulator(self.capacity)
        self.since_start = Accumulator(self.capacity)
        self.all_time = np.zeros(self.capacity, np.int64)  # survives restarts (state file)
        self.started = int(clock())
        self.interval_started = clock()

    # -- input -----------------------------------------------------------------------------
    def add(self, records: np.ndarray, op_names: np.ndarray, model_names: np.ndarray) -> None:
        """Count one batch of valid operation records (kinds 0 and 1)."""
        if len(records) == 0:
            return
        sids = self.registry.series_ids(op_names, model_names)
        self._ensure_capacity(len(self.registry))
        width = self.capacity
        now = int(self.clock())
        seconds = np.minimum(records["ts_ns"] // 1_000_000_000, now).astype(np.int64)
        distinct, local = _seconds_index(seconds)
        arrays, keys, counts = _reduce(records, sids, local, len(distinct), width)
        span = width * H.HIST_WIDTH
        bounds = np.searchsorted(keys, np.arange(len(distinct) + 1) * span)
        total = _blank((width,))
        for position, second in enumerate(distinct.tolist()):
            part = {f: a[position] for f, a in arrays.items()}
            part_keys = keys[bounds[position] : bounds[position + 1]] - position * span
            part_counts = counts[bounds[position] : bounds[position + 1]]
            _combine(total, part)
            if second > now - RING_SECONDS:
                self.ring.add(second, part, part_keys, part_counts)
            self.interval.add_buckets(part_keys, part_counts)
        _combine(self.interval.arrays, total)
        self.all_time += total["count"].astype(np.int64)

    def _ensure_capacity(self, needed: int) -> None:
        if needed <= self.capacity:
            return
        capacity = max(needed, 2 * self.capacity)
        for store in (self.ring, self.interval, self.since_start):
            store.grow(capacity)
        self.all_time = np.concatenate([self.all_time, np.zeros(capacity - self.capacity,
                                                                 np.int64)])
        self.capacity = capacity

    def restore(self, rows: Iterable[Mapping[str, object]], overflow: Mapping[str, object]
                ) -> None:
        """Resume the all-time counts per series and the names refused at the cardinality caps
        that an earlier daemon saved (its "operations" and "restore.cardinality_overflow")."""
        self.registry.overflow.update({k: int(str(v)) for k, v in overflow.items()})
        for row in rows:
            op = np.array([self.registry.name_id(str(row["operation"]))])
            model = np.array([self.registry.name_id(str(row["model"]))])
            sid = int(self.registry.series_ids(op, model)[0])
            self._ensure_capacity(len(self.registry))
            self.all_time[sid] += int(row["count"])  # type: ignore[call-overload]

    # -- output ----------------------------------------------------------------------------
    def capture(self) -> StatsCapture:
        """Close the current interval (every received event is in exactly one interval's
        rows) and freeze what the windows need as of now. Call it on the thread that calls
        ``add``; the capture's methods may then run on any thread while ``add`` goes on."""
        return self._freeze(close=True)

    def view(self) -> StatsCapture:
        """A capture that leaves the interval open: its ``interval()`` is empty."""
        return self._freeze(close=False)

    def _freeze(self, close: bool) -> StatsCapture:
        now = self.clock()
        operations = self._operations(now)
        histograms = {metric: self._since_rows(metric) for metric in (H.LATENCY, H.TTFT, H.QUEUE)}
        interval = self._close_interval(now) if close else (0.0, [])
        registry = self.registry
        return StatsCapture(
            now=now, operations=operations, interval=interval,
            cardinality=self.cardinality(), overflow=dict(registry.overflow),
            labels=[registry.label(sid) for sid in range(len(registry))],
            names=dict(registry.names), histograms=histograms)

    def _since_rows(self, metric: int) -> tuple[np.ndarray, np.ndarray]:
        """Since-start bucket counts of one distribution ([series, width]) and its sums."""
        series = len(self.registry)
        columns = slice(H.OFFSETS[metric], H.OFFSETS[metric] + H.WIDTHS[metric])
        prefix = _PREFIX[metric]
        rows = self.since_start.buckets[:series, columns] + self.interval.buckets[:series, columns]
        sums = (self.since_start.arrays[f"{prefix}_sum"][:series]
                + self.interval.arrays[f"{prefix}_sum"][:series])
        return rows, sums

    def operations(self) -> list[dict[str, object]]:
        """Every series with its all-time count and its statistics per window, as of now
        (the interval stays open)."""
        return self.view().operations()

    def _operations(self, clock_now: float) -> list[dict[str, object]]:
        now = int(clock_now)
        uptime = max(1, now - self.started + 1)
        windows = {}
        for name, seconds in WINDOWS:
            arrays, buckets = self.ring.window(name, now, seconds)
            windows[name] = _describe(arrays, buckets, min(seconds, uptime), len(self.registry))
        since = Accumulator(self.capacity)
        since.add_accumulator(self.since_start)
        since.add_accumulator(self.interval)
        windows["since_start"] = _describe(since.arrays, since.buckets,
                                           max(clock_now - self.started, 1.0),
                                           len(self.registry))
        rows: list[dict[str, object]] = []
        # Most events first; a stable sort keeps series of equal counts in series-id order.
        for sid in sorted(range(len(self.registry)), key=lambda sid: -int(self.all_time[sid])):
            operation, model = self.registry.label(sid)
            rows.append({
                "operation": operation, "model": model, "count": int(self.all_time[sid]),
                "windows": {name: stats[sid] for name, stats in windows.items()},
            })
        return rows

    def close_interval(self) -> tuple[float, list[dict[str, object]]]:
        """Statistics of every series since the last call, then fold them into since-start.

        Returns (interval length in seconds, [{operation, model, stats}]) for series with
        events in the interval.
        """
        return self.capture().interval()

    def _close_interval(self, now: float) -> tuple[float, list[dict[str, object]]]:
        span = max(now - self.interval_started, 1e-3)
        described = _describe(self.interval.arrays, self.interval.buckets, span,
                              len(self.registry))
        rows: list[dict[str, object]] = []
        for sid in np.flatnonzero(self.interval.arrays["count"][: len(self.registry)]):
            operation, model = self.registry.label(int(sid))
            rows.append({"operation": operation, "model": model, "stats": described[int(sid)]})
        self.since_start.add_accumulator(self.interval)
        self.interval.reset()
        self.interval_started = now
        return span, rows

    def cardinality(self) -> dict[str, object]:
        registry = self.registry
        return {
            "operations": len(registry.operations) - 1, "models": len(registry.models) - 2,
            "series": len(registry), "max_operations": registry.max_operations,
            "max_models": registry.max_models, "max_series": registry.max_series,
            "overflow_events": dict(registry.overflow),
        }


_PREFIX = {H.LATENCY: "lat", H.TTFT: "ttft", H.QUEUE: "queue", H.QUALITY: "q"}


class StatsCapture:
    """The statistics as of one ``Statistics.capture()``: immutable, so its methods may run on
    any thread while the engine goes on adding batches."""

    def __init__(self, now: float, operations: list[dict[str, object]],
                 interval: tuple[float, list[dict[str, object]]],
                 cardinality: dict[str, object], overflow: dict[str, int],
                 labels: list[tuple[str, str]], names: dict[str, int],
                 histograms: dict[int, tuple[np.ndarray, np.ndarray]]) -> None:
        self.now = now  # the engine's clock at the capture
        self._operations = operations
        self._interval = interval
        self._cardinality = cardinality
        self.overflow = overflow  # events redirected at each cap, as of the capture
        self.labels = labels  # series id → (operation, model)
        self.names = names  # name → daemon-wide name id (model_summary's lookup)
        self._histograms = histograms

    def operations(self) -> list[dict[str, object]]:
        """Every series with its all-time count and statistics per window (10 s, 1 min,
        5 min, since start), most events first."""
        return self._operations

    def interval(self) -> tuple[float, list[dict[str, object]]]:
        """(length in seconds, [{operation, model, stats}]) of the interval this capture
        closed, for the series with events in it."""
        return self._interval

    def cardinality(self) -> dict[str, object]:
        return self._cardinality

    def since_start_at_edges(self, metric: int, taken: np.ndarray
                             ) -> tuple[list[list[int]], list[int], list[float]]:
        """Per series (series-id order), since start, for one distribution: the cumulative
        count of its first ``taken[i]`` log buckets for each i, its count, and the sum of
        its values (ms)."""
        rows, sums = self._histograms[metric]
        cumulative = np.zeros((len(rows), rows.shape[1] + 1), np.int64)
        np.cumsum(rows, axis=1, out=cumulative[:, 1:])
        return cumulative[:, taken].tolist(), cumulative[:, -1].tolist(), sums.tolist()


def _seconds_index(seconds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct seconds of a batch and each record's index among them. A batch spans a
    second or two, so an offset from the first second replaces a sort."""
    first, last = int(seconds.min()), int(seconds.max())
    if last - first < 64:
        local = seconds - first
        present = np.flatnonzero(np.bincount(local, minlength=last - first + 1))
        if len(present) == last - first + 1:
            return np.arange(first, last + 1), local
        remap = np.zeros(last - first + 1, np.int64)
        remap[present] = np.arange(len(present))
        return present + first, remap[local]
    return np.unique(seconds, return_inverse=True)


def _reduce(records: np.ndarray, sids: np.ndarray, local: np.ndarray, seconds: int,
            width: int) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Per (second, series) totals as [seconds, width] arrays, and the bucket counts with
    keys offset by second (second * width * METRICS * BLOCK + key)."""
    index = local * width + sids
    size = seconds * width
    arrays = _blank((size,))

    def total(name: str, at: np.ndarray, values: np.ndarray | None = None) -> None:
        arrays[name] = np.bincount(at, weights=values, minlength=size).astype(np.float64)

    def extremes(prefix: str, at: np.ndarray, values: np.ndarray) -> None:
        np.minimum.at(arrays[f"{prefix}_min"], at, values)
        np.maximum.at(arrays[f"{prefix}_max"], at, values)

    # Contiguous copies: ufunc.at on a strided field of the record array is 20x slower.
    latency = np.ascontiguousarray(records["latency_ms"])
    total("count", index)
    total("successes", index, records["success"].astype(np.float64))
    total("lat_sum", index, latency)
    extremes("lat", index, latency)
    quality = _widen(records["quality"])
    has_quality = ~np.isnan(quality)
    q_at, q_values = index[has_quality], quality[has_quality]
    total("q_count", q_at)
    total("q_sum", q_at, q_values)
    extremes("q", q_at, q_values)
    cache = records["cache_hit"]
    total("cache_lookups", index[cache != L.CACHE_ABSENT])
    total("cache_hits", index[cache == L.CACHE_HIT])
    # Key of (second, series, bucket of a metric): base + the metric's offset + bucket.
    base = local * (width * H.HIST_WIDTH) + sids * H.HIST_WIDTH
    keys = [base + H.OFFSETS[H.LATENCY] + H.log_buckets(latency),
            base[has_quality] + H.OFFSETS[H.QUALITY] + H.quality_buckets(q_values)]
    extended = np.flatnonzero(records["kind"] == L.KIND_EXTENDED)
    if len(extended):  # the LLM fields, only over the records that carry them
        sub, sub_index, sub_base = records[extended], index[extended], base[extended]
        for metric, field, prefix in ((H.TTFT, "ttft_ms", "ttft"), (H.QUEUE, "queue_ms", "queue")):
            values = _widen(sub[field])
            present = ~np.isnan(values)
            at, values = sub_index[present], values[present]
            total(f"{prefix}_count", at)
            total(f"{prefix}_sum", at, values)
            extremes(prefix, at, values)
            keys.append(sub_base[present] + H.OFFSETS[metric] + H.log_buckets(values))
        for field in ("tokens_in", "tokens_out"):
            values = sub[field]
            present = values != L.TOKENS_ABSENT
            total(field, sub_index[present], values[present].astype(np.float64))
    unique, counts = H.count_keys(np.concatenate(keys))
    shaped = {f: a.reshape(seconds, width) for f, a in arrays.items()}
    return shaped, unique, counts


def _widen(values: np.ndarray) -> np.ndarray:
    """float32 to float64. A signaling NaN (absent, as a writer may store it) widens to a quiet
    one; numpy would warn "invalid value" for each such batch."""
    with np.errstate(invalid="ignore"):
        return values.astype(np.float64)


def _describe(arrays: dict[str, np.ndarray], buckets: np.ndarray, span: float, series: int
              ) -> list[dict[str, object]]:
    """One stats dict per series (index = series id) from totals, bucket counts and a span."""
    rows = buckets[:series]
    quantiles = {metric: H.row_quantiles(rows, metric, _QS).tolist()
                 for metric in (H.LATENCY, H.TTFT, H.QUEUE)}
    quantiles[H.QUALITY] = H.row_quantiles(rows, H.QUALITY, (_QUALITY_P10,)).tolist()
    columns = {f: a[:series].tolist() for f, a in arrays.items()}
    return [_series_stats(columns, sid, quantiles, span) for sid in range(series)]


def _series_stats(c: dict[str, list[float]], sid: int, quantiles: dict[int, list[list[float]]],
                  span: float) -> dict[str, object]:
    count = int(c["count"][sid])
    successes = int(c["successes"][sid])

    def clamp(value: float, low: float, high: float) -> float | None:
        # Into the exact [min, max]: exact at the ends, never outside the data.
        return None if math.isnan(value) else _round(min(max(value, low), high))

    def distribution(metric: int, prefix: str, n: float) -> dict[str, object]:
        low, high = c[f"{prefix}_min"][sid], c[f"{prefix}_max"][sid]
        out: dict[str, object] = {
            "mean": _round(c[f"{prefix}_sum"][sid] / n) if n else None,
            "min": _round(low) if n else None, "max": _round(high) if n else None,
        }
        found = quantiles[metric][sid]
        for column, (name, _) in enumerate(PERCENTILES):
            out[name] = clamp(found[column], low, high) if n else None
        return out

    quality_n = c["q_count"][sid]
    lookups = int(c["cache_lookups"][sid])
    ttft_n, queue_n = c["ttft_count"][sid], c["queue_count"][sid]
    tokens_in, tokens_out = int(c["tokens_in"][sid]), int(c["tokens_out"][sid])
    return {
        "count": count, "successes": successes, "errors": count - successes,
        "error_rate": _round(1 - successes / count) if count else None,
        "throughput_per_s": _round(count / span),
        "latency_ms": distribution(H.LATENCY, "lat", count),
        "quality": {
            "count": int(quality_n),
            "mean": _round(c["q_sum"][sid] / quality_n) if quality_n else None,
            "min": _round(c["q_min"][sid]) if quality_n else None,
            "p10": clamp(quantiles[H.QUALITY][sid][0], c["q_min"][sid], c["q_max"][sid])
            if quality_n else None,
        },
        "cache": {"lookups": lookups, "hits": int(c["cache_hits"][sid]),
                  "hit_rate": _round(c["cache_hits"][sid] / lookups) if lookups else None},
        "ttft_ms": {"count": int(ttft_n), **distribution(H.TTFT, "ttft", ttft_n)},
        "queue_ms": {"count": int(queue_n), **distribution(H.QUEUE, "queue", queue_n)},
        "tokens": {"in_total": tokens_in, "out_total": tokens_out,
                   "in_per_s": _round(tokens_in / span), "out_per_s": _round(tokens_out / span)},
    }


def _round(value: float) -> float:
    return round(float(value), 6)
