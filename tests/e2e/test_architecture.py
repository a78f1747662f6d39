"""The architecture holds at run time (docs/architecture.md; `lint-imports` checks the import
graph in CI): the operator CLI, run in a fresh interpreter, loads none of the daemon's heavy
dependencies for any of its commands, nor anything of the daemon package."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ai_analytics import client
from ai_analytics.core.history import HistoryStore
from ai_analytics.core.state import write_state

HEAVY = ("numpy", "psutil", "pynvml", "prometheus_client")

CHILD = """
import json, sys
from click.testing import CliRunner
from ai_analytics.cli.main import main

codes = [CliRunner().invoke(main, args).exit_code for args in json.loads(sys.argv[1])]
print(json.dumps({"codes": codes, "modules": sorted(sys.modules)}))
"""


def test_every_cli_command_runs_without_the_heavy_dependencies(
    namespace: str, make_config: Callable[..., Path], state_dir: Path, tmp_path: Path
) -> None:
    config = str(make_config())
    write_state(str(state_dir), {"namespace": namespace, "written_unix": time.time(),
                                 "daemon": {"running": False}, "operations": [],
                                 "findings": [], "events": {}})
    history = HistoryStore(str(state_dir), 3600.0, 10.0)
    history.append(time.time(), 1.0, dict.fromkeys(
        ("received", "dropped", "overwritten", "invalid", "lost_on_restart", "pending",
         "no_lane"), 0), [])
    history.close()
    # A lane in shared memory, for lanes and status to read.
    writer = threading.Thread(target=client.emit, args=("architecture", 1.0))
    writer.start()
    writer.join()
    commands = [
        ["--help"], ["status", "--config", config], ["status", "--config", config, "--json"],
        ["lanes", "--config", config], ["lanes", "--config", config, "--json"],
        ["history", "--config", config], ["history", "--config", config, "--json"],
        ["config", "check", config],
    ]
    child = subprocess.run([sys.executable, "-c", CHILD, json.dumps(commands)],
                           capture_output=True, text=True, timeout=120, check=True)
    report = json.loads(child.stdout)
    # Each command ran to its end (status: 3, no daemon runs, after reading shared memory;
    # the others 0).
    assert report["codes"] == [0, 3, 3, 0, 0, 0, 0, 0], report["codes"]
    modules = set(report["modules"])
    assert "ai_analytics.cli.status" in modules  # the list is the child's real sys.modules
    loaded = sorted(m for m in modules if m.split(".")[0] in HEAVY)
    assert loaded == [], loaded
    assert sorted(m for m in modules if m.startswith("ai_analytics.daemon")) == []
