"""The history database with real processes: a reader process querying while this one
appends and deletes, and the installed ``ai-analytics history`` script."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

from ai_analytics.core.history import HistoryStore

from helpers import EVENTS, script, series, window_stats

# -- a reader process --------------------------------------------------------------------------
READER = textwrap.dedent("""
    import collections, json, sys, time
    from ai_analytics.core.history import read_history
    state_dir, seconds, per_snapshot = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
    reads, torn, errors, seen = 0, 0, [], set()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            rows = read_history(state_dir, timeout=2.0)
        except Exception as exc:
            errors.append(repr(exc))
            continue
        reads += 1
        per_unix = collections.Counter(row["unix"] for row in rows)
        torn += sum(1 for n in per_unix.values() if n != per_snapshot)
        seen.update(per_unix)
    print(json.dumps({"reads": reads, "torn": torn, "errors": errors[:5], "seen": len(seen)}))
""")


def test_concurrent_reader_process_never_errors(tmp_path: Path) -> None:
    """A reader process querying in a loop while the writer appends and deletes (a small
    size limit) never gets an error and never sees half a snapshot."""
    store = HistoryStore(str(tmp_path), max_age_seconds=1e9, max_megabytes=1.0)
    names = [series(f"op{i % 4}", f"model-{i}", window_stats(i)) for i in range(40)]
    store.append(0.0, 1.0, EVENTS, names)
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(tmp_path), "3", str(len(names))],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    appends = deleted = 0
    try:
        while reader.poll() is None:
            appends += 1
            store.append(float(appends), 1.0, EVENTS, names)
            deleted += store.enforce_retention()
        out, err = reader.communicate(timeout=30)
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.wait()
        store.close()
    assert reader.returncode == 0, err
    report = json.loads(out)
    assert report["errors"] == []
    assert report["torn"] == 0
    assert report["reads"] > 10 and report["seen"] > 10
    assert appends > 50 and deleted > 0


# -- the installed command ---------------------------------------------------------------------
def test_cli_real_process(make_config: Callable[..., Path], recent_history: list[float],
                          tmp_path: Path) -> None:
    """The installed ``ai-analytics`` script: table and --json with rows (exit 0), missing
    history (exit 3), bad --since (exit 2), never a traceback."""
    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([script("ai-analytics"), "history", *argv], capture_output=True,
                                text=True, timeout=60)
        assert "Traceback" not in result.stderr, result.stderr
        return result

    config = str(make_config())
    table = run("--config", config, "--operation", "chat")
    assert table.returncode == 0 and table.stderr == ""
    assert len(table.stdout.splitlines()) == 4 and "llama" in table.stdout
    assert len(json.loads(run("--config", config, "--json").stdout)) == 6
    missing = run("--config", str(make_config(state_dir=str(tmp_path / "elsewhere"))))
    assert missing.returncode == 3 and "no history in" in missing.stderr
    bad = run("--config", config, "--since", "soon")
    assert bad.returncode == 2 and "'soon' is not a duration" in bad.stderr
