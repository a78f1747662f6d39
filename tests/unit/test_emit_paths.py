"""The two emit paths, compiled (client/_fastemit.c) and pure Python, side by side.

Each case makes the same calls on two threads of its own, one through each path, so each
writes a fresh lane of this test's namespace; then the lanes are compared: every record field
by field (the timestamp only for being set), the heads, drop counts and name tables. A matrix
of bad calls must raise the same exception type with the same message on both, on a lane with
room and on a full one. The rest of the client suite runs on whichever path is active, and CI
runs it again with $AI_ANALYTICS_PURE_PYTHON=1 (.ci/run).
"""

from __future__ import annotations

import inspect
import math
import os
import struct
import subprocess
import sys
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from ai_analytics import client
from ai_analytics.client import AIOperationType, _compiled, _emit, _lane
from ai_analytics.client import _layout as L
from ai_analytics.client._lane import Lane, LaneGeometry

from helpers import SHM_DIR

fast = _compiled.extension
needs_extension = pytest.mark.skipif(
    fast is None, reason=f"the compiled module is not built: {_compiled.missing_reason}"
)
pytestmark = needs_extension

Call = tuple[str, tuple[Any, ...], dict[str, Any]]  # ("emit" | "cache_state", args, kwargs)


class Latency(float):
    """A float subclass: struct takes it; the compiled path hands it to Python."""


def emit(*args: Any, **kwargs: Any) -> Call:
    return ("emit", args, kwargs)


def cache(*args: Any, **kwargs: Any) -> Call:
    return ("cache_state", args, kwargs)


GOOD: list[Call] = [
    emit("text_generation", 12.5, "llama-3-8b", 0.9),  # the first: interns, in Python
    emit("text_generation", 12.5, "llama-3-8b", 0.9),  # the common call
    emit("text_generation", 1.0),
    emit("text_generation", 3, "llama-3-8b", 1, False, True),
    emit("text_generation", 2.5, "llama-3-8b", None, True, False),
    emit("text_generation", -0.0, quality=0.0, success=False, cache_hit=None),
    emit(operation="text_generation", latency_ms=7.25, model="llama-3-8b"),
    emit("text_generation", model="", latency_ms=1.5, cache_hit=True, quality=0.25),
    emit("text_generation", 4.0, ttft_ms=3.5),
    emit("text_generation", 4.0, queue_ms=2, tokens_out=128),
    emit("text_generation", 4.0, "llama-3-8b", ttft_ms=1.5, queue_ms=0.5, tokens_in=0,
         tokens_out=L.TOKENS_ABSENT - 1),
    emit("text_generation", 4.0, ttft_ms=None, queue_ms=None, tokens_in=None, tokens_out=None),
    emit(AIOperationType.TEXT_GENERATION, 5.0),
    emit(AIOperationType.EMBEDDING, 5.0, "llama-3-8b"),
    emit("text_generation", Latency(6.5)),
    emit("text_generation", True),
    emit("text_generation", 2**62 + 1),
    emit("text_generation", 10**30),
    emit("text_generation", -(2**63)),
    emit("text_generation", math.nan, quality=math.inf),
    emit("text_generation", math.inf, quality=-1.5),
    emit("text_generation", 1.0, quality=1e300),  # beyond float32: Python decides
    emit("text_generation", 1.0, quality=3.4028235e38),  # rounds down to float32's largest
    emit("text_generation", 1.0, quality=1e-50),
    emit("text_generation", 1.0, success=1, cache_hit=0),
    emit("text_generation", 1.0, success=2, cache_hit=5),
    emit("text_generation", 1.0, tokens_in=True, tokens_out=False),
    emit("a new operation", 1.0, "a new model"),
    emit("a new operation", 1.0, "a new model", 0.5),
    emit("ünïcode ✓", 1.0, "模型"),
    emit("ünïcode ✓", 2.0, "模型"),
    emit("text_generation", 1.0, **{"model": "llama-3-8b", "quality": 0.5}),
    cache("kv-cache"),
    cache("kv-cache", 5),
    cache("kv-cache", 5.5, 3),
    cache("kv-cache", None, 0),
    cache(name="kv-cache", evictions=L.TOKENS_ABSENT - 1, size=1e300),
    cache("kv-cache", size=10**30),
    cache("kv-cache", size=-(2**63)),
    cache("text_generation", 2.0),  # a name interned by emit
]

BAD: list[Call] = [
    emit("text_generation", "x"),
    emit("text_generation", None),
    emit("text_generation", 10**400),
    emit("text_generation", 1.0, quality="a"),
    emit("text_generation", 1.0, success=None),
    emit("text_generation", 1.0, success=1.5),
    emit("text_generation", 1.0, success=256),
    emit("text_generation", 1.0, success=-1),
    emit("text_generation", 1.0, cache_hit="y"),
    emit("text_generation", 1.0, cache_hit=1.5),
    emit("text_generation", 1.0, ttft_ms="z"),
    emit("text_generation", 1.0, queue_ms=b"1"),
    emit("text_generation", 1.0, tokens_in=1.5),
    emit("text_generation", 1.0, tokens_in=-1),
    emit("text_generation", 1.0, tokens_out=2**32),
    emit("text_generation", 1.0, tokens_out=L.TOKENS_ABSENT),
    emit("text_generation", 1.0, tokens_in=L.TOKENS_ABSENT),
    emit("text_generation", 1.0, tokens_out="9"),
    emit("text_generation", 1.0, model=5),
    emit("text_generation", 1.0, model=None),
    emit("text_generation", 1.0, "é" * 64),
    emit(None, 1.0),
    emit(3, 1.0),
    emit("", 1.0),
    emit("two\nlines", 1.0),
    emit("x" * 200, 1.0),
    emit("text_generation"),
    emit(latency_ms=1.0),
    emit("text_generation", 1.0, "m", None, True, None, 3.5),
    emit("text_generation", 1.0, unknown=1),
    emit("text_generation", 1.0, latency_ms=2.0),
    cache(None),
    cache(""),
    cache("kv-cache", "big"),
    cache("kv-cache", True),
    cache("kv-cache", 1.0, -1),
    cache("kv-cache", 1.0, L.TOKENS_ABSENT),
    cache("kv-cache", 1.0, 2.0),
    cache("kv-cache", 1.0, True),
    cache("kv-cache", 1.0, 2, 3),
    cache(size=1.0),
]


class Path:
    """One emit path: its emit and cache_state, and a thread whose lane it writes."""

    def __init__(self, name: str, emit: Callable[..., bool], cache_state: Callable[..., bool]):
        self.name = name
        self.functions = {"emit": emit, "cache_state": cache_state}
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"emit-{name}")

    def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self.pool.submit(fn, *args).result(timeout=60)

    def call(self, call: Call) -> tuple[str, object]:
        """("ok", result) or ("raised", (type, message)) of one call on this path's thread."""

        def one() -> tuple[str, object]:
            kind, args, kwargs = call
            try:
                return "ok", self.functions[kind](*args, **kwargs)
            except Exception as exc:
                return "raised", (type(exc), str(exc))

        result: tuple[str, object] = self.run(one)
        return result

    def lane(self) -> Lane:
        lane: Lane = self.run(lambda: _emit._local.lane)
        return lane


@pytest.fixture
def paths(namespace: str) -> Iterator[tuple[Path, Path]]:
    assert fast is not None
    pair = (
        Path("compiled", fast.emit, fast.cache_state),
        Path("python", _emit.emit_python, _emit.cache_state_python),
    )
    yield pair
    for path in pair:
        path.pool.shutdown()


def raw_lane(lane: Lane) -> bytes:
    with open(os.path.join(SHM_DIR, lane.name), "rb") as f:
        return f.read()


def records(lane: Lane) -> list[dict[str, tuple[object, bytes]]]:
    """Every record written so far, field by field as (value, its bytes), the slot's pad
    and reserved bytes included."""
    raw = raw_lane(lane)
    head = struct.unpack_from("<Q", raw, L.OFF_HEAD)[0]
    out = []
    for i in range(head):
        offset = lane.base + i % lane.capacity * L.RECORD_SIZE
        fields: dict[str, tuple[object, bytes]] = {
            name: (struct.unpack_from("<" + code, raw, offset + at)[0],
                   raw[offset + at : offset + at + struct.calcsize(code)])
            for name, code, at in L.RECORD_FIELDS
        }
        fields["pad"] = (raw[offset + 35], raw[offset + 35 : offset + 36])
        fields["reserved"] = (None, raw[offset + 52 : offset + 64])
        out.append(fields)
    return out


def compare_lanes(compiled: Lane, python: Lane) -> None:
    ours, theirs = records(compiled), records(python)
    assert len(ours) == len(theirs)
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        assert a["ts_ns"][0] != 0 and b["ts_ns"][0] != 0
        for field in a:
            if field != "ts_ns":  # the same bytes, NaN payloads and -0.0 included
                assert a[field][1] == b[field][1], (i, field, a[field][0], b[field][0])
    for word in (L.Q_HEAD, L.Q_DROPPED, L.Q_NAMES_COUNT):
        assert compiled.q[word] == python.q[word], word
    names = slice(L.HEADER_SIZE, L.records_offset(compiled.names_capacity))
    assert raw_lane(compiled)[names] == raw_lane(python)[names]
    assert (compiled.head, compiled.dropped) == (python.head, python.dropped)
    assert compiled.head == compiled.q[L.Q_HEAD]


def test_the_same_records_field_by_field(paths: tuple[Path, Path]) -> None:
    compiled, python = paths
    for call in GOOD:
        assert compiled.call(call) == python.call(call) == ("ok", True), call
    compare_lanes(compiled.lane(), python.lane())
    timestamps = [r["ts_ns"][0] for r in records(compiled.lane())]
    assert timestamps == sorted(timestamps)  # the same clock as time.monotonic_ns
    assert timestamps[0] >= 0 and timestamps[-1] <= compiled.run(_emit._now)


def test_the_same_errors(paths: tuple[Path, Path]) -> None:
    """Each bad call raises the same type with the same message, and claims no slot."""
    compiled, python = paths
    for path in paths:
        path.call(emit("text_generation", 1.0, "m"))
        path.call(cache("kv-cache"))
    for call in BAD:
        got, want = compiled.call(call), python.call(call)
        assert got[0] == "raised", call
        assert got == want, call
    compare_lanes(compiled.lane(), python.lane())


def test_the_same_on_a_full_lane(paths: tuple[Path, Path]) -> None:
    """A full lane: every good call is dropped and counted, every bad one raises the same."""
    for path in paths:
        path.call(emit("text_generation", 1.0))
        lane = path.lane()
        for _ in range(lane.capacity - 1):
            path.call(emit("text_generation", 1.0))
    compiled, python = paths
    for call in GOOD + BAD:
        assert compiled.call(call) == python.call(call), call
    compare_lanes(compiled.lane(), python.lane())
    assert compiled.lane().dropped == len(GOOD)


@pytest.fixture
def counted_fallbacks() -> Iterator[list[str]]:
    """Re-register the pure-Python functions behind counters: the calls the compiled path
    hands over show up in the list."""
    assert fast is not None
    handed: list[str] = []

    def counted_emit(*args: Any, **kwargs: Any) -> bool:
        handed.append("emit")
        return _emit.emit_python(*args, **kwargs)

    def counted_cache(*args: Any, **kwargs: Any) -> bool:
        handed.append("cache_state")
        return _emit.cache_state_python(*args, **kwargs)

    watched = type(_emit._local) if _emit._fast is not None else None
    fast.configure(counted_emit, counted_cache, vars(_emit), Lane, watched, AIOperationType,
                   L.RECORD_SIZE, L.OFF_HEAD)
    try:
        yield handed
    finally:
        fast.configure(_emit.emit_python, _emit.cache_state_python, vars(_emit), Lane, watched,
                       AIOperationType, L.RECORD_SIZE, L.OFF_HEAD)


def test_the_common_calls_stay_compiled(
    counted_fallbacks: list[str], on_thread: Callable[..., Any]
) -> None:
    """Once the names are interned, the usual calls never reach Python, an AIOperationType
    member's included; the first call of a thread, a new name and an odd argument do."""
    assert fast is not None
    assert on_thread(fast.emit, "op", 1.0, "m") is True
    assert on_thread(fast.cache_state, "kv") is True
    assert counted_fallbacks == ["emit", "cache_state"]
    counted_fallbacks.clear()
    common = [
        emit("op", 1.0), emit("op", 2, "m", 0.5, False, True), emit("op", 1.0, quality=None),
        emit(operation="op", latency_ms=1.0, model="m", success=True, cache_hit=None),
        emit("op", 1.0, "m", ttft_ms=1.0, queue_ms=2, tokens_in=3, tokens_out=None),
        cache("kv"), cache("kv", 1), cache("kv", 2.5, 7), cache(name="kv", size=None),
    ]
    for kind, args, kwargs in common:
        assert on_thread(getattr(fast, kind), *args, **kwargs) is True
    assert counted_fallbacks == []
    assert on_thread(fast.emit, AIOperationType.EMBEDDING, 1.0) is True  # a new name
    assert on_thread(fast.emit, "op", Latency(1.0)) is True
    assert on_thread(fast.emit, "another", 1.0) is True
    assert counted_fallbacks == ["emit"] * 3
    counted_fallbacks.clear()
    # A member names its value: interned by the member or by the str, either stays compiled.
    assert on_thread(fast.emit, AIOperationType.EMBEDDING, 1.0) is True
    assert on_thread(fast.emit, "embedding", 1.0) is True
    assert on_thread(fast.emit, AIOperationType.EMBEDDING, 2.0, "m", 0.5) is True
    assert on_thread(fast.emit, "chat_completion", 1.0) is True
    assert counted_fallbacks == ["emit"]
    assert on_thread(fast.emit, AIOperationType.CHAT_COMPLETION, 1.0) is True
    assert counted_fallbacks == ["emit"]


def test_drops_stay_compiled(
    counted_fallbacks: list[str], on_thread: Callable[..., Any]
) -> None:
    """On a full lane, a fresh look at the tail and the drop are compiled too; the write once
    the daemon has made room goes to Python (once a lap)."""
    assert fast is not None

    def fill() -> Lane:
        fast.emit("op", 1.0)
        lane: Lane = _emit._local.lane
        for _ in range(lane.capacity - 1):
            fast.emit("op", 1.0)
        return lane

    lane = on_thread(fill)
    counted_fallbacks.clear()
    assert on_thread(fast.emit, "op", 1.0) is False
    assert on_thread(fast.cache_state, "op", 1.0) is False
    assert counted_fallbacks == []
    assert lane.dropped == lane.q[L.Q_DROPPED] == 2
    lane.q[L.Q_TAIL] = 1  # the daemon consumed one record
    assert on_thread(fast.emit, "op", 1.0) is True
    assert counted_fallbacks == ["emit"]
    assert lane.head == lane.q[L.Q_HEAD] == lane.capacity + 1


def test_a_replaced_lane_is_never_written(on_thread: Callable[..., Any]) -> None:
    """The compiled path caches each thread's lane; a lane put in place (or taken away) by
    attribute assignment is the one written from the next call on, and a lane that was
    replaced and freed is never touched again."""
    assert fast is not None

    def run() -> tuple[int, int, int, bool, int]:
        fast.emit("op", 1.0)
        fast.emit("op", 1.0)  # cached now
        first: Lane = _emit._local.lane
        gone = weakref.ref(first)
        second = Lane(os.environ["AI_ANALYTICS_NAMESPACE"],
                      LaneGeometry(L.MIN_CAPACITY, 4, False))
        second.ops["op"] = second.intern("op")
        _emit._local.lane = second
        second.retire()  # still writable; the daemon would only reclaim it
        fast.emit("op", 1.0)
        first_head = first.head
        del first
        freed = gone() is None
        _emit._local.lane = None  # a thread whose lane is being made: the stand-in...
        del _emit._local.lane  # ...or none at all: the next call makes a new one
        fast.emit("op", 1.0)
        third: Lane = _emit._local.lane
        return first_head, second.head, third.head, freed, second.q[L.Q_HEAD]

    first_head, second_head, third_head, freed, published = on_thread(run)
    assert (first_head, second_head, third_head, published) == (2, 1, 1, 1)
    assert freed


def test_a_new_thread_local_is_seen(
    on_thread: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fork handler replaces the thread-local; the compiled path follows."""
    assert fast is not None

    def run() -> tuple[int, int]:
        fast.emit("op", 1.0)
        fast.emit("op", 1.0)
        old: Lane = _emit._local.lane
        monkeypatch.setattr(_emit, "_local", _emit._os_thread_local())
        fast.emit("op", 1.0)
        return old.head, _emit._local.lane.head

    assert on_thread(run) == (2, 1)


def test_a_held_head_keeps_its_value(on_thread: Callable[..., Any]) -> None:
    """The compiled path reuses the head's int object only when nothing else holds it."""
    assert fast is not None

    def run() -> tuple[int, int, int]:
        for _ in range(300):
            fast.emit("op", 1.0)
        lane = _emit._local.lane
        held = lane.head
        before = int(str(held))
        fast.emit("op", 1.0)
        fast.emit("op", 1.0)  # the second may reuse the new int in place
        return held, before, lane.head

    held, before, after = on_thread(run)
    assert held == before == 300 and after == 302


def test_the_signature_is_the_same() -> None:
    assert fast is not None
    for compiled, python in ((fast.emit, _emit.emit_python),
                             (fast.cache_state, _emit.cache_state_python)):
        ours, theirs = inspect.signature(compiled), inspect.signature(python)
        assert [(p.name, p.kind, p.default) for p in ours.parameters.values()] == [
            (p.name, p.kind, p.default) for p in theirs.parameters.values()]


def test_load_acquire_u64() -> None:
    assert fast is not None
    buf = bytearray(256)
    struct.pack_into("<Q", buf, 64, 2**64 - 2)
    assert fast.load_acquire_u64(buf, 64) == 2**64 - 2
    for offset in (-8, 3, 256, 252):
        with pytest.raises(IndexError):
            fast.load_acquire_u64(buf, offset)
    with pytest.raises(TypeError):
        fast.load_acquire_u64("not a buffer", 0)


def test_store_release_u64() -> None:
    assert fast is not None
    buf = bytearray(256)
    fast.store_release_u64(buf, 64, 2**64 - 3)
    assert struct.unpack_from("<Q", buf, 64)[0] == 2**64 - 3
    with pytest.raises(IndexError):
        fast.store_release_u64(buf, 252, 1)
    with pytest.raises(BufferError):
        fast.store_release_u64(b"read-only" * 30, 0, 1)
    with pytest.raises(OverflowError):
        fast.store_release_u64(buf, 0, -1)


def test_release_publication_on_weakly_ordered_cpus(
    paths: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where plain stores may be reordered (ARM64), the Python path publishes the head, the
    name count and the magic through the compiled release store: the same lanes result."""
    assert fast is not None
    monkeypatch.setattr(_emit, "_store_release", fast.store_release_u64)
    monkeypatch.setattr(_lane, "store_release_u64", fast.store_release_u64)
    compiled, python = paths
    for call in GOOD:
        assert compiled.call(call) == python.call(call) == ("ok", True), call
    compare_lanes(compiled.lane(), python.lane())
    assert python.lane().q[L.Q_MAGIC] == L.LANE_MAGIC


def path_in_child(env: dict[str, str]) -> str:
    code = "from ai_analytics import client; print(client.emit_path(), client.emit.__module__)"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, check=True, timeout=60)
    return done.stdout.strip()


COMPILED, PYTHON = "compiled ai_analytics.client._fastemit", "python ai_analytics.client._emit"


@pytest.mark.parametrize(("value", "expected"), [
    (None, COMPILED), ("0", COMPILED), ("", COMPILED), ("1", PYTHON), ("yes", PYTHON),
])
def test_the_variable_picks_the_path(value: str | None, expected: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != _compiled.PURE_PYTHON_ENV}
    if value is not None:
        env[_compiled.PURE_PYTHON_ENV] = value
    assert path_in_child(env) == expected


def test_emit_path_names_the_active_one() -> None:
    expected = "python" if os.environ.get(_compiled.PURE_PYTHON_ENV, "") not in ("", "0") \
        else "compiled"
    assert client.emit_path() == expected
    assert (client.emit is _emit.emit_python) == (expected == "python")
