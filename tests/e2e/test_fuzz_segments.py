"""Segments written by someone else, against a real ai-analyticsd: a batch of hostile lane
segments in /dev/shm, with our prefix in the test's namespace, next to an honest producer. The
daemon stays up, says once per refused segment why, keeps its state file valid JSON and counts
the honest producer exactly.
"""

from __future__ import annotations

import json
import random

from ai_analytics.client import _layout as L

from helpers import (
    COUNTER_OVERFLOW,
    HUGE_LATENCIES,
    U64_MAX,
    entry,
    honest_lane,
    lane_segment,
    record,
    run_python,
    wait_for,
    write_segment,
)

GOOD_PRODUCER = """
from ai_analytics import client
for _ in range(500):
    client.emit("good-producer", 1.5, model="m")
print(client._emit._local.lane.name)
"""


def strict_json(text: str) -> dict:
    """Parse as standard JSON: NaN and Infinity are not JSON."""
    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} in the state file")

    return json.loads(text, parse_constant=refuse)


def fuzzed_batch(seed: int = 20261129) -> list[bytes]:
    """One segment of each kind the daemon must refuse or survive, and honest lanes with
    random bytes flipped (a seeded generator: the same batch on every run)."""
    rng = random.Random(seed)
    batch = [
        rng.randbytes(4096), bytes(honest_lane()[:200]), COUNTER_OVERFLOW, HUGE_LATENCIES,
        # Half-made, and nobody holds its lock: removed as abandoned.
        bytes(lane_segment(16, [], [], fields={"magic": 0})),
        bytes(lane_segment(16, [], [], fields={"pid": 1})),
        bytes(lane_segment(16, [], [], fields={"capacity": 2**31})),
        bytes(lane_segment(16, [], [], fields={"dropped": U64_MAX, "invalid": U64_MAX})),
        bytes(lane_segment(16, [entry("a\x1b[2Jb"), b"\x02\xff\xfe"],
                           [record(0, 1.0, op_id=1), record(1, 1.0, op_id=2)])),
    ]
    for _ in range(8):
        raw = honest_lane()
        for _ in range(rng.randint(1, 24)):
            raw[rng.randrange(L.records_offset(8) + 12 * L.RECORD_SIZE)] = rng.randrange(256)
        batch.append(bytes(raw))
    return batch


def test_a_real_daemon_survives_a_batch_of_fuzzed_segments(daemon_factory, namespace):
    """ai-analyticsd meets a batch of hostile segments: it stays up, says once per refused
    segment why, keeps its state file valid JSON and counts an honest producer exactly."""
    batch = fuzzed_batch()
    names = [write_segment(namespace, raw) for raw in batch]
    daemon = daemon_factory()
    wait_for(lambda: all(f"attached lane {name} " in daemon.log()
                         or f"ignoring segment {name}: " in daemon.log()
                         or f"removed segment {name}: " in daemon.log() for name in names),
             timeout=30, what="every segment attached, refused or removed")
    good = run_python(GOOD_PRODUCER, namespace).stdout.strip()
    state = daemon.state_after(
        lambda s: any(r["operation"] == "good-producer" and r["count"] == 500
                      for r in s["operations"]) and good not in {lane["name"] for lane in
                                                                 s["lanes"]},
        timeout=20, what="the honest lane drained and reclaimed")
    log = daemon.log()
    assert f"reclaimed lane {good} (dead): received 500, dropped 0" in log, log
    assert "Traceback" not in log and "Warning:" not in log, log  # nothing but log lines
    assert daemon.proc.poll() is None
    for name in names:  # many scans later: still one line per refused segment
        assert log.count(f"ignoring segment {name}: ") <= 1, log
    assert strict_json((daemon.state_dir / "state.json").read_text()) == state
    assert state["drain"]["history_writes_failed"] == 0, state["sinks"]
    assert daemon.stop() == 0
