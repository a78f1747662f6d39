"""The record layout as a numpy dtype, and vectorized validation of drained records."""

from __future__ import annotations

import numpy as np

from ai_analytics.client import _layout as L

_NUMPY_CODES = {"Q": "<u8", "d": "<f8", "f": "<f4", "H": "<u2", "B": "u1", "I": "<u4"}

RECORD_DTYPE = np.dtype(
    {
        "names": [name for name, _, _ in L.RECORD_FIELDS],
        "formats": [_NUMPY_CODES[code] for _, code, _ in L.RECORD_FIELDS],
        "offsets": [offset for _, _, offset in L.RECORD_FIELDS],
        "itemsize": L.RECORD_SIZE,
    }
)


# The largest latency (ms) or cache size accepted. Sums of 2**64 such values stay finite, so
# no mean or total in the snapshot can become infinite (JSON has no infinity).
MAX_MEASURE = 1e18


def name_slots(ids: np.ndarray, names_capacity: int) -> np.ndarray:
    """Map raw name ids to indexes into a lane's per-name tables of ``names_capacity + 3``.

    Slots ``0..names_capacity`` are the ids themselves, ``names_capacity + 1`` stands for
    NAME_ID_OVERFLOW and ``names_capacity + 2`` for any id outside the table.
    """
    slots = np.minimum(ids, names_capacity + 2).astype(np.intp)
    slots[ids == L.NAME_ID_OVERFLOW] = names_capacity + 1
    return slots


def valid_mask(
    records: np.ndarray, first_index: int, op_slots: np.ndarray, model_slots: np.ndarray,
    names_ok: np.ndarray,
) -> np.ndarray:
    """True for each record that is well formed.

    ``first_index`` is the ring index of ``records[0]``; the slots come from ``name_slots``
    and ``names_ok`` says which slots are published, usable names.
    Checks: the sequence field matches the index (stale or half-lapped slots fail), a known
    kind, published name ids and a non-empty operation (or cache name), a latency in
    [0, MAX_MEASURE] (a cache state's size may also be absent: NaN), a
    quality that is absent (NaN) or within [0, 1], success 0/1, cache_hit 0/1/2, and finite
    non-negative LLM timings when present.
    """
    n = len(records)
    latency = records["latency_ms"]
    quality = records["quality"]
    kind = records["kind"]
    ok = records["seq"] == np.arange(first_index, first_index + n, dtype=np.uint64)
    ok &= records["ts_ns"] != 0
    ok &= kind <= L.KIND_CACHE_STATE
    ok &= names_ok[op_slots] & names_ok[model_slots] & (op_slots != 0)
    ok &= records["success"] <= 1
    ok &= records["cache_hit"] <= L.CACHE_ABSENT
    with np.errstate(invalid="ignore"):
        # A cache state carries its size where events carry latency; the size may be absent.
        measured = (latency >= 0) & (latency <= MAX_MEASURE)
        ok &= measured | ((kind == L.KIND_CACHE_STATE) & np.isnan(latency))
        ok &= np.isnan(quality) | ((quality >= 0) & (quality <= 1))
        extended = kind == L.KIND_EXTENDED
        if extended.any():
            for field in ("ttft_ms", "queue_ms"):
                value = records[field]
                ok &= ~extended | np.isnan(value) | (np.isfinite(value) & (value >= 0))
    return ok
