"""The process-wide settings ai-analyticsd's main() applies, applied to a bench process that
times the daemon's code in-process, so that it is timed as the daemon runs it.

Call ``tune_like_the_daemon`` first in ``main()``, before anything imports numpy: numpy reads
its CPU dispatch switches at its first import (daemon/sort_tuning.py).
"""

from __future__ import annotations


def tune_like_the_daemon() -> str:
    """Apply the daemon's sort and malloc settings; what was applied, in words."""
    from ai_analytics.daemon.malloc_tuning import keep_temporaries_on_heap
    from ai_analytics.daemon.sort_tuning import DISABLE_VARIABLE, prefer_avx2_sort

    sorting = prefer_avx2_sort()
    malloc = keep_temporaries_on_heap()
    return (f"as in the daemon's main(): glibc malloc thresholds "
            f"{'applied' if malloc else 'not available'}; numpy's AVX-512 kernels "
            f"{f'off ({DISABLE_VARIABLE}={sorting})' if sorting else 'as numpy chose'}")


__all__ = ["tune_like_the_daemon"]
