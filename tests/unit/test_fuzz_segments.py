"""Segments written by someone else: Hypothesis builds lane segments in /dev/shm, with our
prefix in the test's namespace, and runs them through the daemon's own reading code
(``LaneSet`` attaches with ``LaneReader``, ``Drainer`` drains and validates into
``Statistics``). Each one is either attached and drained with its counters consistent, or
refused with one log line, or waited for while it looks half-made; nothing raises.

Examples are derandomized (the same ones on every run) and few, so CI is reproducible and
the file runs in seconds; the bugs found here are pinned with ``@example``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from ai_analytics.client import _layout as L
from ai_analytics.daemon.ingest.drain import Drainer
from ai_analytics.daemon.ingest.lanes import LaneSet
from ai_analytics.daemon.stats.caches import CacheStates
from ai_analytics.daemon.stats.statistics import Statistics

from helpers import (
    COUNTER_OVERFLOW,
    HEADER_COUNTERS,
    HEADER_IDENTITY,
    HUGE_LATENCIES,
    SHM_DIR,
    U64_MAX,
    entry,
    honest_lane,
    lane_segment,
    segment_serials,
    write_segment,
)

FUZZ = settings(
    max_examples=50, deadline=None, derandomize=True, database=None,
    # One namespace (and its cleanup) serves every example; each example removes its segment.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
MAX_SEGMENT_BYTES = 1 << 20  # a fuzzed geometry never maps more than this


# -- strategies ------------------------------------------------------------------------------
u16 = st.integers(0, 2**16 - 1)
u32 = st.integers(0, 2**32 - 1)
# Counters: small and plausible, or anywhere up to the top of the 64-bit range.
u64 = st.one_of(st.integers(0, 300), st.integers(0, U64_MAX),
                st.sampled_from([2**62, 2**63 - 1, 2**63, U64_MAX - 15, U64_MAX]))
f32 = st.floats(width=32)
SIGNALING_NAN32 = (0x7F800001).to_bytes(4, "little")
f32_positive = st.floats(0, 2.0**127, width=32)
# Each record field after seq: (a value validation accepts, any value of its type).
RECORD_FIELDS = {
    "ts_ns": (st.integers(1, 2**63), u64),
    "latency_ms": (st.floats(min_value=0), st.floats()),
    "quality": (st.one_of(st.just(float("nan")), st.floats(0, 1, width=32)), f32),
    "op_id": (st.integers(1, 3), u16),
    "model_id": (st.integers(0, 3), u16),
    "success": (st.integers(0, 1), st.integers(0, 255)),
    "cache_hit": (st.integers(0, 2), st.integers(0, 255)),
    "kind": (st.integers(0, 2), st.integers(0, 255)),
    "ttft_ms": (f32_positive, f32),
    "queue_ms": (f32_positive, f32),
    "tokens_in": (u32, u32),
    "tokens_out": (u32, u32),
}


@st.composite
def records(draw: st.DrawFn, seq: int) -> bytes:
    """Random bytes, or a plausible record (mostly at the right ``seq``) with a field or two
    replaced by any value of its type."""
    if draw(st.integers(0, 3)) == 0:
        return draw(st.binary(min_size=L.RECORD_SIZE, max_size=L.RECORD_SIZE))
    fuzzed = draw(st.sets(st.sampled_from(list(RECORD_FIELDS)), max_size=2))
    values = [draw(RECORD_FIELDS[name][name in fuzzed]) for name in RECORD_FIELDS]
    raw = bytearray(L.RECORD_SIZE)
    L.RECORD_EXTENDED.pack_into(raw, 0, seq if draw(st.integers(0, 7)) else draw(u64), *values)
    for offset in draw(st.sets(st.sampled_from([24, 36, 40]), max_size=1)):  # f32 fields
        raw[offset : offset + 4] = SIGNALING_NAN32  # Python floats cannot carry one
    return bytes(raw)


plain_names = st.text("abcxyz-_.019", min_size=1, max_size=20).map(entry)
any_names = st.one_of(
    st.text(max_size=60).map(lambda text: entry(text.encode()[:L.MAX_NAME_BYTES].decode(
        errors="ignore"))),  # any text: control characters, quotes, other scripts
    st.binary(max_size=L.NAME_ENTRY_SIZE),  # any length byte, any bytes
)


@st.composite
def lanes(draw: st.DrawFn, fuzz_header: bool = False, fuzz_names: bool = False,
          fuzz_records: bool = False) -> bytes:
    """A whole lane segment: its header, name table and records, each honest or fuzzed."""
    capacity, names_capacity = draw(st.sampled_from([16, 64])), draw(st.integers(3, 8))
    names = draw(st.lists(any_names if fuzz_names else plain_names,
                          min_size=0 if fuzz_names else 3, max_size=names_capacity))
    count = draw(st.integers(0, capacity)) if fuzz_records else 0
    written = [draw(records(seq)) for seq in range(count)]
    fields: dict[str, int] = {}
    if fuzz_header:
        for name in draw(st.sets(st.sampled_from(HEADER_IDENTITY), max_size=2)):
            fields[name] = draw(u32 if name in HEADER_IDENTITY[1:9] else u64)
        for name in draw(st.sets(st.sampled_from(list(HEADER_COUNTERS)), max_size=4)):
            fields[name] = draw(u64)
    return bytes(lane_segment(capacity, names, written, names_capacity, fields))


any_segment = st.one_of(
    lanes(fuzz_header=True, fuzz_names=True, fuzz_records=True),
    st.binary(max_size=4096),  # anything at all
    # A lane cut short, or grown: its size no longer matches its geometry.
    st.tuples(lanes(fuzz_records=True), st.integers(0, MAX_SEGMENT_BYTES)).map(
        lambda pair: pair[0][: pair[1]] if pair[1] < len(pair[0]) else pair[0] + bytes(64)),
)


# -- through the daemon's reading code -------------------------------------------------------


@pytest.fixture
def daemon_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.INFO, logger="ai_analytics.daemon")
    yield caplog


def read_as_the_daemon_does(namespace: str, raw: bytes, caplog: pytest.LogCaptureFixture
                            ) -> str:
    """Attach, drain and account ``raw`` as the daemon's loop does, checking the invariants;
    return what became of it: attached, refused or waiting (no magic or header yet)."""
    caplog.clear()
    name = write_segment(namespace, raw)
    lane_set = LaneSet(namespace, SHM_DIR, frozenset({os.getuid(), 0}), 4)
    stats = Statistics(8, 8, 32)
    drainer = Drainer(lane_set, stats, CacheStates(8), batch_size=256)
    try:
        lane_set.scan()
        if name in lane_set.lanes:
            check_drain(lane_set, name, drainer, stats)
            outcome = "attached"
        elif name in lane_set.rejected:
            outcome = "refused"
        else:
            assert name in lane_set.unready_since
            outcome = "waiting"
        for _ in range(2):  # later scans log nothing more about it
            lane_set.scan()
        said = [r.getMessage() for r in caplog.records
                if r.levelno >= logging.WARNING and name in r.getMessage()]
        if outcome == "refused":
            assert len(said) == 1 and said[0].startswith(f"ignoring segment {name}: "), said
        else:
            assert said == []
    finally:
        lane_set.close()
        os.unlink(os.path.join(SHM_DIR, name))
    event(outcome)
    return outcome


def check_drain(lane_set: LaneSet, name: str, drainer: Drainer, stats: Statistics) -> None:
    """Drain the attached lane up to its head: every slot it passed counts once, as received,
    invalid or overwritten; the statistics hold only printable names and stay valid JSON."""
    lane = lane_set.lanes[name]
    reader = lane.reader
    before, tail, head = lane.outcomes(), reader.tail, reader.head()
    drainer.drain(stop_at=0.0)  # one batch: a ring of at most 64 records fits in it
    after = lane.outcomes()
    assert reader.tail == max(tail, head) and after.pending == 0
    passed = sum(getattr(after, field) - getattr(before, field)
                 for field in ("received", "invalid", "overwritten"))
    assert passed == reader.tail - tail
    # What a restarted daemon resumes from: the counters stored back into the segment.
    assert (reader.shared_invalid(), reader.shared_overwritten()) == (
        lane.invalid % 2**64, lane.overwritten % 2**64)
    # Cache states are received but are not series events: the series hold at most the rest.
    assert int(stats.all_time.sum()) <= after.received - before.received
    assert all(text.isprintable() for text in stats.registry.name_list)
    json.dumps(stats.operations(), allow_nan=False)


@FUZZ
@given(raw=lanes(fuzz_header=True))
@example(raw=COUNTER_OVERFLOW)
def test_fuzzed_header(namespace, daemon_log, raw):
    read_as_the_daemon_does(namespace, raw, daemon_log)


@FUZZ
@given(raw=lanes(fuzz_names=True))
def test_fuzzed_name_table(namespace, daemon_log, raw):
    assert read_as_the_daemon_does(namespace, raw, daemon_log) == "attached"


@FUZZ
@given(raw=lanes(fuzz_records=True))
@example(raw=HUGE_LATENCIES)
def test_fuzzed_records(namespace, daemon_log, raw):
    assert read_as_the_daemon_does(namespace, raw, daemon_log) == "attached"


@FUZZ
@given(raw=any_segment)
def test_random_and_truncated_segments(namespace, daemon_log, raw):
    read_as_the_daemon_does(namespace, raw, daemon_log)


def test_links_and_fifos_are_refused_not_followed(namespace, daemon_log, tmp_path):
    """A symlink to a valid lane is not followed, a FIFO is not a lane: both are refused,
    once, with the reason."""
    target = tmp_path / "lane"
    target.write_bytes(bytes(honest_lane()))
    link, fifo = (f"{namespace}.lane.{os.getpid():016x}.{next(segment_serials)}" for _ in range(2))
    os.symlink(target, os.path.join(SHM_DIR, link))
    os.mkfifo(os.path.join(SHM_DIR, fifo), 0o600)
    lane_set = LaneSet(namespace, SHM_DIR, frozenset({os.getuid(), 0}), 4)
    for _ in range(2):
        lane_set.scan()
    assert len(lane_set) == 0 and set(lane_set.rejected) == {link, fifo}
    said = sorted(r.getMessage() for r in daemon_log.records if r.levelno >= logging.WARNING)
    assert said == sorted([f"ignoring segment {fifo}: not a regular file",
                           f"ignoring segment {link}: cannot open: [Errno 40] Too many levels "
                           f"of symbolic links: '{os.path.join(SHM_DIR, link)}'"])


