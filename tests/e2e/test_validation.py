"""Values emit accepts but the daemon rejects: counted as invalid, never aggregated."""

from __future__ import annotations

from ai_analytics.client import _layout as L
from ai_analytics.client._lane import Lane, LaneGeometry

from helpers import events_total, run_python, write_names


def test_bad_values_are_counted_invalid_by_the_daemon(daemon_factory, namespace):
    """NaN/inf/negative latency, quality outside [0, 1] (1e300 becomes inf in float32),
    success other than 0/1 and a negative ttft are written, then counted as invalid."""
    daemon = daemon_factory()
    result = run_python(
        """
        import json
        from ai_analytics import client
        nan, inf = float("nan"), float("inf")
        calls = [
            client.emit("bad", nan), client.emit("bad", inf), client.emit("bad", -1.0),
            client.emit("bad", 1.0, quality=1.5), client.emit("bad", 1.0, quality=-0.1),
            client.emit("bad", 1.0, quality=1e300), client.emit("bad", 1.0, success=2),
            client.emit("bad", 1.0, ttft_ms=-5.0), client.emit("bad", 1.0, queue_ms=inf),
            client.emit("good", 0.0, quality=nan), client.emit("good", 1.0, quality=1.0),
            client.emit("good", 1.0, quality=None, ttft_ms=nan, tokens_in=0),
        ]
        print(json.dumps(calls))
        """,
        namespace,
    )
    assert result.stdout.strip() == "[" + ", ".join(["true"] * 12) + "]"
    state = daemon.state_after(lambda s: s["lanes"] == [] and s["lanes_summary"]["reclaimed"],
                               what="reclaim")
    assert state["events"]["invalid"] == 9
    assert state["events"]["received"] == 3
    assert [(r["operation"], r["count"]) for r in state["operations"]] == [("good", 3)]
    assert events_total(state) == 12
    assert daemon.stop() == 0


def test_records_from_a_broken_writer_are_rejected(daemon_factory, namespace):
    """A writer that skips the protocol (wrong sequence numbers, unpublished or undecodable
    names, unknown kinds) gets those records counted invalid; the well-formed ones count."""
    lane = Lane(namespace, LaneGeometry(64, 8, False))
    try:
        write_names(lane, [b"ok", b"\xff\xfe"])  # name 1 is fine, name 2 is not UTF-8
        rows = [
            (0, 1, 1.0, 0.5, 1, 0, 1, 2),  # valid
            (99, 1, 1.0, 0.5, 1, 0, 1, 2),  # wrong seq
            (2, 1, 1.0, 0.5, 2, 0, 1, 2),  # undecodable operation name
            (3, 1, 1.0, 0.5, 7, 0, 1, 2),  # unpublished name id
            (4, 1, 1.0, 0.5, 1, 0, 1, 9),  # cache_hit out of range
            (5, 0, 1.0, 0.5, 1, 0, 1, 2),  # no timestamp
            (6, 1, 1.0, 0.5, L.NAME_ID_OVERFLOW, 0, 1, 2),  # overflow id: valid, "other"
        ]
        for seq, row in enumerate(rows):
            L.RECORD_BASIC.pack_into(lane.buf, lane.base + seq * L.RECORD_SIZE, *row)
        lane.q[L.Q_HEAD] = len(rows)
        daemon = daemon_factory()
        state = daemon.state_after(lambda s: s["events"]["received"] + s["events"]["invalid"]
                                   == len(rows), what="drain")
    finally:
        lane.retire()
    assert state["events"]["received"] == 2 and state["events"]["invalid"] == 5
    assert {r["operation"]: r["count"] for r in state["operations"]} == {"ok": 1, "other": 1}
    assert daemon.stop() == 0
