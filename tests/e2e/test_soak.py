"""The soak (bench/soak.py) against a real daemon: its 60-second form in every run of the
suite, its full 10 minutes under ``-m slow``. The script judges the run itself; these tests
hold it to its exit status, its pass list and its outputs."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO, lane_names

SOAK = REPO / "bench" / "soak.py"
CRITERIA = ("load", "producers", "rss", "bounded", "reconciled", "lag", "fresh", "exit", "lanes",
            "log")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run_soak(tmp_path: Path, namespace: str, duration: int) -> None:
    out = tmp_path / "soak"
    soak = subprocess.Popen(
        [sys.executable, str(SOAK), "--duration", str(duration), "--namespace", namespace,
         "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        stdout, stderr = soak.communicate(timeout=duration + 300)
    finally:
        if soak.poll() is None:  # overran or interrupted: on SIGTERM it stops what it started
            soak.terminate()
            soak.communicate(timeout=60)
    assert soak.returncode == 0, f"{stdout}\n{stderr}"
    results = json.loads((out / "results.json").read_text())
    criteria = results["criteria"]
    assert tuple(c["name"] for c in criteria) == CRITERIA
    for c in criteria:
        assert c["passed"], c
        assert f"PASS  {c['title']}  (" in stdout
    assert "FAIL" not in stdout
    assert f"result: PASS ({len(CRITERIA)}/{len(CRITERIA)} criteria)" in stdout

    # The run did what the criteria speak of: every event of a real load is accounted for.
    end = results["end"]
    assert end["calls"]["started"] > 0 and end["calls"]["invalid"] > 0
    assert sum(end["events"].values()) == end["calls"]["started"]
    assert results["restarts"]["exited"] >= 1 and results["restarts"]["killed"] >= 1
    assert lane_names(namespace) == []

    samples = (out / "samples.csv").read_text().splitlines()
    assert len(samples) - 1 == len(results["samples"]) >= duration * 0.8

    png = (out / "soak.png").read_bytes()
    assert png.startswith(PNG_SIGNATURE)
    width, height = struct.unpack(">II", png[16:24])  # the IHDR chunk comes first
    assert png[12:16] == b"IHDR" and width > 0 and height > 0


@pytest.mark.soak
def test_soak_60_seconds(tmp_path: Path, namespace: str) -> None:
    run_soak(tmp_path, namespace, 60)


@pytest.mark.slow
def test_soak_10_minutes(tmp_path: Path, namespace: str) -> None:
    run_soak(tmp_path, namespace, 600)
