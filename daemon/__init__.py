"""ai_analytics.daemon: ai-analyticsd (drain, count, statistics, snapshots, HTTP).

Nothing here is imported by inference workers; see ``ai_analytics.client`` for that side.
Exports load lazily, so ``python -m ai_analytics.daemon.<tool>`` stays light.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Config", "Daemon", "get_performance_snapshot", "load_config"]

_EXPORTS = {
    "Config": "ai_analytics.core.config",
    "load_config": "ai_analytics.core.config",
    "Daemon": "ai_analytics.daemon.service",
    "get_performance_snapshot": "ai_analytics.core.state",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_EXPORTS[name]), name)
