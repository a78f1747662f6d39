"""ai_analytics.daemon: ai-analyticsd (drain, count, statistics, snapshots) and the CLI.

Nothing here is imported by inference workers; see ``ai_analytics.client`` for that side.
Exports load lazily, so ``python -m ai_analytics.daemon.<tool>`` stays light.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Config", "Daemon", "get_performance_snapshot", "load_config"]

_EXPORTS = {
    "Config": ".config",
    "load_config": ".config",
    "Daemon": ".service",
    "get_performance_snapshot": ".status",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
