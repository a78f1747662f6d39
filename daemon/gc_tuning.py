"""Full garbage collections when the drain loop can spare them, not when allocations say so.

CPython runs a full (oldest-generation) collection once enough objects have survived the
young ones. In the daemon those are each snapshot's document and the rows that come back
from its child process, about a hundred thousand objects every few seconds, so a full
collection came every snapshot or two, on whichever thread allocated at that moment. It
walks every tracked object while holding the GIL in one C call: 19-43 ms at 500 busy series
(measured with ``gc.callbacks`` in a daemon under 1 M events/s), and a drain loop that wakes
during it waits that long, past the 33 ms in which a lane written at 250,000 events/s fills.

So ai-analyticsd, in its own process: freezes what start-up made (modules, functions,
config: never garbage), leaves the young generations to CPython (each collection walks only
the young objects: microseconds), and collects the oldest generation itself once per
snapshot, on the drain loop right after a pass, when the lanes are as empty as they get: the
collection (about 5-15 ms at 500 busy series once the start-up objects are frozen) then
delays nothing but the loop's next wake-up, which the lanes' fill decides. Nothing else
changes: cyclic garbage is still collected, once per snapshot interval instead of at an
arbitrary moment.

An embedded daemon runs in the worker's process, whose collector is the worker's: there
``collect_between_passes`` does nothing.
"""

from __future__ import annotations

import gc

# A threshold no run reaches: CPython never starts a full collection by itself.
NEVER = 1 << 30

_scheduled = False


def schedule_full_collections() -> None:
    """For ai-analyticsd's own process, once start-up is done."""
    global _scheduled
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, NEVER)
    _scheduled = True


def collect_between_passes() -> None:
    """The full collection, where ``schedule_full_collections`` applies (the caller picks
    the moment); a no-op elsewhere."""
    if _scheduled:
        gc.collect()


__all__ = ["collect_between_passes", "schedule_full_collections"]
