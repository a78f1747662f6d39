"""What importing the client costs, in a fresh interpreter: ``import ai_analytics.client`` and
a first ``emit`` load nothing of the daemon's dependencies."""

from __future__ import annotations

import json

from helpers import heavy_modules, lane_names, run_python


def test_import_and_emit_load_no_heavy_modules(namespace: str) -> None:
    """In a fresh interpreter, importing the client and emitting once loads none of numpy,
    yaml, psutil, pynvml, click or the multiprocessing resource tracker (nor the daemon), and
    the event lands in a lane of the namespace from the environment."""
    result = run_python(
        """
        import json, sys
        from ai_analytics import client
        ok = client.emit("text_generation", 12.5, model="m", quality=0.9)
        print(json.dumps({"ok": ok, "modules": sorted(sys.modules)}))
        """,
        namespace,
    )
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["ok"] is True
    modules = set(report["modules"])
    assert "ai_analytics.client" in modules  # the list is the child's real sys.modules
    assert heavy_modules(modules) == []
    assert "multiprocessing.resource_tracker" not in modules
    assert len(lane_names(namespace)) == 1
