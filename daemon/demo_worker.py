"""A simulated inference worker for ``ai-analytics demo``: emits a realistic mix at a paced
rate, then prints how many events it emitted (so the demo can reconcile the counts)."""

from __future__ import annotations

import random
import signal
import sys
import threading
import time

from ai_analytics import client
from ai_analytics.client import AIOperationType as Op

# (operation, model, mean latency ms, error rate, cache hit rate or None)
MIX = (
    (Op.TEXT_GENERATION, "llama-3-8b", 420.0, 0.01, None),
    (Op.TEXT_GENERATION, "mistral-7b", 380.0, 0.15, None),
    (Op.EMBEDDING, "bge-small", 12.0, 0.0, 0.25),
    (Op.CLASSIFICATION, "distilbert", 8.0, 0.02, None),
    (Op.STYLE_TRANSFER, "sd-xl-turbo", 5200.0, 0.03, None),
)


def run(duration: float, rate: int, seed: int) -> int:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    rng = random.Random(seed)
    emitted = 0
    tick = 0.01
    per_tick = max(1, round(rate * tick))
    deadline = time.monotonic() + duration
    while not stop.is_set() and time.monotonic() < deadline:
        for _ in range(per_tick):
            op, model, mean, errors, hits = rng.choice(MIX)
            latency = rng.lognormvariate(0, 0.5) * mean
            cache = None if hits is None else rng.random() < hits
            if op is Op.TEXT_GENERATION:
                client.emit(op, latency, model=model, quality=rng.uniform(0.7, 1.0),
                            success=rng.random() >= errors, ttft_ms=latency * 0.1,
                            tokens_in=rng.randint(20, 800), tokens_out=rng.randint(10, 400))
            else:
                client.emit(op, latency, model=model, quality=rng.uniform(0.8, 1.0),
                            success=rng.random() >= errors, cache_hit=cache)
            emitted += 1
        stop.wait(tick)
    return emitted


if __name__ == "__main__":
    print(run(float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])), flush=True)
