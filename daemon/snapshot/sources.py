"""What a snapshot's ``Capture`` reads: the parts of the running daemon it takes its numbers
from.

``Daemon`` provides all of them, and passes itself; the snapshot package sees only this
read-only view, so it depends on the parts (ingest, stats, resources, sinks, config), never
on the service that owns them. A capture reads them on the daemon's loop thread, the one
thread that changes the lanes, statistics, caches, rates and drainer; the document is then
built from the capture, on the snapshot thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from ai_analytics.core.config import Config
from ai_analytics.daemon.ingest.drain import Drainer
from ai_analytics.daemon.ingest.lanes import LaneSet
from ai_analytics.daemon.resources import ResourceSampler
from ai_analytics.daemon.sinks.writer import Sinks
from ai_analytics.daemon.stats.caches import CacheStates
from ai_analytics.daemon.stats.rates import CounterRates
from ai_analytics.daemon.stats.statistics import Statistics


class SnapshotSources(Protocol):
    @property
    def config(self) -> Config: ...

    @property
    def clock(self) -> Callable[[], float]: ...  # monotonic seconds

    @property
    def started(self) -> float: ...  # on ``clock``

    @property
    def started_unix(self) -> float: ...

    @property
    def lanes(self) -> LaneSet: ...

    @property
    def drainer(self) -> Drainer: ...

    @property
    def stats(self) -> Statistics: ...

    @property
    def caches(self) -> CacheStates: ...

    @property
    def outcome_rates(self) -> CounterRates: ...

    @property
    def resources(self) -> ResourceSampler: ...

    @property
    def sinks(self) -> Sinks: ...


__all__ = ["SnapshotSources"]
