"""ai_analytics.client: record inference events from any worker, at almost no cost.

Stdlib only: importing it loads none of numpy, yaml, psutil, pynvml or click.

    from ai_analytics import client
    client.emit("text_generation", 41.7, model="llama-3-8b", quality=0.93)
"""

from __future__ import annotations

from typing import Any

from ._emit import cache_state, dropped_without_lane, emit, emit_path, prepare
from ._operations import AIOperationType

__all__ = [
    "AIOperationType", "AnalyticsAIIntegration", "AnalyticsConfig", "cache_state",
    "current_event", "dropped_without_lane", "emit", "emit_path", "prepare", "timed",
]


def __getattr__(name: str) -> Any:
    # The asyncio API loads asyncio: only for those who ask for it.
    if name in ("AnalyticsAIIntegration", "AnalyticsConfig"):
        from . import integration

        return getattr(integration, name)
    # timed() loads inspect and contextvars: only for those who use it.
    if name in ("timed", "current_event"):
        from . import _timed

        return getattr(_timed, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
