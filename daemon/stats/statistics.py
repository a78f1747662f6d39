"""Statistics per (operation, model) series over windows of 10 s, 1 min, 5 min and since
start, from per-second totals and sparse bucket counts in bounded rings. Vectorized numpy.

Exact: counts, successes, errors, sums (so means and rates), minimum and maximum, from
per-second totals kept for 300 seconds. Bucketed, with the bound stated in ``histogram``:
latency, time-to-first-token and queue-time percentiles (within 1 %), quality percentiles
(within 0.005), from bucket counts kept at three resolutions: per second for the 10 s window,
per 10 s for the 1 min window, per 30 s for the 5 min window (those windows' percentiles
start on a 10 s or 30 s boundary: they cover 50-60 s and 270-300 s).

Events are placed by their own timestamp (the producer's monotonic clock, which is
system-wide on Linux), so drain delay does not smear them across seconds. Each batch goes to
the rings (for the windows) and to an "interval" that each ``capture()`` closes (one history
row per series per snapshot: every received event is in exactly one row) and folds into the
since-start totals.

Threads: ``add`` and ``capture`` run on one thread (the daemon's drain loop); a
``StatsCapture`` answers on any other thread while ``add`` goes on. Everything a capture
holds is immutable once captured: bucket counts are immutable sparse parts that the engine
only ever replaces, never changes; the per-second totals are blocks of 10 seconds that the
engine copies before its first write after a capture (copy on write). So a capture costs
references and a few per-series arrays, and its answers are those of its moment.

The drain must never pause for long (a busy lane fills in tens of milliseconds), so no merge
of bucket counts runs all at once on its thread: closing a second, compacting a ring slot,
the interval or the since-start parts are each a ``merging.Merge`` that the engine steps
a few milliseconds per batch and adopts where its parts are still there. A second stays
open (windows read its parts) until its merge is done.

The per-second totals are ``totals``'s, the stats dict of a series is built by ``describe``.

Memory per series, not per event rate: the per-second totals take 60 bytes per series and
second (18 KiB for 300 s), plus 56 bytes for a series that reports time to first token, queue
time or tokens (the LLM columns exist only for those); bucket counts take 6 bytes per bucket
hit in each time slot (8 where a slot's count passes 65535; a series whose latency spans a
factor of 100 touches at most ~230 log buckets per slot), nothing for buckets never hit.
The totals are allocated and touched when a series appears, so RSS does not creep up under
steady load. The number of series is capped (see ``series``).

``operations()`` reuses what the previous one computed (``OperationsCache``): the totals of each
whole block of seconds (frozen blocks never change), and each window's summed bucket counts (the
since-start counts too), which it updates by the parts that came and went rather than summing
the window afresh (parts the engine merged into one meanwhile count as unchanged: ``lineage``).
At 1,024 busy series that is ~9 KiB per series: ~3 KiB of block totals (88 bytes per series and
block, 80 more per LLM series) and ~6 KiB of window sums (6 bytes per bucket hit in the window).
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from functools import partial

import numpy as np

from ai_analytics.client import _layout as L
from ai_analytics.daemon.stats import histogram as H
from ai_analytics.daemon.stats.describe import PREFIX, describe
from ai_analytics.daemon.stats.lineage import Lineage, signature
from ai_analytics.daemon.stats.merging import Merge, Merger, replace_run
from ai_analytics.daemon.stats.series import SeriesRegistry
from ai_analytics.daemon.stats.totals import (
    RING_SECONDS,
    BlockFold,
    Folds,
    TotalsBlock,
    TotalsRing,
    blank,
    combine,
    combined,
    grow,
    window_totals,
)

WINDOWS: tuple[tuple[str, int], ...] = (("10s", 10), ("1m", 60), ("5m", 300))
SINCE_START = "since_start"
# Bucket-count rings: (slot length in seconds, slots), one per window.
BUCKET_RINGS = {"10s": (1, 10), "1m": (10, 6), "5m": (30, 10)}
# A slot's parts are merged into one when this many have arrived: bounds the parts a window
# reads, and the memory of many small parts. The merger does it between batches; a list that
# reaches LIMIT_PARTS while its merge still waits has it finished at once.
COMPACT_PARTS = 10
LIMIT_PARTS = 4 * COMPACT_PARTS
# A second whose merge is still waiting this long after it is over has it done at once: a
# window reads an open second's parts even where a newer second will reuse its ring slot,
# which a second 50 s newer does in the 1 min ring.
CLOSE_WITHIN_SECONDS = 30
# Parts of since-start counts beyond which the engine merges the newest half itself (normally
# a capture merges them all on its own thread and the engine adopts the result).
SINCE_PARTS_LIMIT = 64


class SparseSlot:
    __slots__ = ("merging", "parts", "period")

    def __init__(self) -> None:
        self.period = -1
        self.parts: list[H.Counts] = []
        self.merging: Merge | None = None  # the compaction of its parts under way


class SparseRing:
    """Bucket counts of every series in ``slots`` time slots of ``resolution`` seconds, each
    slot a list of immutable sparse parts (one per second, merged every COMPACT_PARTS by the
    merger; at LIMIT_PARTS at once)."""

    def __init__(self, resolution: int, slots: int, merger: Merger) -> None:
        self.resolution = resolution
        self.slots = [SparseSlot() for _ in range(slots)]
        self.merger = merger

    def add(self, second: int, part: H.Counts) -> None:
        period = second // self.resolution
        slot = self.slots[period % len(self.slots)]
        if slot.period < period:
            slot.period, slot.parts, slot.merging = period, [part], None
        elif slot.period == period:  # an older period is past the ring: since-start keeps it
            slot.parts.append(part)
            if slot.merging is not None and len(slot.parts) >= LIMIT_PARTS:
                self.merger.finish(slot.merging)
            if slot.merging is None and len(slot.parts) >= COMPACT_PARTS:
                slot.merging = Merge(slot.parts, None, lambda merge: _compacted(slot, merge))
                self.merger.submit(slot.merging)

    def freeze(self) -> tuple[tuple[int, tuple[H.Counts, ...]], ...]:
        return tuple((slot.period, tuple(slot.parts)) for slot in self.slots)


def _compacted(slot: SparseSlot, merge: Merge) -> None:
    """A slot's compaction is done: its parts, if still there, give way to their sum."""
    if slot.merging is merge:
        slot.merging = None
        assert merge.result is not None
        replace_run(slot.parts, merge.parts, merge.result)


class OpenSecond:
    """The bucket counts of a second still receiving events: one part per batch, merged
    when the second is closed. ``split``: the parts before it belong to an interval that a
    capture already closed."""

    __slots__ = ("closing", "closing_split", "parts", "split")

    def __init__(self) -> None:
        self.parts: list[H.Counts] = []
        self.split = 0
        # Once it is over: the merges of its parts before ``split`` (if any) and after it (the
        # last), and ``split`` then: the interval takes the second merge's sum, not raw parts.
        self.closing: tuple[Merge, ...] = ()
        self.closing_split = 0


def _kept(merge: Merge) -> None:
    """A merge whose result its owner reads when it needs it."""


def _window_counts(resolution: int, slots: tuple[tuple[int, tuple[H.Counts, ...]], ...],
                   open_seconds: tuple[tuple[int, tuple[H.Counts, ...]], ...], now: int,
                   seconds: int) -> list[H.Counts]:
    """The parts to sum for the slots whose period overlaps (now - seconds, now], and over the
    seconds not yet closed into the slots. A slot that an open second's newer period will
    reuse counts as reused already."""
    last = now // resolution
    first = (now - seconds + 1) // resolution
    opened = {second // resolution for second, _ in open_seconds}
    newest = {period % len(slots): period for period in sorted(opened)}
    parts = [part for period, parts in slots if first <= period <= last
             and newest.get(period % len(slots), period) <= period for part in parts]
    parts += [part for second, parts in open_seconds if first <= second // resolution <= last
              for part in parts]
    return parts


class OperationsCache:
    """What one ``operations()`` computed that the next one can reuse, as the captures come
    and go: the folds of whole totals blocks, and per window the sum of its bucket-count parts
    with those parts. Keyed by the identity of immutable objects it keeps references to (so
    an identity is never reused while it is kept), and only ever replaced, never changed: two
    threads computing at once each read a consistent entry, and the last one's stays."""

    __slots__ = ("counts", "folds", "lineage")

    def __init__(self, lineage: Lineage) -> None:
        self.folds: dict[int, tuple[TotalsBlock, BlockFold]] = {}
        self.counts: dict[str, tuple[tuple[H.Counts, ...], H.Counts]] = {}
        self.lineage = lineage  # what the engine's merges sum: see ``_merged_from``

    def memory(self) -> int:
        """Bytes of the arrays only this cache holds (the parts it refers to are the rings')."""
        folds = sum(core.nbytes + llm.nbytes for _, (core, llm) in self.folds.values())
        return folds + sum(k.nbytes + c.nbytes for _, (k, c) in self.counts.values())


# An entry added to or taken from a cached sum costs about this many times an entry of a
# window's parts summed afresh (measured at 1,024 busy series: a second's parts going in and
# out of the 10 s window cost more than merging its ten seconds anew).
_UPDATE_COST = 6


def _merged_window(cache: OperationsCache | None, name: str, parts: list[H.Counts],
                   series: int) -> H.Counts:
    """The sum of a window's parts (or of the since-start parts, ``name`` SINCE_START): the
    previous sum under ``name``, plus the parts new to it, minus those no longer in it, when
    that is the smaller job."""
    entry = cache.counts.get(name) if cache is not None else None
    merged = _merged_from(entry, parts, cache.lineage) if cache is not None and entry else None
    if merged is None:
        blocks = H.merged_blocks(parts, series)
        keys, counts = blocks[0] if len(blocks) == 1 else (
            np.concatenate([k for k, _ in blocks]), np.concatenate([c for _, c in blocks]))
        merged = keys, _compact(counts)
    if cache is not None:
        cache.counts[name] = (tuple(parts), merged)
    return merged


def _merged_from(entry: tuple[tuple[H.Counts, ...], H.Counts], parts: list[H.Counts],
                 lineage: Lineage | None) -> H.Counts | None:
    """``entry``'s sum updated to ``parts`` (compared as multisets of parts, a part that
    ``lineage`` knows as the sum of removed ones standing for them), or None when summing
    ``parts`` afresh costs less."""
    before, merged = entry
    objects = {signature(part): part for part in (*before, *parts)}
    added = Counter(map(signature, parts))
    added.subtract(Counter(map(signature, before)))
    if lineage is not None and any(times > 0 for times in added.values()):
        lineage.cancel(added, objects)
    if not any(added.values()):
        return merged
    changed = [(objects[key], times) for key, times in added.items() if times]
    changes = sum(len(part[0]) * abs(times) for part, times in changed)
    if changes * _UPDATE_COST >= sum(len(keys) for keys, _ in parts):
        return None
    plus = H.merge_counts([part for part, times in changed for _ in range(max(times, 0))])
    minus = H.merge_counts([part for part, times in changed for _ in range(max(-times, 0))])
    delta = H.add_counts(plus, (minus[0], -minus[1]))
    return H.add_counts(merged, delta)


def _compact(counts: np.ndarray) -> np.ndarray:
    """Counts in the narrowest unsigned type that holds them: a cached sum's memory (updates
    keep its type while their sums fit it)."""
    top = int(counts.max()) if len(counts) else 0
    if top < 1 << 16:
        return counts.astype(np.uint16)
    return counts.astype(np.uint32 if top < 1 << 32 else np.int64, copy=False)


class Statistics:
    """The daemon's statistics engine; ``clock`` is injectable (monotonic seconds)."""

    def __init__(self, max_operations: int, max_models: int, max_series: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.registry = SeriesRegistry(max_operations, max_models, max_series)
        self.capacity = 16
        self.totals = TotalsRing(self.capacity)
        self.merger = Merger()
        self.buckets = {name: SparseRing(resolution, slots, self.merger)
                        for name, (resolution, slots) in BUCKET_RINGS.items()}
        self._open: dict[int, OpenSecond] = {}  # seconds whose parts are not merged yet
        self.interval = blank((self.capacity,))
        self._interval_parts: list[H.Counts] = []
        self._interval_merging: Merge | None = None
        self.since_start = blank((self.capacity,))  # replaced, never changed: captures share it
        self._since_parts: list[H.Counts] = []
        self._since_merging: Merge | None = None
        self.all_time = np.zeros(self.capacity, np.int64)  # survives restarts (state file)
        self.llm_row = np.full(self.capacity, -1, np.int64)  # series id → its LLM row
        self.llm_series = 0
        self.started = int(clock())
        self.interval_started = clock()
        # The since-start sums of recent captures, newest last (not the captures: those hold
        # their answers, a snapshot's rows, which must go with the snapshot).
        self._pending: list[SinceSum] = []
        # Shared by the captures' operations().
        self.operations_cache = OperationsCache(self.merger.lineage)

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
        arrays, keys, counts, extended = _reduce(records, sids, local, len(distinct), width)
        llm_sids = llm_rows = np.empty(0, np.int64)
        if extended:
            llm_sids = self._llm_series(arrays)
            llm_rows = self.llm_row[llm_sids]
        self._close_seconds(now)
        span = width * H.HIST_WIDTH
        bounds = np.searchsorted(keys, np.arange(len(distinct) + 1) * span).tolist()
        for position, second in enumerate(distinct.tolist()):
            part = {f: a[position] for f, a in arrays.items()}
            low, high = bounds[position], bounds[position + 1]
            chunk = ((keys[low:high] - position * span).astype(H.KEY_DTYPE),
                     H.narrow(counts[low:high]))
            combine(self.interval, part)
            self.all_time += part["count"].astype(np.int64)
            if second > now - RING_SECONDS:
                self.totals.add(second, part, llm_sids, llm_rows)
            if second >= now - 1:  # still open: merged once it is over
                self._open.setdefault(second, OpenSecond()).parts.append(chunk)
            elif second in self._open:
                self._open[second].parts.append(chunk)
            else:  # late for a second already closed: straight to the slots and interval
                if second > now - RING_SECONDS:
                    for ring in self.buckets.values():
                        ring.add(second, chunk)
                self._add_interval_part(chunk)
        self.merger.run()

    def _close_seconds(self, now: int) -> None:
        """Have the merger merge the parts of each second over by now (drain delay keeps the
        last one open). The second stays open, taking late records, until its merge is done
        (``_closed``)."""
        for second in sorted(s for s in self._open if s < now - 1):
            opened = self._open.get(second)  # a merge done meanwhile may have closed it
            if opened is None:
                continue
            if not opened.closing:
                split = opened.closing_split = opened.split
                head = (Merge(opened.parts[:split], None, _kept),) if split else ()
                opened.closing = (*head, Merge(opened.parts[split:], None,
                                               partial(self._closed, second)))
                for merge in opened.closing:
                    self.merger.submit(merge)
            elif second <= now - CLOSE_WITHIN_SECONDS:
                self.merger.finish(opened.closing[-1])

    def _closed(self, second: int, last: Merge) -> None:
        """A second's merges are done: their sums, and the parts of late records that came
        after the merges began, go to the rings and to the interval."""
        opened = self._open.pop(second)
        for merge in opened.closing[:-1]:
            self.merger.finish(merge)  # done already unless ``last`` was finished at once
        sums = [merge.result for merge in opened.closing
                if merge.result is not None and len(merge.result[0])]
        later = opened.parts[sum(len(merge.parts) for merge in opened.closing):]
        for ring in self.buckets.values():
            for part in (*sums, *later):
                ring.add(second, part)
        # Parts before ``split`` are in an interval a capture already closed.
        if opened.split == opened.closing_split:
            fresh = [last.result] if last.result is not None and len(last.result[0]) else []
            parts = [*fresh, *later]
        else:  # a capture came since the merges began: it took all of their parts
            parts = opened.parts[opened.split:]
        for part in parts:
            self._add_interval_part(part)

    def _add_interval_part(self, part: H.Counts) -> None:
        parts = self._interval_parts
        parts.append(part)
        if self._interval_merging is not None and len(parts) >= LIMIT_PARTS:
            self.merger.finish(self._interval_merging)
        if self._interval_merging is None and len(parts) >= COMPACT_PARTS:
            self._interval_merging = Merge(parts, np.int64, self._interval_compacted)
            self.merger.submit(self._interval_merging)

    def _interval_compacted(self, merge: Merge) -> None:
        if self._interval_merging is merge:  # else a capture has closed that interval
            self._interval_merging = None
            assert merge.result is not None
            replace_run(self._interval_parts, merge.parts, merge.result)

    def _llm_series(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        """The series of this batch with LLM fields, given LLM rows if new."""
        used = np.flatnonzero((arrays["ttft_count"] + arrays["queue_count"] + arrays["tokens_in"]
                               + arrays["tokens_out"]).sum(axis=0))
        new = used[self.llm_row[used] < 0]
        if len(new):
            self.llm_row[new] = np.arange(self.llm_series, self.llm_series + len(new))
            self.llm_series += len(new)
            if self.llm_series > self.totals.llm_capacity:
                self.totals.grow(self.capacity, max(self.llm_series, 2 * self.totals.llm_capacity,
                                                    16))
        return used

    def _ensure_capacity(self, needed: int) -> None:
        if needed <= self.capacity:
            return
        capacity = max(needed, 2 * self.capacity)
        self.totals.grow(capacity, self.totals.llm_capacity)
        self.interval = grow(self.interval, capacity)
        self.since_start = grow(self.since_start, capacity)
        self.all_time = np.concatenate([self.all_time, np.zeros(capacity - self.capacity,
                                                                 np.int64)])
        self.llm_row = np.concatenate([self.llm_row, np.full(capacity - self.capacity, -1)])
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

    def memory(self) -> dict[str, int]:
        """Bytes held by the per-second totals, by the bucket counts (each part once,
        however many slots share it) and by what ``operations()`` keeps for the next one, and
        the series capacity."""
        parts = {id(part): part for ring in self.buckets.values() for slot in ring.slots
                 for part in slot.parts}
        for part in (*self._interval_parts, *self._since_parts,
                     *(p for o in self._open.values() for p in o.parts)):
            parts[id(part)] = part
        return {
            "totals_bytes": sum(b.core.nbytes + b.llm.nbytes + b.second.nbytes
                                for b in self.totals.blocks),
            "bucket_bytes": sum(k.nbytes + c.nbytes for k, c in parts.values()),
            "bucket_entries": sum(len(k) for k, _ in parts.values()),
            "capacity": self.capacity, "llm_capacity": self.totals.llm_capacity,
            "operations_cache_bytes": self.operations_cache.memory(),
        }

    # -- output ----------------------------------------------------------------------------
    def capture(self) -> StatsCapture:
        """Close the current interval (every received event is in exactly one interval's
        rows) and freeze what the windows need as of now. Call it on the thread that calls
        ``add``; the capture's methods may then run on any thread while ``add`` goes on.
        Costs references and a few arrays of one value per series."""
        return self._freeze(close=True)

    def view(self) -> StatsCapture:
        """A capture that leaves the interval open: its ``interval()`` is empty."""
        return self._freeze(close=False)

    def _freeze(self, close: bool) -> StatsCapture:
        now = self.clock()
        self._adopt_since()
        interval: tuple[float, dict[str, np.ndarray], tuple[H.Counts, ...]] | None = None
        opened = tuple((second, tuple(o.parts)) for second, o in self._open.items())
        fresh = tuple(part for o in self._open.values() for part in o.parts[o.split:])
        if close:
            for o in self._open.values():
                o.split = len(o.parts)
            interval = (max(now - self.interval_started, 1e-3), self.interval,
                        (*self._interval_parts, *fresh))
            self.since_start = combined(self.since_start, self.interval)
            self._since_parts.extend(interval[2])
            self.interval = blank((self.capacity,))
            self._interval_parts, self._interval_merging = [], None
            self.interval_started = now
            self._bound_since_parts()
            since, since_parts = self.since_start, tuple(self._since_parts)
        else:
            since = combined(self.since_start, self.interval)
            since_parts = (*self._since_parts, *self._interval_parts, *fresh)
        series = len(self.registry)
        llm_sids = np.flatnonzero(self.llm_row[:series] >= 0)
        capture = StatsCapture(
            now=now, started=self.started, registry=self.registry,
            all_time=self.all_time[:series].copy(), blocks=self.totals.freeze(),
            llm_sids=llm_sids, llm_rows=self.llm_row[llm_sids],
            rings={name: (ring.resolution, ring.freeze()) for name, ring in self.buckets.items()},
            open_seconds=opened,
            since=since, since_parts=since_parts, interval=interval,
            cache=self.operations_cache)
        self._pending = [*self._pending[-3:], capture.since]
        return capture

    def _bound_since_parts(self) -> None:
        """Past SINCE_PARTS_LIMIT since-start parts (no capture merged them lately), the merger
        merges all but the oldest SINCE_PARTS_LIMIT // 2 (those may be large, the newer are
        small); past twice the limit, at once."""
        parts, merging = self._since_parts, self._since_merging
        if merging is not None and len(parts) > 2 * SINCE_PARTS_LIMIT:
            self.merger.finish(merging)
        if self._since_merging is None and len(parts) > SINCE_PARTS_LIMIT:
            self._since_merging = Merge(parts[SINCE_PARTS_LIMIT // 2:], np.int64,
                                        self._since_compacted)
            self.merger.submit(self._since_merging)

    def _since_compacted(self, merge: Merge) -> None:
        self._since_merging = None
        assert merge.result is not None
        replace_run(self._since_parts, merge.parts, merge.result)

    def _adopt_since(self) -> None:
        """Take the since-start counts that a recent capture merged (on its own thread) in
        place of the parts they sum, if the engine has not merged those parts itself since."""
        for since in reversed(self._pending):
            merged, covered = since.merged, since.parts
            if merged is not None and len(covered) <= len(self._since_parts) and all(
                    a is b for a, b in zip(covered, self._since_parts, strict=False)):
                self._since_parts[: len(covered)] = [merged]
                self._pending.clear()
                return

    def operations(self) -> list[dict[str, object]]:
        """Every series with its all-time count and its statistics per window, as of now
        (the interval stays open)."""
        return self.view().operations()

    def close_interval(self) -> tuple[float, list[dict[str, object]]]:
        """Statistics of every series since the last call, then fold them into since-start.

        Returns (interval length in seconds, [{operation, model, stats}]) for series with
        events in the interval.
        """
        return self.capture().interval()

    def cardinality(self) -> dict[str, object]:
        return _cardinality(self.registry)


def _cardinality(registry: SeriesRegistry) -> dict[str, object]:
    return {
        "operations": len(registry.operations) - 1, "models": len(registry.models) - 2,
        "series": len(registry), "max_operations": registry.max_operations,
        "max_models": registry.max_models, "max_series": registry.max_series,
        "overflow_events": dict(registry.overflow),
    }


class SinceSum:
    """A capture's since-start parts and, once its reader has merged them, their sum: what
    the engine takes in place of those parts (``Statistics._adopt_since``)."""

    __slots__ = ("merged", "parts")

    def __init__(self, parts: tuple[H.Counts, ...]) -> None:
        self.parts = parts
        self.merged: H.Counts | None = None


@dataclasses.dataclass(frozen=True)
class CaptureResults:
    """What a capture's ``computed()`` gives, to hand to a copy of the capture (the same
    capture in another process): its answers, and what it left in the operations cache, with
    the objects it refers to named by identity (the same in a forked child as here)."""

    operations: list[dict[str, object]]
    interval: tuple[float, list[dict[str, object]]]
    since_merged: H.Counts
    window_sums: dict[str, tuple[tuple[int, ...], H.Counts]]  # ids of a window's parts, sum
    folds: dict[int, BlockFold]  # id of a totals block: its fold


class StatsCapture:
    """The statistics as of one ``Statistics.capture()``. Immutable: its methods may run on
    any thread while the engine goes on adding batches; each result is computed once, on
    first use, and kept."""

    def __init__(self, *, now: float, started: int, registry: SeriesRegistry,
                 all_time: np.ndarray, blocks: tuple[TotalsBlock, ...], llm_sids: np.ndarray,
                 llm_rows: np.ndarray,
                 rings: dict[str, tuple[int, tuple[tuple[int, tuple[H.Counts, ...]], ...]]],
                 open_seconds: tuple[tuple[int, tuple[H.Counts, ...]], ...],
                 since: dict[str, np.ndarray], since_parts: tuple[H.Counts, ...],
                 interval: tuple[float, dict[str, np.ndarray], tuple[H.Counts, ...]] | None,
                 cache: OperationsCache | None = None) -> None:
        self.now = now  # the engine's clock at the capture
        self.series = len(all_time)
        self._started = started
        # The registry's tables only ever grow: the first ``series`` entries are as of now.
        self._series_table, self._operations_table = registry.series, registry.operations
        self._models_table = registry.models
        self.names = dict(registry.names)  # name → daemon-wide id (what model_summary reads)
        self.overflow = dict(registry.overflow)  # events redirected at each cap
        self._cardinality = _cardinality(registry)
        self._all_time = all_time
        self._blocks, self._llm_sids, self._llm_rows = blocks, llm_sids, llm_rows
        self._rings, self._open_seconds = rings, open_seconds
        self._since = since
        self.since = SinceSum(since_parts)
        self._interval_input = interval
        self._cache = cache
        self._operations: list[dict[str, object]] | None = None
        self._interval: tuple[float, list[dict[str, object]]] | None = None
        self._labels: list[tuple[str, str]] | None = None

    @property
    def labels(self) -> list[tuple[str, str]]:
        """(operation, model) of each series, by series id."""
        if self._labels is None:
            ops, models = self._operations_table, self._models_table
            self._labels = [(ops[op], models[model])
                            for op, model in self._series_table[: self.series]]
        return self._labels

    def cardinality(self) -> dict[str, object]:
        return self._cardinality

    def since_counts(self) -> H.Counts:
        """The since-start bucket counts: the previous capture's sum (which the engine took
        in place of the parts it sums) plus the parts that came since, as for a window."""
        since = self.since
        if since.merged is None:
            since.merged = _merged_window(self._cache, SINCE_START, list(since.parts),
                                          self.series)
            self._sum_made(since)
        return since.merged

    def _sum_made(self, since: SinceSum) -> None:
        """The engine will take ``since.merged`` in place of ``since.parts``: the lineage
        says what it sums, so that the next capture's sum updates this one."""
        cache = self._cache
        if cache is not None and since.merged is not None:
            cache.lineage.record(since.merged, since.parts)

    def operations(self) -> list[dict[str, object]]:
        """Every series with its all-time count and statistics per window (10 s, 1 min,
        5 min, since start), most events first (ties in series-id order)."""
        if self._operations is None:
            self._operations = self.compute_operations(self._cache)
        return self._operations

    def compute_operations(self, cache: OperationsCache | None) -> list[dict[str, object]]:
        """``operations()`` computed now, reusing and updating ``cache`` (None: from scratch;
        the result is the same)."""
        series = self.series
        everyone = np.arange(series)
        now = int(self.now)
        uptime = max(1, now - self._started + 1)
        folds = Folds(cache.folds if cache is not None else {})
        windows: dict[str, list[dict[str, object]]] = {}
        for name, seconds in WINDOWS:
            totals = window_totals(self._blocks, self._llm_sids, self._llm_rows, now,
                                    seconds, series, folds)
            resolution, slots = self._rings[name]
            parts = _window_counts(resolution, slots, self._open_seconds, now, seconds)
            windows[name] = describe(totals, [_merged_window(cache, name, parts, series)],
                                      min(seconds, uptime), everyone)
        if cache is not None:
            cache.folds = folds.used
        windows[SINCE_START] = describe(self._since, [self.since_counts()],
                                           max(self.now - self._started, 1.0), everyone)
        labels = self.labels
        all_time = self._all_time.tolist()
        # Most events first; a stable sort keeps series of equal counts in series-id order.
        order = np.argsort(-self._all_time, kind="stable").tolist()
        ten, minute, five, since = (windows[name] for name in ("10s", "1m", "5m", SINCE_START))
        return [
            {"operation": labels[sid][0], "model": labels[sid][1], "count": all_time[sid],
             "windows": {"10s": ten[sid], "1m": minute[sid], "5m": five[sid],
                         "since_start": since[sid]}}
            for sid in order
        ]

    def computed(self) -> CaptureResults:
        """Compute every answer that costs (``operations``, ``interval``, ``since_counts``)
        and what the operations cache kept of them, for ``adopt`` by the same capture in the
        process that forked this one."""
        cache = self._cache
        operations, interval, since = self.operations(), self.interval(), self.since_counts()
        sums = {name: (tuple(map(id, parts)), total)
                for name, (parts, total) in (cache.counts.items() if cache else ())}
        folds = {key: fold for key, (_, fold) in (cache.folds.items() if cache else ())}
        return CaptureResults(operations, interval, since, sums, folds)

    def adopt(self, results: CaptureResults) -> None:
        """Take the answers that a forked copy of this capture computed (``computed()``),
        and put in the operations cache what it kept there, naming this process's own parts
        and blocks (the copy's are at the same addresses). Nothing to do for answers
        computed here."""
        if self._operations is not None:
            return
        self._operations, self._interval = results.operations, results.interval
        self.since.merged = results.since_merged
        self._sum_made(self.since)
        cache = self._cache
        if cache is None:
            return
        parts = {id(part): part
                 for slots in (*(ring for _, ring in self._rings.values()), self._open_seconds,
                               ((0, self.since.parts),))
                 for _, slot_parts in slots for part in slot_parts}
        for name, (ids, total) in results.window_sums.items():
            if all(key in parts for key in ids):
                cache.counts[name] = (tuple(parts[key] for key in ids),
                                      self.since.merged if name == SINCE_START else total)
        blocks = {id(block): block for block in self._blocks}
        cache.folds = {key: (blocks[key], fold) for key, fold in results.folds.items()
                       if key in blocks}

    def interval(self) -> tuple[float, list[dict[str, object]]]:
        """(length in seconds, [{operation, model, stats}]) of the interval this capture
        closed, for the series with events in it; (0.0, []) for a ``view()``."""
        if self._interval is None:
            if self._interval_input is None:
                self._interval = (0.0, [])
            else:
                span, totals, parts = self._interval_input
                sids = np.flatnonzero(totals["count"][: self.series])
                described = describe(totals, H.merged_blocks(parts, self.series), span, sids)
                labels = self.labels
                self._interval = (span, [
                    {"operation": labels[sid][0], "model": labels[sid][1], "stats": stats}
                    for sid, stats in zip(sids.tolist(), described, strict=True)])
        return self._interval

    def since_start_at_edges(self, metric: int, taken: np.ndarray
                             ) -> tuple[list[list[int]], list[int], list[float]]:
        """Per series (series-id order), since start, for one distribution: the cumulative
        count of its first ``taken[i]`` log buckets for each i, its count, and the sum of
        its values (ms)."""
        series, edges = self.series, len(taken)
        sids, buckets, hits = H.metric_entries(self.since_counts(), metric)
        slot = np.searchsorted(taken, buckets, side="right")  # the first edge it counts for
        per = np.bincount(sids.astype(np.int64) * (edges + 1) + slot, weights=hits,
                          minlength=series * (edges + 1)).reshape(series, edges + 1)
        cumulative = np.cumsum(per, axis=1).astype(np.int64)
        prefix = PREFIX[metric]
        return (cumulative[:, :edges].tolist(), cumulative[:, edges].tolist(),
                self._since[f"{prefix}_sum"][:series].tolist())


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
            width: int) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, bool]:
    """Per (second, series) totals as [seconds, width] arrays, the bucket counts with keys
    offset by second (second * width * HIST_WIDTH + key), and whether any record carried the
    LLM fields."""
    index = local * width + sids
    size = seconds * width
    arrays = blank((size,))

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
        # Field by field: gathering whole records of a structured array costs ~60 ns each.
        def sub(array: np.ndarray) -> np.ndarray:
            return array if len(extended) == len(records) else array[extended]

        sub_index, sub_base = sub(index), sub(base)
        for metric, field, prefix in ((H.TTFT, "ttft_ms", "ttft"), (H.QUEUE, "queue_ms", "queue")):
            values = _widen(sub(records[field]))
            present = ~np.isnan(values)
            at, values = sub_index[present], values[present]
            total(f"{prefix}_count", at)
            total(f"{prefix}_sum", at, values)
            extremes(prefix, at, values)
            keys.append(sub_base[present] + H.OFFSETS[metric] + H.log_buckets(values))
        for field in ("tokens_in", "tokens_out"):
            values = sub(records[field])
            present = values != L.TOKENS_ABSENT
            total(field, sub_index[present], values[present].astype(np.float64))
    unique, counts = H.count_keys(np.concatenate(keys))
    shaped = {f: a.reshape(seconds, width) for f, a in arrays.items()}
    return shaped, unique, counts, bool(len(extended))


def _widen(values: np.ndarray) -> np.ndarray:
    """float32 to float64. A signaling NaN (absent, as a writer may store it) widens to a quiet
    one; numpy would warn "invalid value" for each such batch."""
    with np.errstate(invalid="ignore"):
        return values.astype(np.float64)
