"""How long the drain loop sleeps: until a lane, at its observed rate, is half full; a
quarter while a snapshot is being built (its work can hold a drain pass back)."""

from __future__ import annotations

import os

import pytest

from ai_analytics.daemon.ingest.lanes import WAKE_FILL, WAKE_FILL_WHILE_SNAPSHOT, LaneSet

from helpers import SHM_DIR, entry, lane_segment, write_segment


def test_the_loop_wakes_before_a_lane_fills_and_earlier_while_a_snapshot_is_built(namespace):
    name = write_segment(namespace, bytes(lane_segment(1024, [entry("op")], [])))
    lane_set = LaneSet(namespace, SHM_DIR, frozenset({os.getuid(), 0}), 4)
    try:
        lane_set.scan()
        lane = lane_set.lanes[name]
        lane.attached -= 60.0  # not a young lane: its measured rate stands
        lane.rate = 2048.0  # records per second: the empty lane is full in 0.5 s
        assert lane_set.time_to_drain(10.0, 0.001) == pytest.approx(0.5 * WAKE_FILL)
        assert lane_set.time_to_drain(10.0, 0.001, WAKE_FILL_WHILE_SNAPSHOT) == \
            pytest.approx(0.5 * WAKE_FILL_WHILE_SNAPSHOT)
        assert WAKE_FILL_WHILE_SNAPSHOT < WAKE_FILL
        assert lane_set.time_to_drain(0.1, 0.001) == 0.1  # never beyond the longest wait
    finally:
        lane_set.close()
        os.unlink(os.path.join(SHM_DIR, name))
