"""How often a repeating failure is logged: the first time, then every ``LOG_EVERY``-th, so a
fault that lasts hours shows in the log without flooding it. Each place that counts failures
(HTTP callbacks and accepts, resource probes, the facade's dashboard hook) asks this one rule.
"""

from __future__ import annotations

LOG_EVERY = 100


def worth_logging(failures: int) -> bool:
    """True for the 1st, 100th, 200th ... failure."""
    return failures == 1 or failures % LOG_EVERY == 0
