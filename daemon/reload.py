"""A reload (SIGHUP): which settings may change while the daemon runs, and which need a restart.

``plan_reload(running, new)`` compares two validated configs. Settings in ``NEEDS_RESTART``
are built into objects at start (the namespace lock, the listening socket, tables sized once):
a changed one is reported and keeps its running value. Everything else applies at once, and
no counter or statistic is reset by it. ``NEW_LANES_ONLY`` settings travel to the producers in
the control segment, republished on a change: lanes that exist keep their geometry.
"""

from __future__ import annotations

import dataclasses

from ai_analytics.core.config import Config

NEEDS_RESTART: dict[str, str] = {
    "namespace": "the namespace lock, the lanes and the control segment belong to it",
    "segment_dir": "the namespace lock, the lanes and the control segment are there",
    "state_dir": "the state file and the history database are open there",
    "max_operations": "the statistics' tables are sized at start",
    "max_models": "the statistics' tables are sized at start",
    "max_series": "the statistics' tables are sized at start",
    "http_enabled": "the HTTP endpoint is started (or not) at start",
    "http_host": "the HTTP endpoint's socket is bound at start",
    "http_port": "the HTTP endpoint's socket is bound at start",
    "http_pages_beyond_loopback": "the HTTP endpoint's rules are set at start",
}
NEW_LANES_ONLY = ("max_queue_size", "on_full", "names_per_lane")


@dataclasses.dataclass(frozen=True)
class ReloadPlan:
    config: Config  # the new settings, with those in needs_restart kept at their running value
    changed: tuple[str, ...]  # applied now
    needs_restart: tuple[str, ...]  # changed in the file, kept until a restart


def plan_reload(running: Config, new: Config) -> ReloadPlan:
    """What a reload from ``running`` to ``new`` changes now and what it leaves for a restart."""
    differ = [f.name for f in dataclasses.fields(Config)
              if getattr(running, f.name) != getattr(new, f.name)]
    restart = tuple(key for key in differ if key in NEEDS_RESTART)
    config = dataclasses.replace(new, **{key: getattr(running, key) for key in restart})
    return ReloadPlan(config, tuple(k for k in differ if k not in NEEDS_RESTART), restart)


__all__ = ["NEEDS_RESTART", "NEW_LANES_ONLY", "ReloadPlan", "plan_reload"]
