"""``emit``: record one inference event in the calling thread's lane.

The fast path is a thread-local read, two dict lookups, a slot claim, one ``pack_into`` and
one 8-byte head store. Everything else (first call in a thread, a new name, a full lane, a
bad argument) leaves the fast path through an exception or a failed comparison.

Claiming a slot (``h = lane.head; lane.head = h + 1``) has no call in between, so a signal
handler, which CPython runs only at call boundaries and loop edges, can never claim the same
slot; see docs/ring-format.md for what an emit from a signal handler can and cannot do.
"""

from __future__ import annotations

import logging
import math
import mmap
import os
import struct
import threading
import time
from typing import TYPE_CHECKING

from . import _compiled
from . import _layout as L
from ._lane import Lane, after_fork_in_child, read_geometry
from ._operations import AIOperationType
from ._segments import namespace_from_env, segment_dir_from_env

log = logging.getLogger("ai_analytics.client")


def _os_thread_local() -> threading.local:
    """A thread-local that is local to the operating-system thread.

    gevent and eventlet replace ``threading.local`` with a greenlet-local: a server with a
    green thread per request would make a lane per request. Greenlets of one OS thread never
    switch inside ``emit`` (it neither blocks nor yields), so they may share its lane; a
    fresh copy of the built-in ``_thread`` module, which no monkey-patching has touched,
    gives the OS thread's own local type.
    """
    if threading.local.__module__ == "_thread":
        return _watched(threading.local)()
    import importlib.machinery  # only in a patched process: the client's import stays light
    import importlib.util

    spec = importlib.machinery.BuiltinImporter.find_spec("_thread")
    assert spec is not None and spec.loader is not None  # built into every CPython
    pristine = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pristine)
    local: threading.local = _watched(pristine._local)()
    return local


def _watched(base: type[threading.local]) -> type[threading.local]:
    """``base``, or on the compiled path a subclass whose attribute stores tell the compiled
    module: it caches each thread's lane, and must forget it before the lane is replaced
    (see ``thread_lane`` in _fastemit.c). The lane is always set by attribute assignment.
    (The subclass makes the pure-Python path's read of the lane some 15 ns slower, which is
    why the pure path alone keeps the plain type.)"""
    extension = _fast
    if extension is None:
        return base
    if base in _watched_types:  # one type for good: the compiled module knows it by identity
        return _watched_types[base]
    local_setattr = extension.local_setattr

    class WatchedLocal(base):  # type: ignore[valid-type,misc]
        def __setattr__(self, name: str, value: object) -> None:
            local_setattr(self, name, value)

        def __delattr__(self, name: str) -> None:
            local_setattr(self, name)

    _watched_types[base] = WatchedLocal
    return WatchedLocal


_watched_types: dict[type[threading.local], type[threading.local]] = {}


_fast, _pure_reason = _compiled.chosen()
_local = _os_thread_local()
_now = time.monotonic_ns
_pack_basic = L.RECORD_BASIC.pack_into
_pack_extended = L.RECORD_EXTENDED.pack_into
_Q_HEAD = L.Q_HEAD
_OFF_HEAD = L.OFF_HEAD
_store_release = _compiled.store_release_u64  # None on x86-64, or without the compiled module
_Q_DROPPED = L.Q_DROPPED
_NAN = float("nan")
_RETRY_SECONDS = 5.0
assert L.RECORD_SIZE == 64  # written as a literal on the hot path: a constant, not a lookup


def emit(
    operation: str | AIOperationType,
    latency_ms: float,
    model: str = "",
    quality: float | None = None,
    success: bool = True,
    cache_hit: bool | None = None,
    *,
    ttft_ms: float | None = None,
    queue_ms: float | None = None,
    tokens_in: int | None = None,
    tokens_out: int | None = None,
) -> bool:
    """Record one inference event without blocking; return False if it was dropped.

    ``operation`` and ``model`` are names (``model`` may be empty). ``latency_ms`` is the
    processing time in milliseconds; ``quality`` a score in [0, 1] or None; ``cache_hit``
    None when the operation was not a cache lookup. ``ttft_ms`` (time to first token),
    ``queue_ms``, ``tokens_in`` and ``tokens_out`` are for LLM serving and cost nothing when
    not passed. A wrong type raises TypeError, an unusable name or an out-of-range integer
    ValueError; NaN or negative latencies and qualities outside [0, 1] are counted as
    ``invalid`` by the daemon.
    """
    try:
        lane = _local.lane
        op_id = lane.ops[operation]
        model_id = lane.models[model]
    except (AttributeError, KeyError, TypeError):
        lane, op_id, model_id = _resolve(operation, model)
    h = lane.head
    if h >= lane.limit:
        return _emit_full(
            lane, op_id, model_id, latency_ms, quality, success, cache_hit,
            ttft_ms, queue_ms, tokens_in, tokens_out,
        )
    lane.head = h + 1
    try:
        if ttft_ms is None and queue_ms is None and tokens_in is None and tokens_out is None:
            _pack_basic(
                lane.buf, lane.base + h % lane.capacity * 64, h, _now(), latency_ms,
                _NAN if quality is None else quality, op_id, model_id, success,
                2 if cache_hit is None else cache_hit,
            )
        else:
            _pack_extended_record(
                lane, h, op_id, model_id, latency_ms, quality, success, cache_hit,
                ttft_ms, queue_ms, tokens_in, tokens_out,
            )
    except struct.error as exc:
        if lane.head == h + 1:  # give the slot back unless a signal handler took the next one
            lane.head = h
        _raise_argument_error(
            exc, latency_ms, quality, success, cache_hit, ttft_ms, queue_ms, tokens_in, tokens_out
        )
    if _store_release is None:
        lane.q[_Q_HEAD] = lane.head  # publish: one aligned 8-byte store, after the record
    else:  # a CPU that may reorder stores: a release store
        _store_release(lane.buf, _OFF_HEAD, lane.head)
    return True


def cache_state(name: str, size: float | None = None, evictions: int = 0) -> bool:
    """Report a cache's state: its current ``size`` (entries or bytes: a gauge, summed over
    the worker processes that report it) and the ``evictions`` since this thread's previous
    call for that cache (a counter increment). Same lock-free path as ``emit``; returns False
    when the lane is full. Hit rates come from ``emit(..., cache_hit=...)``.
    """
    lane, name_id, _ = _resolve_cache(name)
    h = lane.head
    if h >= lane.limit:
        lane.refresh_limit()
        h = lane.head
        if h >= lane.limit:
            _pack_cache_state(lane.scratch, 0, 0, name_id, size, evictions)
            lane.dropped += 1
            lane.q[_Q_DROPPED] = lane.dropped
            if lane.no_ring:
                _without_lane(lane)
            return False
    lane.head = h + 1
    try:
        _pack_cache_state(lane.buf, lane.base + h % lane.capacity * 64, h, name_id, size,
                          evictions)
    except (struct.error, TypeError, ValueError):
        if lane.head == h + 1:
            lane.head = h
        raise
    if _store_release is None:
        lane.q[_Q_HEAD] = lane.head
    else:
        _store_release(lane.buf, _OFF_HEAD, lane.head)
    return True


def _resolve_cache(name: object) -> tuple[Lane, int, int]:
    try:
        lane = _local.lane
        return lane, lane.ops[name], 0
    except (AttributeError, KeyError, TypeError):
        return _resolve(name, "", argument="name")


def _pack_cache_state(target: mmap.mmap | bytearray, offset: int, h: int, name_id: int,
                      size: float | None, evictions: int) -> None:
    if size is not None and (isinstance(size, bool) or not isinstance(size, (int, float))):
        raise TypeError(f"size must be a number or None, got {type(size).__name__}")
    if isinstance(evictions, bool) or not isinstance(evictions, int):
        raise TypeError(f"evictions must be an int, got {type(evictions).__name__}")
    if not 0 <= evictions < L.TOKENS_ABSENT:
        raise ValueError(f"evictions out of 0..4294967294: {evictions!r}")
    _pack_extended(target, offset, h, _now(), _NAN if size is None else size, _NAN, name_id, 0,
                   1, L.CACHE_ABSENT, L.KIND_CACHE_STATE, _NAN, _NAN, evictions, 0)


def _pack_extended_record(
    lane: Lane, h: int, op_id: int, model_id: int, latency_ms: float, quality: float | None,
    success: bool, cache_hit: bool | None, ttft_ms: float | None, queue_ms: float | None,
    tokens_in: int | None, tokens_out: int | None, target: bytearray | None = None,
    offset: int = -1,
) -> None:
    if tokens_in == L.TOKENS_ABSENT or tokens_out == L.TOKENS_ABSENT:
        # It packs fine but means "absent" in the record: fail like a bad pack would.
        raise struct.error("a token count of 4294967295 is the 'absent' marker")
    _pack_extended(
        lane.buf if target is None else target,
        lane.base + h % lane.capacity * 64 if offset < 0 else offset,
        h, _now(), latency_ms, _NAN if quality is None else quality, op_id, model_id, success,
        2 if cache_hit is None else cache_hit, L.KIND_EXTENDED,
        _NAN if ttft_ms is None else ttft_ms, _NAN if queue_ms is None else queue_ms,
        L.TOKENS_ABSENT if tokens_in is None else tokens_in,
        L.TOKENS_ABSENT if tokens_out is None else tokens_out,
    )


def _emit_full(
    lane: Lane, op_id: int, model_id: int, latency_ms: float, quality: float | None,
    success: bool, cache_hit: bool | None, ttft_ms: float | None, queue_ms: float | None,
    tokens_in: int | None, tokens_out: int | None,
) -> bool:
    """The cached tail says the lane is full: look again, then write or drop and count."""
    lane.refresh_limit()
    if lane.head < lane.limit:
        return _write_after_refresh(
            lane, op_id, model_id, latency_ms, quality, success, cache_hit,
            ttft_ms, queue_ms, tokens_in, tokens_out,
        )
    # Dropped, but a bad argument must fail exactly as on the write path: pack it aside.
    try:
        if ttft_ms is None and queue_ms is None and tokens_in is None and tokens_out is None:
            _pack_basic(
                lane.scratch, 0, 0, 0, latency_ms, _NAN if quality is None else quality,
                op_id, model_id, success, 2 if cache_hit is None else cache_hit,
            )
        else:
            _pack_extended_record(
                lane, 0, op_id, model_id, latency_ms, quality, success, cache_hit,
                ttft_ms, queue_ms, tokens_in, tokens_out, lane.scratch, 0,
            )
    except struct.error as exc:
        _raise_argument_error(
            exc, latency_ms, quality, success, cache_hit, ttft_ms, queue_ms, tokens_in, tokens_out
        )
    lane.dropped += 1  # no call in between: a signal handler cannot split the increment
    lane.q[_Q_DROPPED] = lane.dropped
    if lane.no_ring:
        _without_lane(lane)
    return False


def _write_after_refresh(
    lane: Lane, op_id: int, model_id: int, latency_ms: float, quality: float | None,
    success: bool, cache_hit: bool | None, ttft_ms: float | None, queue_ms: float | None,
    tokens_in: int | None, tokens_out: int | None,
) -> bool:
    """The slow path's write, once a fresh look at the tail found room (always the extended
    record: this path is taken once a lap, its speed does not matter)."""
    h = lane.head
    if h >= lane.limit:  # a signal handler filled it since the caller looked
        lane.dropped += 1
        lane.q[_Q_DROPPED] = lane.dropped
        return False
    lane.head = h + 1
    try:
        _pack_extended_record(
            lane, h, op_id, model_id, latency_ms, quality, success, cache_hit,
            ttft_ms, queue_ms, tokens_in, tokens_out,
        )
    except struct.error as exc:
        if lane.head == h + 1:
            lane.head = h
        _raise_argument_error(
            exc, latency_ms, quality, success, cache_hit, ttft_ms, queue_ms, tokens_in, tokens_out
        )
    if _store_release is None:
        lane.q[_Q_HEAD] = lane.head
    else:
        _store_release(lane.buf, _OFF_HEAD, lane.head)
    return True


def _resolve(operation: object, model: object, argument: str = "operation"
             ) -> tuple[Lane, int, int]:
    """Slow path: create this thread's lane and/or intern new names, validating them."""
    lane = getattr(_local, "lane", None)
    if lane is None:
        _check_name(operation, argument)
        _check_name(model, "model")
        lane = _make_thread_lane()
    return lane, _intern(lane, operation, argument), _intern(lane, model, "model")


def _make_thread_lane() -> Lane:
    """Create the calling thread's lane and make it the one its events go to."""
    # Making the lane takes about a millisecond. An emit from a signal handler meanwhile
    # finds the stand-in and is dropped onto it; making a lane of its own instead would nest
    # without end when signals come faster than a lane is made.
    stand_in = _stand_in()
    _local.lane = stand_in
    try:
        lane = _new_lane()
    except BaseException:  # KeyboardInterrupt: no lane, and no stand-in left behind
        _local.lane = None
        raise
    _local.lane = lane
    if stand_in.dropped:
        _take_drops(stand_in, lane)
    return lane


def _stand_in() -> _NoLane:
    """This thread's lane while it is being made: it drops every event and counts it."""
    stand_in = _NoLane()
    stand_in.tally = [0]  # its own, not the process's: its drops move to the lane
    stand_in.next_retry = math.inf  # never tries for a lane itself
    return stand_in


def _take_drops(stand_in: Lane, lane: Lane) -> None:
    """Count on ``lane`` what was dropped onto its stand-in, so that the daemon sees every
    call (each statement here is free of calls: a signal handler cannot split it)."""
    lane.dropped += stand_in.dropped
    stand_in.dropped = 0  # moved: its retirement has nothing left to hand over
    lane.q[_Q_DROPPED] = lane.dropped
    if lane.tally is not None:
        lane.tally[0] = lane.dropped


def _intern(lane: Lane, name: object, argument: str) -> int:
    ids = lane.models if argument == "model" else lane.ops
    try:
        return ids[name]
    except (KeyError, TypeError):
        pass
    text = _check_name(name, argument)
    known = lane.ops.get(text, lane.models.get(text))  # one table serves both kinds
    ident = known if known is not None else lane.intern(text)
    if ident != L.NAME_ID_OVERFLOW or lane.names_count >= lane.names_capacity:
        ids[name] = ident  # cache; an overflow from a re-entrant call is not cached
        ids[text] = ident
    return ident


def _check_name(name: object, argument: str) -> str:
    if isinstance(name, AIOperationType):
        name = name.value
    if not isinstance(name, str):
        kinds = "a str or AIOperationType" if argument == "operation" else "a str"
        raise TypeError(f"{argument} must be {kinds}, got {type(name).__name__}")
    if argument != "model" and not name:
        raise ValueError(f"{argument} must not be empty")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError(f"{argument} is not valid UTF-8 text: {name!r}") from None
    if size > L.MAX_NAME_BYTES:
        raise ValueError(
            f"{argument} is {size} bytes in UTF-8, the limit is {L.MAX_NAME_BYTES}: {name[:40]!r}…"
        )
    if not name.isprintable():  # the daemon refuses such names too
        raise ValueError(f"{argument} contains control or non-printable characters: {name!r}")
    return name


_ARGUMENT_CODES = (
    ("latency_ms", "d"),
    ("quality", "f"),
    ("success", "B"),
    ("cache_hit", "B"),
    ("ttft_ms", "f"),
    ("queue_ms", "f"),
    ("tokens_in", "I"),
    ("tokens_out", "I"),
)
_KINDS = {"d": "a number", "f": "a number or None", "B": "a bool", "I": "an int or None"}


def _raise_argument_error(exc: struct.error, *values: object) -> None:
    """Turn the struct error of a failed pack into one that names the argument."""
    for (argument, code), value in zip(_ARGUMENT_CODES, values, strict=False):
        if value is None and argument != "latency_ms" and argument != "success":
            continue
        try:
            struct.pack(code, value)
            if code == "I" and value == L.TOKENS_ABSENT:
                raise struct.error("reserved value")
        except struct.error as bad:
            integral = isinstance(value, int) and not isinstance(value, bool)
            if code in "BI" and integral:
                limit = "0..4294967294" if code == "I" else "0..1"
                raise ValueError(f"{argument} out of {limit}: {value!r}") from None
            raise TypeError(
                f"{argument} must be {_KINDS[code]}, got {type(value).__name__}: {bad}"
            ) from None
    raise TypeError(f"bad argument to emit: {exc}")


class _NoLane(Lane):
    """Stands in when not even a no-ring lane can be created (no usable segment directory, no
    file descriptor left): its drops are counted in this process only."""

    __slots__ = ()

    def __init__(self) -> None:  # deliberately skips Lane.__init__: nothing is mapped
        self.pid = os.getpid()
        self.no_ring = True
        self.head = self.limit = 1
        self.capacity = self.base = self.dropped = self.names_count = self.names_capacity = 0
        self.fd = -1
        self.ops = {}
        self.models = {"": 0}
        self.interning = False
        self.scratch = self.buf = bytearray(L.RECORD_SIZE)
        self.name = ""
        self.q = memoryview(bytearray(L.HEADER_SIZE)).cast("Q")
        self.next_retry = 0.0
        self.tally = None

    def intern(self, name: str) -> int:
        return L.NAME_ID_OVERFLOW

    def retire(self) -> None:
        """Hand the drops counted here to the daemon, on a no-ring lane made now and retired
        at once, if one can be made: a directory that had no room when the thread began may
        have some when it ends (another thread's failed try for a whole lane holds the room
        only while it lasts). Once: the count is then this object's no more."""
        dropped, self.dropped = self.dropped, 0
        if not dropped:
            return
        stub = _try_lane(ring=False)
        if stub is not None:
            stub.dropped = dropped
            stub.q[_Q_DROPPED] = dropped
            stub.retire()


# One count per thread that has been without a whole lane (each written by its own thread
# only: no lock), so that dropped_without_lane() can sum the process's.
_without_lane_tallies: list[list[int]] = []
_logged: set[str] = set()


def _log_once(kind: str, message: str, *args: object) -> None:
    if kind not in _logged:
        _logged.add(kind)
        log.warning(message, *args)


def _without_lane(lane: Lane) -> None:
    """After a drop on a lane without a ring: keep the process-wide count, and every few
    seconds try again for a whole lane (the directory may have room now)."""
    lane.tally[0] = lane.dropped  # type: ignore[index]
    now = time.monotonic()
    if now < lane.next_retry:
        return
    lane.next_retry = now + _RETRY_SECONDS
    better = _try_lane(ring=True)
    if better is None and isinstance(lane, _NoLane):
        better = _try_lane(ring=False)  # at least the drops from now on reach the daemon
    if better is None:
        return
    if getattr(_local, "lane", None) is lane:
        _local.lane = better
        lane.retire()  # its drops are final: the daemon counts them and reclaims it
    else:  # a signal handler replaced it meanwhile
        better.retire()


def _try_lane(ring: bool) -> Lane | None:
    try:
        namespace = namespace_from_env()
        directory = segment_dir_from_env()
        return Lane(namespace, read_geometry(namespace, directory), directory=directory,
                    ring=ring)
    except (OSError, ValueError) as exc:
        if ring:
            _log_once("lane", "ai_analytics: cannot create a lane (%s); this thread's events "
                      "are dropped and counted as no_lane until one can be made", exc)
        else:
            _log_once("no-ring", "ai_analytics: cannot create even a %d-byte lane (%s); "
                      "events dropped for want of a lane are counted in this process "
                      "(client.dropped_without_lane()), and reach the daemon only if a lane "
                      "can be made later", L.STUB_SIZE, exc)
        return None


def _new_lane() -> Lane:
    lane = _try_lane(ring=True) or _try_lane(ring=False) or _NoLane()
    if lane.no_ring:
        lane.next_retry = time.monotonic() + _RETRY_SECONDS
        lane.tally = [0]
        _without_lane_tallies.append(lane.tally)
    return lane


def prepare() -> bool:
    """Create the calling thread's lane now rather than at its first ``emit``.

    Making a lane takes a few system calls and page faults (about a millisecond on a quiet
    machine, tens inside a busy inference worker): call this where a thread starts serving
    (a server's startup hook, a pool's initializer) so that no request pays for it. Returns
    True when the thread has a lane with a ring, False when events will be dropped and
    counted for want of one (a full or unusable segment directory, as ``emit`` would find).
    Calling it again costs a lookup.
    """
    lane = getattr(_local, "lane", None)
    if lane is None:
        lane = _make_thread_lane()
    return not lane.no_ring


def dropped_without_lane() -> int:
    """Events this process's threads dropped because they had no whole lane (a full or
    unusable segment directory), since the process started. Those made into a no-ring lane
    reach the daemon as ``no_lane``; the rest are counted only here."""
    return sum(tally[0] for tally in list(_without_lane_tallies))


def _after_fork_in_child() -> None:
    # A forked child inherits its parent's mapping and thread-local lane; it must take its
    # own, or two processes would write one ring. Its counts of drops without a lane are
    # its parent's.
    global _local, _without_lane_tallies
    _local = _os_thread_local()
    _without_lane_tallies = []
    after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)


# The compiled fast path, when built and not turned off (see _compiled): it reads this
# module's ``_local`` on every call and the same Lane objects, and hands every call it does
# not handle to the pure-Python functions above, so both paths write the same bytes and
# raise the same errors.
emit_python, cache_state_python = emit, cache_state
if _compiled.extension is not None:  # configured even when unused: tests compare both paths
    _compiled.extension.configure(emit_python, cache_state_python, globals(), Lane,
                                  type(_local) if _fast is not None else None,
                                  AIOperationType, L.RECORD_SIZE, L.OFF_HEAD)
if TYPE_CHECKING:
    emit, cache_state = emit_python, cache_state_python
elif _fast is not None:
    emit, cache_state = _fast.emit, _fast.cache_state

def emit_path() -> str:
    """``"compiled"`` when ``emit`` and ``cache_state`` run the C extension, ``"python"``
    when they run the pure-Python path (extension not built, a free-threaded interpreter, or
    $AI_ANALYTICS_PURE_PYTHON set; ``emit_path_reason()`` says which)."""
    return "python" if _fast is None else "compiled"


def emit_path_reason() -> str:
    """Why the pure-Python path is used; empty when the compiled one is."""
    return _pure_reason
