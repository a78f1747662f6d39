"""Draining: copy records out of the lanes in batches, validate, account, hand to statistics.

Each batch takes at most ``batch_size`` records across lanes. Per lane the order is: read
(which reads the head), then the new names (published before any record that uses them),
validate, count the outcome, commit the tail. The valid records of the whole batch then go
to the statistics engine in one vectorized call; cache-state records go to the caches.
"""

from __future__ import annotations

import time

import numpy as np

from ai_analytics.client import _layout as L
from ai_analytics.core.config import Config
from ai_analytics.daemon.ingest.lanes import LaneSet, TrackedLane
from ai_analytics.daemon.ingest.records import RECORD_DTYPE, valid_mask
from ai_analytics.daemon.stats.caches import CacheStates
from ai_analytics.daemon.stats.series import OTHER_NAME
from ai_analytics.daemon.stats.statistics import Statistics

_RAW = np.dtype((np.void, L.RECORD_SIZE))


class Drainer:
    def __init__(self, lanes: LaneSet, stats: Statistics, caches: CacheStates,
                 batch_size: int) -> None:
        self.lanes = lanes
        self.stats = stats
        self.caches = caches
        self.batch_size = batch_size
        self.no_model = stats.registry.name_id("")
        self.batches = 0
        self.records = 0
        self.last_batch = 0

    def apply_config(self, config: Config) -> None:
        self.batch_size = config.batch_size

    def drain(self, stop_at: float) -> int:
        """Batch after batch until every lane is empty or ``stop_at`` (monotonic) passes.

        A batch below ``batch_size`` emptied every lane as of its read: stop there. Going on
        for what producers wrote since would busy-poll in tiny batches while they keep writing
        (at 100 k events/s that cost the daemon over a third of a core); the loop's adaptive
        wait wakes it again before any lane is half full."""
        total = 0
        while True:
            taken = self._batch()
            total += taken
            if taken < self.batch_size or time.monotonic() >= stop_at:
                break
        now = time.monotonic()
        for lane in self.lanes:
            elapsed = now - lane.last_drain
            if elapsed > 0:  # up at once (a burst must not fill the lane), down by halves
                measured = lane.drained_since / elapsed
                lane.rate = max(measured, 0.5 * (lane.rate + measured))
            lane.last_drain = now
            lane.drained_since = 0
        return total

    def _batch(self) -> int:
        budget = self.batch_size
        parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        for lane in self.lanes:
            if budget <= 0:
                break
            budget -= self._lane(lane, budget, parts)
        taken = self.batch_size - budget
        if len(parts) == 1:
            self.stats.add(*parts[0])
        elif parts:
            # Join the records as opaque 64-byte items (one memcpy), not field by field.
            records = np.concatenate([part[0].view(_RAW) for part in parts]).view(RECORD_DTYPE)
            self.stats.add(records, np.concatenate([part[1] for part in parts]),
                           np.concatenate([part[2] for part in parts]))
        if taken:
            self.batches += 1
            self.records += taken
            self.last_batch = taken
        return taken

    def _lane(self, lane: TrackedLane, budget: int,
              parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> int:
        reader = lane.reader
        drained = reader.read(budget)
        if drained is None:
            return 0
        registry = self.stats.registry
        for name_id, text in reader.new_names():
            reader.global_ids[name_id] = registry.name_id(text)
        reader.global_ids[0] = self.no_model  # a lane's id 0 is "no model"
        reader.global_ids[lane.ident.names_capacity + 1] = OTHER_NAME
        records = drained.records
        op_slots, model_slots = reader.slots(records)
        ok = valid_mask(records, drained.first_index, op_slots, model_slots, reader.names_ok)
        good = int(np.count_nonzero(ok))
        lane.received += good
        lane.invalid += len(records) - good
        lane.overwritten += drained.lapped
        reader.commit(drained.first_index + len(records), lane.overwritten, lane.invalid)
        lane.drained_since += len(records)
        gids = reader.global_ids
        if good == len(records):  # the usual case: no copy
            valid, ops, models = records, gids[op_slots], gids[model_slots]
        elif good:
            valid, ops, models = records[ok], gids[op_slots[ok]], gids[model_slots[ok]]
        if good:
            cache = valid["kind"] == L.KIND_CACHE_STATE
            if cache.any():
                self._cache_states(lane, valid[cache], ops[cache])
                events = ~cache
                valid, ops, models = valid[events], ops[events], models[events]
            if len(valid):
                lane.models_seen.update(np.flatnonzero(np.bincount(models)).tolist())
                parts.append((valid, ops, models))
        return len(records)

    def _cache_states(self, lane: TrackedLane, records: np.ndarray, names: np.ndarray) -> None:
        texts = [self.stats.registry.name_list[n] for n in names.tolist()]
        self.caches.add(lane.ident.name, texts, records["latency_ms"], records["tokens_in"],
                        records["ts_ns"] // 1_000_000_000)
