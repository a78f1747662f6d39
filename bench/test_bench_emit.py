"""pytest-benchmark cases for ``client.emit``, its floor, its drop path and the daemon's drain.

The project's pytest configuration skips benchmarks (``--benchmark-skip`` in addopts), so a
plain ``pytest`` never runs these; run them with::

    .venv/bin/pytest bench/ --benchmark-only

Cases ``noop``, ``bare``, ``emit``, ``emit_extended`` and ``emit_drop`` are one call each and
print side by side in the group ``emit``; ``drain`` is one ``Drainer._batch`` over a full
lane of 65536 records (group ``drain``, M records/s in its ``extra_info``). What each case is
and why is in the docstring of ``bench/emit_bench.py``; both take their pieces from
``bench/benchlib/``, which pytest finds as it finds this module (bench/ goes on ``sys.path``).
One difference: pytest-benchmark cannot run code between calls, so the live lane here is
created in overwrite mode (a control segment published first) and never needs draining;
emit's fast path is the same code as with a drained lane in drop mode.

Each test uses its own namespace, and every segment of it is removed afterwards.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import pytest

from ai_analytics import client
from ai_analytics.daemon.malloc_tuning import keep_temporaries_on_heap

from benchlib.drain import one_mixed_lane
from benchlib.lanes import MODEL, OP, Lanes, bare, lane_in_place, remove_segments
from benchlib.timing import noop

_serial = itertools.count()
DRAIN_CAPACITY = 65536
BASIC = (OP, 12.5, MODEL, 0.9)
EXTENDED = {"ttft_ms": 3.5, "tokens_in": 512, "tokens_out": 128}
# Rounds of at least 100 us (hundreds of calls), so the timer's own cost is spread thin; the
# collector is off while timing, as in emit_bench.py.
EMIT_GROUP = pytest.mark.benchmark(group="emit", min_time=0.0001, disable_gc=True)


@pytest.fixture
def namespace() -> Iterator[str]:
    name = f"aibench-{os.getpid()}-{next(_serial)}"
    yield name
    remove_segments(name)


@pytest.fixture
def lanes(namespace: str) -> Iterator[Lanes]:
    """This thread's live lane (overwrite mode) and a full lane, in a private namespace."""
    with Lanes(namespace, overwrite=True) as lanes:
        yield lanes


@EMIT_GROUP
def test_noop(benchmark, lanes: Lanes) -> None:
    """The floor: a function with emit's signature, called with the same arguments."""
    assert benchmark(noop, *BASIC) is True


@EMIT_GROUP
def test_bare(benchmark, lanes: Lanes) -> None:
    """The bare reference write into the live lane: the least a pure-Python emit can do."""
    assert lanes.live is not None
    head = lanes.live.head
    assert benchmark(bare, *BASIC) is True
    assert lanes.live.head > head


@EMIT_GROUP
def test_emit(benchmark, lanes: Lanes) -> None:
    """emit with the common arguments into a lane that never fills."""
    assert lanes.live is not None
    assert benchmark(client.emit, *BASIC) is True
    assert lanes.live.dropped == 0


@EMIT_GROUP
def test_emit_extended(benchmark, lanes: Lanes) -> None:
    """emit with the LLM-serving extras (the extended record)."""
    assert lanes.live is not None
    assert benchmark(client.emit, *BASIC, **EXTENDED) is True
    assert lanes.live.dropped == 0


@EMIT_GROUP
def test_emit_drop(benchmark, lanes: Lanes) -> None:
    """emit into a full lane that is never drained: every call is dropped and counted."""
    full = lanes.full
    assert full is not None
    head, dropped = full.head, full.dropped
    with lane_in_place(full):
        assert benchmark(client.emit, *BASIC) is False
    assert full.head == head
    assert full.dropped > dropped


@pytest.mark.benchmark(group="drain")
def test_drain(benchmark, namespace: str) -> None:
    """The daemon's Drainer._batch over a full ring of emitted records, re-read each round."""
    # The daemon's malloc thresholds, as its main() applies them. Its numpy sort setting
    # (benchlib/as_daemon.py) cannot apply here: pytest imported numpy already.
    keep_temporaries_on_heap()
    drain = one_mixed_lane(f"{namespace}-drain", DRAIN_CAPACITY)
    try:
        taken = benchmark.pedantic(drain.batch, setup=drain.rewind, rounds=30, warmup_rounds=2)
        assert taken == DRAIN_CAPACITY
        assert drain.lanes[0].invalid == 0
        benchmark.extra_info["records_per_batch"] = DRAIN_CAPACITY
        if benchmark.stats is not None:  # None under --benchmark-disable (one untimed run)
            best = benchmark.stats.stats.min
            benchmark.extra_info["fastest_mrecords_per_s"] = round(
                DRAIN_CAPACITY / best / 1e6, 2)
    finally:
        drain.close()
