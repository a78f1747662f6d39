"""Keep the daemon's large numpy temporaries on the heap.

glibc serves allocations above M_MMAP_THRESHOLD (128 KiB to start) with a fresh mmap and
returns them on free, so every batch's 512 KiB temporaries fault in their pages again; on a
virtual machine that page-fault cost was most of a histogram pass (466 -> 106 us for 65,536
values, measured on the 2-core development VM). Raising the thresholds lets freed blocks be
reused; the heap then stays at its high-water mark, which the daemon's bounded batches keep
small. A no-op where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 64 << 20
TRIM_THRESHOLD_BYTES = 256 << 20


def keep_temporaries_on_heap() -> bool:
    """Apply the thresholds; True if the C library accepted them."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
