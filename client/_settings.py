"""The daemon settings that the client's asyncio facade (``AnalyticsConfig``) accepts too, with
their type and range.

The facade checks its values against this table when it is built, and the daemon's config
builds its checks for the same keys from it, so a value one accepts is never refused by the
other when embedded mode hands the facade's settings to the daemon. It lives in the client
because the client is the lowest layer: the daemon may import it, the client nothing above.
"""

from __future__ import annotations

from ._layout import MAX_CAPACITY, MIN_CAPACITY

# name: (type, lowest, highest); for bool the bounds mean nothing.
FACADE_SETTINGS: dict[str, tuple[type, float, float]] = {
    "max_queue_size": (int, MIN_CAPACITY, MAX_CAPACITY),
    "batch_size": (int, 1, 1 << 22),
    "batch_timeout_seconds": (float, 0.001, 60.0),
    "max_processing_time_seconds": (float, 0.01, 600.0),
    "snapshot_interval_seconds": (float, 0.05, 3600.0),
    "enable_circuit_breaker": (bool, 0, 1),
    "failure_threshold": (int, 1, 1000),
    "recovery_timeout_seconds": (float, 0.1, 3600.0),
}
