"""The realistic event mix: 10 operations x 10 models = 100 series, chosen uniformly.

Latencies are lognormal (a median per operation from 4 ms to 900 ms, sigma 0.8); a quality
score on half the events (normal around 0.8, clipped to [0, 1]); a cache lookup on a third
(40 % hits); 2 % errors; 1 in 8 records ``KIND_EXTENDED`` with time to first token, queue
time and token counts. ``make_plan`` draws it as emit arguments (stdlib only, for producer
processes that must start as light as real workers); ``make_records`` as the daemon's
structured records (numpy), for timing the daemon's aggregation without emitting.
"""

from __future__ import annotations

import math
import random
from typing import Any

from ai_analytics import client
from ai_analytics.client import _layout as L

OPERATIONS = (
    "text_generation", "chat_completion", "embedding", "reranking", "summarization",
    "classification", "translation", "moderation", "transcription", "image_generation",
)
MODELS = (
    "llama-3-8b", "llama-3-70b", "mistral-7b", "mixtral-8x7b", "qwen2-7b", "gemma-2-9b",
    "phi-3-mini", "bge-large", "whisper-large-v3", "sdxl-turbo",
)
# Median latency (ms) per operation, same order as OPERATIONS; lognormal with this sigma.
LATENCY_MEDIAN_MS = (350.0, 420.0, 4.0, 9.0, 600.0, 6.0, 120.0, 15.0, 250.0, 900.0)
LATENCY_SIGMA = 0.8
EXTENDED_EVERY = 8  # 1 record in 8 is KIND_EXTENDED


def make_records(rng: Any, n: int, second: int, op_ids: Any, model_ids: Any
                 ) -> tuple[Any, Any, Any]:
    """``n`` records of the mix, timestamps within ``second``, and their daemon name ids."""
    import numpy as np

    from ai_analytics.daemon.ingest.records import RECORD_DTYPE

    series = rng.integers(0, len(OPERATIONS) * len(MODELS), n)
    op_index, model_index = series // len(MODELS), series % len(MODELS)
    records = np.zeros(n, RECORD_DTYPE)
    records["seq"] = np.arange(n)
    records["ts_ns"] = second * 1_000_000_000 + np.sort(rng.integers(0, 1_000_000_000, n))
    medians = np.log(np.asarray(LATENCY_MEDIAN_MS))[op_index]
    records["latency_ms"] = rng.lognormal(medians, LATENCY_SIGMA)
    quality = np.full(n, np.nan, np.float32)
    rated = rng.random(n) < 0.5
    quality[rated] = np.clip(rng.normal(0.8, 0.12, int(rated.sum())), 0.0, 1.0)
    records["quality"] = quality
    records["success"] = rng.random(n) >= 0.02
    cache = np.full(n, L.CACHE_ABSENT, np.uint8)
    looked_up = rng.random(n) < 1 / 3
    cache[looked_up] = rng.random(int(looked_up.sum())) < 0.4
    records["cache_hit"] = cache
    extended = np.arange(n) % EXTENDED_EVERY == EXTENDED_EVERY - 1
    count = int(extended.sum())
    records["kind"][extended] = L.KIND_EXTENDED
    records["ttft_ms"][extended] = records["latency_ms"][extended] * rng.uniform(0.05, 0.3, count)
    records["queue_ms"][extended] = rng.lognormal(0.0, 1.0, count)
    records["tokens_in"][extended] = rng.integers(10, 4000, count)
    records["tokens_out"][extended] = rng.integers(1, 1000, count)
    return records, np.asarray(op_ids)[op_index], np.asarray(model_ids)[model_index]


Plan = list[tuple[tuple[object, ...], dict[str, object]]]
PLAN_SIZE = 1 << 16  # a power of two: entries are picked with ``k & (PLAN_SIZE - 1)``


def series_names(series: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Operation and model names whose every pair is one of ``series`` series: the 10 x 10
    of the mix for 100; otherwise up to 20 models (each name suffixed past the tenth), and
    as many operations as it takes."""
    if series == len(OPERATIONS) * len(MODELS):
        return OPERATIONS, MODELS
    models = min(series, 20)
    operations = -(-series // models)

    def named(base: tuple[str, ...], n: int) -> tuple[str, ...]:
        return tuple(base[i % len(base)] + (f"-{i // len(base)}" if i >= len(base) else "")
                     for i in range(n))

    return named(OPERATIONS, operations), named(MODELS, models)


def make_plan(seed: int, series: int = len(OPERATIONS) * len(MODELS)) -> Plan:
    """The same mix as emit arguments, without numpy: (positional args, keyword args), over
    ``series`` (operation, model) series chosen uniformly (100 by default: the 10 x 10)."""
    rnd = random.Random(seed)
    plan: Plan = []
    operations, models = series_names(series)
    for k in range(PLAN_SIZE):
        s = rnd.randrange(series)
        op, model = s // len(models), s % len(models)
        latency = rnd.lognormvariate(math.log(LATENCY_MEDIAN_MS[op % len(OPERATIONS)]),
                                     LATENCY_SIGMA)
        quality = min(1.0, max(0.0, rnd.gauss(0.8, 0.12))) if rnd.random() < 0.5 else None
        cache_hit = rnd.random() < 0.4 if rnd.random() < 1 / 3 else None
        args = (operations[op], latency, models[model], quality, rnd.random() >= 0.02,
                cache_hit)
        extra: dict[str, object] = {}
        if k % EXTENDED_EVERY == EXTENDED_EVERY - 1:
            extra = {
                "ttft_ms": latency * rnd.uniform(0.05, 0.3),
                "queue_ms": rnd.lognormvariate(0.0, 1.0),
                "tokens_in": rnd.randrange(10, 4000),
                "tokens_out": rnd.randrange(1, 1000),
            }
        plan.append((args, extra))
    return plan


def emit_plan(plan: Plan, start: int, count: int) -> int:
    """Emit ``count`` events of ``plan`` from index ``start``; return how many were accepted."""
    emit = client.emit
    mask = PLAN_SIZE - 1
    accepted = 0
    for k in range(start, start + count):
        args, extra = plan[k & mask]
        accepted += emit(*args, **extra) if extra else emit(*args)
    return accepted
