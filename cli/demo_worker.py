"""A simulated inference worker for ``ai-analytics demo``: emits a realistic mix at a paced
rate, then prints how many events it emitted (so the demo can reconcile the counts).

The mix has the problems the demo wants an operator to see: one slow model (style transfer
around 5.9 s on average), one model failing 15 % of its requests, an embedding cache with a
25 % hit rate, and (worker 0 only) a burst every 20 seconds that overfills its lane.
"""

from __future__ import annotations

import random
import signal
import sys
import time

from ai_analytics import client
from ai_analytics.client import AIOperationType as Op
from ai_analytics.core.wakeup import StopRequest

# (operation, model, median latency ms, error rate, cache hit rate or None)
MIX = (
    (Op.TEXT_GENERATION, "llama-3-8b", 420.0, 0.01, None),
    (Op.TEXT_GENERATION, "mistral-7b", 380.0, 0.15, None),
    (Op.EMBEDDING, "bge-small", 12.0, 0.0, 0.25),
    (Op.CLASSIFICATION, "distilbert", 8.0, 0.02, None),
    (Op.STYLE_TRANSFER, "sd-xl-turbo", 5200.0, 0.03, None),
)
# A burst goes on until this many events were refused for a full lane (the daemon drains
# faster than one thread emits, so a fixed count may not overfill it on a busy machine) ...
BURST_REFUSED = 20_000
# ... or for this long at most.
BURST_MAX_SECONDS = 3.0
BURST_EVERY_SECONDS = 20.0
FIRST_BURST_SECONDS = 3.0


def emit_one(rng: random.Random) -> None:
    op, model, median, errors, hits = rng.choice(MIX)
    latency = rng.lognormvariate(0, 0.5) * median
    if op is Op.TEXT_GENERATION:
        client.emit(op, latency, model=model, quality=rng.uniform(0.7, 1.0),
                    success=rng.random() >= errors, ttft_ms=latency * 0.1,
                    queue_ms=rng.uniform(1.0, 30.0), tokens_in=rng.randint(20, 800),
                    tokens_out=rng.randint(10, 400))
    else:
        client.emit(op, latency, model=model, quality=rng.uniform(0.8, 1.0),
                    success=rng.random() >= errors,
                    cache_hit=None if hits is None else rng.random() < hits)


def burst() -> int:
    """More events at once than the lane holds: emit as fast as possible until BURST_REFUSED
    were dropped for a full lane. Returns how many were emitted."""
    emitted = refused = 0
    deadline = time.monotonic() + BURST_MAX_SECONDS
    while refused < BURST_REFUSED and (emitted % 1024 or time.monotonic() < deadline):
        refused += not client.emit(Op.EMBEDDING, 3.0, model="bge-small", cache_hit=False)
        emitted += 1
    return emitted


def report_cache(rng: random.Random) -> int:
    """The embedding cache's state, once a second: its size, and what it evicted since."""
    client.cache_state("embedding-cache", size=rng.randint(45_000, 50_000),
                       evictions=rng.randint(200, 400))
    return 1


def run(duration: float, rate: int, seed: int) -> int:
    stop = StopRequest()  # not threading.Event: set() from a signal handler can deadlock
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    rng = random.Random(seed)  # noqa: S311 (synthetic latencies, reproducible per seed)
    emitted = 0
    tick = 0.01
    per_tick = max(1, round(rate * tick))
    started = time.monotonic()
    deadline = started + duration
    next_burst = started + FIRST_BURST_SECONDS if seed == 0 else float("inf")
    next_cache_report = started
    while not stop.is_set() and time.monotonic() < deadline:
        for _ in range(per_tick):
            emit_one(rng)
        emitted += per_tick
        if time.monotonic() >= next_cache_report:
            emitted += report_cache(rng)
            next_cache_report += 1.0
        if time.monotonic() >= next_burst:
            emitted += burst()
            next_burst += BURST_EVERY_SECONDS
        stop.wait(tick)
    return emitted


if __name__ == "__main__":
    print(run(float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])), flush=True)
