"""Counts per second over the last few minutes, for rates over the status windows."""

from __future__ import annotations

import numpy as np

from ai_analytics.daemon.stats.statistics import WINDOWS
from ai_analytics.daemon.stats.totals import RING_SECONDS


class PerSecond:
    """Amounts added per second, kept for RING_SECONDS seconds."""

    def __init__(self) -> None:
        self.second = np.full(RING_SECONDS, -1, np.int64)
        self.amount = np.zeros(RING_SECONDS)

    def add(self, second: int, amount: float) -> None:
        index = second % RING_SECONDS
        if self.second[index] != second:
            self.second[index] = second
            self.amount[index] = 0.0
        self.amount[index] += amount

    def total(self, now: int, seconds: int) -> float:
        chosen = (self.second > now - seconds) & (self.second <= now)
        return float(self.amount[chosen].sum())

    def rates(self, now: int, uptime: int) -> dict[str, float]:
        """Average per second over each status window (shorter while uptime is shorter)."""
        return {name: round(self.total(now, seconds) / max(1, min(seconds, uptime)), 3)
                for name, seconds in WINDOWS}


class CounterRates:
    """Rates of monotonic counters (dropped, invalid, …) from totals sampled over time."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.last: dict[str, int] | None = None
        self.rings = {name: PerSecond() for name in names}

    def observe(self, second: int, totals: dict[str, int]) -> None:
        if self.last is not None:
            for name, ring in self.rings.items():
                ring.add(second, max(0, totals[name] - self.last[name]))
        self.last = {name: totals[name] for name in self.rings}

    def rates(self, now: int, uptime: int) -> dict[str, dict[str, float]]:
        return {name: ring.rates(now, uptime) for name, ring in self.rings.items()}
