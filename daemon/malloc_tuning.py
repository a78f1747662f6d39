"""Keep the daemon's large numpy temporaries on the heap.

glibc serves allocations above M_MMAP_THRESHOLD (128 KiB to start) with a fresh mmap and
returns them on free, so every batch's 512 KiB temporaries fault in their pages again; on a
virtual machine that page-fault cost was most of a histogram pass (466 -> 106 us for 65,536
values, measured on the 2-core development VM). Raising the thresholds lets freed blocks be
reused; the heap then stays at its high-water mark, which the daemon's bounded batches keep
small. A no-op where the C library is not glibc.

The snapshot's temporaries are another matter: a document of a thousand series, its JSON and
its /metrics text are tens of megabytes made and dropped every few seconds, on the snapshot
thread. Kept on the heap, they would hold the daemon's RSS tens of megabytes above what its
statistics need (measured 89-122 MB at 1,024 series, from run to run). So once a snapshot is
done the daemon gives the free heap back (``malloc_trim``): a few milliseconds of the snapshot
thread, and at most one round of page faults for the drain's next batch temporaries, every
snapshot interval rather than every batch.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 64 << 20
TRIM_THRESHOLD_BYTES = 256 << 20

# Set once the thresholds are applied: only the daemon's own process trims its heap (a daemon
# embedded in a worker leaves the worker's allocator alone).
_malloc_trim: Callable[[int], int] | None = None


def keep_temporaries_on_heap() -> bool:
    """Apply the thresholds; True if the C library accepted them. From then on
    ``give_back_free_heap`` trims."""
    global _malloc_trim
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt, malloc_trim = libc.mallopt, libc.malloc_trim
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    malloc_trim.argtypes = (ctypes.c_size_t,)
    applied = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
    if applied:
        _malloc_trim = malloc_trim
    return applied


def give_back_free_heap() -> None:
    """Return the heap's free pages to the system, once a snapshot's temporaries are
    dropped; a no-op unless ``keep_temporaries_on_heap`` was applied in this process."""
    if _malloc_trim is not None:
        _malloc_trim(0)
