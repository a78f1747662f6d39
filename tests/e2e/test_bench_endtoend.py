"""bench/endtoend.py in its --quick form: real producers, a real daemon, a real prometheus
scraper. Its JSON must hold every row, exact reconciliations and positive CPU figures, and
it must leave nothing behind, also when interrupted."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from helpers import REPO, SHM_DIR, interruptible, wait_for

SCRIPT = REPO / "bench" / "endtoend.py"
CASES = {"floor", "emit", "prometheus_mp"}


def start_script(out: Path, *options: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), "--quick", "--quiet", "--out", str(out), *options],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=interruptible,
    )


def namespace_prefix(proc: subprocess.Popen[str]) -> str:
    """Every namespace the script makes starts with this."""
    return f"aibench-e2e-{proc.pid}-"


def leftovers(prefix: str) -> list[str]:
    """Segments, and processes (by their namespace variable), of the script's namespaces."""
    left = [name for name in os.listdir(SHM_DIR) if name.startswith(prefix)]
    needle = f"AI_ANALYTICS_NAMESPACE={prefix}".encode()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            if needle in Path(f"/proc/{pid}/environ").read_bytes():
                left.append(f"process {pid}")
    return left


def test_quick_run_reports_every_case_reconciled(tmp_path: Path) -> None:
    proc = start_script(tmp_path, "--scrape-seconds", "0.5")
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{stdout}\n{stderr}"
    assert leftovers(namespace_prefix(proc)) == []
    report = json.loads((tmp_path / "endtoend_results.json").read_text())
    assert "| offered ev/s | case |" in (tmp_path / "ENDTOEND.md").read_text()
    assert report["machine"]["cpu_count"] and report["command"]

    assert {row["case"] for row in report["rows"]} == CASES
    assert {run["case"] for run in report["runs"]} == CASES
    probes = report["zero_drop"]["probes"]
    assert probes and probes[0]["offered_per_s"] == 20_000  # then 40 k, if 20 k passed
    for run in report["runs"] + probes:
        assert run["calls_total"] > run["calls"] > 0 and run["producers_cpu_s"] > 0
        assert run["total_cpu_s_per_m"] >= run["producers_cpu_s_per_m"] > 0
    for run in [run for run in report["runs"] if run["case"] == "emit"] + probes:
        events = run["events"]
        assert sum(events.values()) == run["calls_total"], events  # every emit call, exactly
        assert events["received"] == run["accepted_total"] and events["pending"] == 0
        assert events["dropped"] == run["calls_total"] - run["accepted_total"]
        assert run["dropped_total"] == events["dropped"] >= run["dropped"]
        assert run["reconciled"] is True
        assert run["side_cpu_s"] > 0  # the daemon's own CPU
        if run in report["runs"]:  # its /metrics scraped throughout, every answer read whole
            assert run["metrics_scrapes"] >= 1 and run["metrics_scrape_failures"] == 0
        # Batches of what arrived since the daemon last woke (thousands at the quick rates),
        # not a busy drain of a few hundred records each while producers write.
        assert run["records_per_batch"] >= 1000, run["records_per_batch"]
    for run in report["runs"]:
        if run["case"] == "prometheus_mp":
            assert run["counted"] == run["calls_total"] and run["reconciled"] is True
            assert run["scrapes"] >= 1 and run["side_cpu_s"] > 0  # the scraper's CPU
    assert report["idle"]["cpu_s"] >= 0
    checked = 2 + len(probes)  # emit, prometheus_mp and the probes
    assert f"reconciliation: {checked} of {checked} runs exact" in stdout


def test_interrupted_run_leaves_nothing(tmp_path: Path) -> None:
    proc = start_script(tmp_path)
    prefix = namespace_prefix(proc)
    try:
        wait_for(lambda: any(n.startswith(prefix) for n in os.listdir(SHM_DIR)), timeout=120,
                 what="the script's first daemon")
        proc.send_signal(signal.SIGINT)  # Ctrl-C, to the script alone
        proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode != 0
    assert leftovers(prefix) == []
    assert not (tmp_path / "endtoend_results.json").exists()
