"""Per-model view: inference time and error rate across operations, and the memory of the
worker processes that serve each model (RSS, and GPU memory where a GPU reports it).

A worker in a PID namespace the daemon cannot see (a container of its own, when the daemon
runs in another) has no pid here: it is counted in ``processes_not_visible``, and its memory
is not attributed, rather than shown as zero."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ai_analytics.core.document import (
    ModelEntry,
    ModelProcess,
    ModelWindowStats,
    OperationEntry,
    Window,
)
from ai_analytics.daemon.snapshot.capture import LaneModels


def model_summary(
    operations: list[OperationEntry], lanes: Iterable[LaneModels], names: Mapping[str, int],
    rss_by_pid: dict[int, int], gpu_mb_by_pid: dict[int, float],
) -> list[ModelEntry]:
    """One entry per model: per-window totals, and the processes whose lanes emitted for it.
    ``names``: each name's daemon-wide id, the ids ``LaneModels.models`` holds."""
    totals: dict[str, dict[Window, dict[str, float]]] = {}
    for row in operations:
        model = str(row["model"])
        per_window = totals.setdefault(model, {})
        for window, stats in row["windows"].items():
            into = per_window.setdefault(window, {"count": 0, "errors": 0, "latency_sum": 0.0})
            count = stats["count"]
            into["count"] += count
            into["errors"] += stats["errors"]
            mean = stats["latency_ms"]["mean"]
            if count and mean is not None:  # a window with events has a mean
                into["latency_sum"] += mean * count
    pids_by_name: dict[int, set[int]] = {}
    hidden_by_name: dict[int, set[tuple[int, int]]] = {}
    for lane in lanes:
        for name in lane.models:
            if lane.visible_pid is not None:
                pids_by_name.setdefault(name, set()).add(lane.visible_pid)
            else:
                hidden_by_name.setdefault(name, set()).add(lane.producer)
    summary: list[ModelEntry] = []
    for model, per_window in totals.items():
        name_id = names.get(model)
        pids = sorted(pids_by_name.get(name_id, ())) if name_id is not None else []
        processes: list[ModelProcess] = [
            {"pid": pid, "rss_bytes": rss_by_pid.get(pid), "gpu_memory_mb": gpu_mb_by_pid.get(pid)}
            for pid in pids]
        summary.append({
            "model": model,
            "windows": {window: _model_stats(t) for window, t in per_window.items()},
            "processes": processes,
            "processes_not_visible": len(hidden_by_name.get(name_id, ()))
            if name_id is not None else 0,
            "rss_bytes": sum(p["rss_bytes"] or 0 for p in processes)
            if any(p["rss_bytes"] is not None for p in processes) else None,
            "gpu_memory_mb": sum(p["gpu_memory_mb"] or 0 for p in processes)
            if any(p["gpu_memory_mb"] is not None for p in processes) else None,
        })
    summary.sort(key=lambda entry: entry["model"])
    return summary


def _model_stats(totals: dict[str, float]) -> ModelWindowStats:
    count = int(totals["count"])
    return {
        "count": count, "errors": int(totals["errors"]),
        "error_rate": round(totals["errors"] / count, 6) if count else None,
        "inference_ms_mean": round(totals["latency_sum"] / count, 6) if count else None,
    }
