"""Cache state reported with ``client.cache_state``: size (a gauge) and evictions (a counter).

The size of a cache is the sum, over the lanes that report it, of each lane's latest size,
so a cache replicated in every worker process shows its node-wide size; a lane's share
leaves with the lane when it is reclaimed. Evictions are increments, summed.
"""

from __future__ import annotations

import math

import numpy as np

from ai_analytics.daemon.stats.rates import PerSecond
from ai_analytics.daemon.stats.series import OTHER


class CacheStates:
    def __init__(self, max_caches: int) -> None:
        self.max_caches = max_caches
        self.sizes: dict[str, dict[str, float]] = {}  # cache → lane → latest size
        self.evictions: dict[str, int] = {}
        self.eviction_rings: dict[str, PerSecond] = {}
        self.overflow_events = 0

    def add(self, lane: str, names: list[str], sizes: np.ndarray, evictions: np.ndarray,
            seconds: np.ndarray) -> None:
        """Record one lane's cache-state records, in the order they were written."""
        for name, size, evicted, second in zip(names, sizes.tolist(), evictions.tolist(),
                                               seconds.tolist(), strict=True):
            if name not in self.evictions:
                if len(self.evictions) >= self.max_caches:
                    self.overflow_events += 1
                    name = OTHER
                self.evictions.setdefault(name, 0)
                self.eviction_rings.setdefault(name, PerSecond())
            if not math.isnan(size):
                self.sizes.setdefault(name, {})[lane] = size
            self.evictions[name] += evicted
            self.eviction_rings[name].add(second, evicted)

    def forget_lane(self, lane: str) -> None:
        for per_lane in self.sizes.values():
            per_lane.pop(lane, None)

    def snapshot(self, now: int, uptime: int) -> list[dict[str, object]]:
        return [
            {
                "name": name,
                "size": sum(self.sizes.get(name, {}).values()) if self.sizes.get(name) else None,
                "reporting_lanes": len(self.sizes.get(name, {})),
                "evictions_total": total,
                "evictions_per_s": self.eviction_rings[name].rates(now, uptime),
            }
            for name, total in sorted(self.evictions.items())
        ]
