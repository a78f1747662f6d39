"""The daemon's batch path, timed in this process over lanes filled beforehand.

``DrainRig`` builds a real ``Daemon`` (its ``Drainer``, name tables, validation, counters and
``Statistics``) for a namespace whose lanes are already full, and attaches them. Between
batches every tail (the reader's and the shared one) goes back to 0: the records keep
``seq == index``, so each batch re-reads the same, still valid, full rings, and a batch is
the whole path of real traffic without a producer running beside it. numpy and the daemon's
modules are imported only when a rig is built.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from typing import Any

from ai_analytics import client
from ai_analytics.client import _layout as L
from ai_analytics.client._lane import Lane, LaneGeometry

from .lanes import lane_in_place, remove_segments
from .timing import timed


class DrainRig:
    """A ``Daemon`` attached to the ``lanes`` full lanes of ``namespace``; ``keep`` holds
    producer-side lanes that must stay open while it runs."""

    def __init__(self, namespace: str, lanes: int, batch_size: int, max_queue_size: int,
                 keep: Sequence[Lane] = ()) -> None:
        from ai_analytics.core.config import Config
        from ai_analytics.daemon.service import Daemon

        self.namespace = namespace
        self.keep = list(keep)
        self._state = tempfile.TemporaryDirectory(prefix="aibench-state-")
        config = Config(namespace=namespace, state_dir=self._state.name,
                        batch_size=batch_size, max_queue_size=max_queue_size)
        self.daemon = Daemon(config)
        try:
            self.daemon.lanes.scan()
            self.lanes: list[Any] = list(self.daemon.lanes)
            if len(self.lanes) != lanes:
                raise RuntimeError(f"the daemon attached {len(self.lanes)} lanes, expected {lanes}")
            self.records = sum(lane.reader.identity.capacity for lane in self.lanes)
        except BaseException:
            self.close()
            raise

    def rewind(self) -> None:
        """Make every ring wholly unread again."""
        for lane in self.lanes:
            lane.reader.tail = 0
            lane.reader.q[L.Q_TAIL] = 0

    def batch(self) -> int:
        """One ``Drainer._batch``; the records it took."""
        return int(self.daemon.drainer._batch())

    def received(self) -> int:
        return sum(lane.received for lane in self.lanes)

    def timed_batch(self) -> int:
        """ns for one batch over every ring whole (gc off), checked: every record taken, and
        every one valid."""
        self.rewind()
        received = self.received()
        ns, taken = timed(self.batch)
        valid = self.received() - received
        if taken != self.records or valid != self.records:
            raise RuntimeError(f"a drain batch took {taken} records, {valid} valid; "
                               f"expected {self.records}")
        return ns

    def time_batches(self, batches: int) -> float:
        """ns per record over ``batches`` full batches."""
        return sum(self.timed_batch() for _ in range(batches)) / (batches * self.records)

    def close(self) -> None:
        try:
            self.daemon.close()
        finally:
            self._state.cleanup()
            remove_segments(self.namespace)


def one_mixed_lane(namespace: str, capacity: int) -> DrainRig:
    """One lane of ``capacity`` records written by emit (4 operations, 3 models, 1 record in
    8 extended, some qualities, errors and cache lookups), and a rig over it: the drain case
    of ``bench/emit_bench.py`` and of its pytest-benchmark twin."""
    lane = Lane(namespace, LaneGeometry(capacity, L.DEFAULT_NAMES_CAPACITY, False))
    ops = ("text_generation", "chat_completion", "embedding", "reranking")
    models = ("llama-3-8b", "mistral-7b", "bge-large")
    emit = client.emit
    with lane_in_place(lane):
        for i in range(lane.capacity):
            if i % 8 == 7:
                ok = emit(ops[i % 4], 1.0 + i % 97, models[i % 3], 0.9, ttft_ms=2.5,
                          tokens_in=100 + i % 50, tokens_out=i % 300)
            else:
                ok = emit(ops[i % 4], 1.0 + i % 97, models[i % 3], None if i % 5 else 0.75,
                          success=i % 50 != 0, cache_hit=None if i % 3 else True)
            if not ok:
                raise RuntimeError("the drain lane filled before its capacity")
    return DrainRig(namespace, lanes=1, batch_size=capacity, max_queue_size=capacity,
                    keep=[lane])
