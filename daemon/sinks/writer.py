"""Where each snapshot goes: the state file and its history rows, each write behind its
sink's circuit breaker and bounded by max_processing_time_seconds, so that a failing or hung
disk never holds up the drain loop (which goes on draining while a write runs)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ai_analytics.core.config import Config
from ai_analytics.core.document import EventCounts, SnapshotDocument
from ai_analytics.core.history import HistoryStore
from ai_analytics.core.state import write_state
from ai_analytics.daemon.sinks.breaker import (
    HISTORY_BACKLOG_ROWS,
    HISTORY_BACKLOG_SNAPSHOTS,
    Backlog,
    GuardedSink,
    Outcome,
)

SINKS = ("state", "history")
# How often the history's retention limits are enforced (a DELETE over old rows).
RETENTION_INTERVAL_SECONDS = 60.0

# One interval of history: (snapshot unix time, seconds covered, event counts, series rows).
Interval = tuple[float, float, EventCounts, Sequence[Mapping[str, Any]]]


class Sinks:
    """The two sinks of a daemon. ``write`` once per snapshot, from the drain loop."""

    def __init__(self, config: Config) -> None:
        self.state_dir = config.state_dir
        self.history = HistoryStore(config.state_dir, config.history_max_age_seconds,
                                    config.history_max_megabytes)
        self.guarded = {sink: GuardedSink.from_config(sink, config) for sink in SINKS}
        # Snapshots a sink did not store: failed, overran, or skipped by the open breaker.
        # This is drain.<sink>_writes_failed, which the sink_failing finding watches: it keeps
        # growing, and the finding stays open, while the breaker is open.
        self.failures = dict.fromkeys(SINKS, 0)
        # The history intervals not stored yet: kept (bounded) while the history sink is down,
        # flushed oldest first when it is back, so an outage loses none unless it outlasts
        # the backlog's bounds.
        self.backlog: Backlog[Interval] = Backlog(HISTORY_BACKLOG_SNAPSHOTS,
                                                  HISTORY_BACKLOG_ROWS)
        self._limits = (config.history_max_age_seconds, config.history_max_megabytes)
        self._next_retention = 0.0

    def apply_config(self, config: Config) -> None:
        """A reload: each breaker's settings (its state and counters stay) and the history's
        limits, enforced at the next write when they changed."""
        for sink in self.guarded.values():
            sink.apply_config(config)
        self.history.apply_config(config)
        limits = (config.history_max_age_seconds, config.history_max_megabytes)
        if limits != self._limits:
            self._limits = limits
            self._next_retention = 0.0

    def write(self, document: SnapshotDocument, interval: Interval, final: bool,
              meanwhile: Callable[[], float] | None, encoded: bytes | None = None) -> bool:
        """Store the snapshot ``document`` (``encoded``: its bytes, if made already) and queue
        then store the history ``interval``; True when the state file was written in time.
        ``final``: attempted even while a breaker is open. ``meanwhile``: see
        ``BoundedCall`` (drains while a write runs). The writes run in worker threads that
        only read ``document``."""
        self.backlog.add(interval, len(interval[3]))
        state_dir = self.state_dir
        saved = self.guarded["state"].write(lambda: write_state(state_dir, document, encoded),
                                            final, meanwhile) is Outcome.OK
        if not saved:
            self.failures["state"] += 1
        history, backlog = self.history, self.backlog
        retention = time.monotonic() >= self._next_retention

        def write_history() -> None:
            backlog.flush(lambda item: history.append(*item))
            if retention:
                history.enforce_retention()

        if self.guarded["history"].write(write_history, final, meanwhile) is not Outcome.OK:
            self.failures["history"] += 1
        elif retention:
            self._next_retention = time.monotonic() + RETENTION_INTERVAL_SECONDS
        return saved

    def limit_final_writes(self, seconds: float) -> None:
        """Share ``seconds`` between the final writes: the stop deadline is a promise, so
        they get what is left of it, not a full max_processing_time each."""
        for sink in self.guarded.values():
            sink.bounded.timeout = min(sink.bounded.timeout, seconds / len(self.guarded))

    def states(self) -> dict[str, object]:
        """The snapshot's "sinks": each sink's breaker state and counters; for the history,
        the intervals waiting to be stored and those dropped at the backlog's bounds. Taken
        when the document is built, before its own writes: their outcome shows in the next
        snapshot."""
        backlog = self.backlog.counts()
        return {
            "state": self.guarded["state"].state(),
            "history": {**self.guarded["history"].state(), "backlog": {
                "snapshots": backlog["items"], "series_rows": backlog["weight"],
                "dropped_snapshots": backlog["dropped"],
                "dropped_series_rows": backlog["dropped_weight"]}},
        }

    def close(self) -> None:
        if self.guarded["history"].bounded.running_seconds() is None:
            self.history.close()  # else a stuck write holds it: closing would wait for it
