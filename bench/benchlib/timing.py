"""Timing on a shared machine: gc-off timers, call loops, and interleaved rounds.

A burst of load from a neighbour slows whatever runs at that moment. Interleaved rounds
(round r runs every case once, in an order rotated by r) spread such bursts over all cases
alike, and the fastest round of a case, the least disturbed one, is its figure; the median is
shown beside it. The garbage collector is off while anything is timed, as in ``timeit``.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Mapping
from typing import TypeVar

from ai_analytics.client import AIOperationType

T = TypeVar("T")
Loop = Callable[[Callable[..., object], int], None]


def noop(
    operation: object,
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
    """emit's signature and nothing else: the floor of any pure-Python emit."""
    return True


def loop_basic(f: Callable[..., object], n: int) -> None:
    """``n`` calls of ``f`` with emit's common arguments; ``f`` is a local name, so every
    case pays the same loop and call overhead."""
    for _ in range(n):
        f("text_generation", 12.5, "llama-3-8b", 0.9)


def loop_enum(f: Callable[..., object], n: int) -> None:
    """``loop_basic`` with the operation named by its ``AIOperationType`` member."""
    operation = AIOperationType.TEXT_GENERATION
    for _ in range(n):
        f(operation, 12.5, "llama-3-8b", 0.9)


def loop_extended(f: Callable[..., object], n: int) -> None:
    """The same with the LLM-serving extras (emit's 52-byte record)."""
    for _ in range(n):
        f("text_generation", 12.5, "llama-3-8b", 0.9, ttft_ms=3.5, tokens_in=512, tokens_out=128)


def _nothing() -> None:
    pass


def time_calls(
    loop: Loop,
    f: Callable[..., object],
    calls: int,
    chunk: int,
    between: Callable[[], None] = _nothing,
) -> tuple[float, int]:
    """Time ``calls`` calls (rounded up to whole chunks); ``between`` runs untimed before each
    chunk. Return (ns per call, calls made)."""
    chunks = -(-calls // chunk)
    total = 0
    clock = time.perf_counter_ns
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(chunks):
            between()
            t0 = clock()
            loop(f, chunk)
            total += clock() - t0
    finally:
        if gc_was_enabled:
            gc.enable()
    return total / (chunks * chunk), chunks * chunk


def timed(f: Callable[[], T]) -> tuple[int, T]:
    """Run ``f`` once with the collector off; return the nanoseconds it took and its result."""
    clock = time.perf_counter_ns
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        t0 = clock()
        result = f()
        return clock() - t0, result
    finally:
        if was_enabled:
            gc.enable()


def interleaved_rounds(
    runs: Mapping[str, Callable[[], T]],
    rounds: int,
    after_round: Callable[[int, dict[str, list[T]]], None] | None = None,
) -> dict[str, list[T]]:
    """Call every run once per round, round r starting at the r-th run; return what each
    returned, round by round. ``after_round(r, results)`` follows each round (progress)."""
    names = tuple(runs)
    results: dict[str, list[T]] = {name: [] for name in names}
    for r in range(rounds):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            results[name].append(runs[name]())
        if after_round is not None:
            after_round(r, results)
    return results
