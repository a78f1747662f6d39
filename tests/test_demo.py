"""The README's first command: `ai-analytics demo`, end to end."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

AI_ANALYTICS = str(Path(sys.executable).with_name("ai-analytics"))


def test_demo_runs_and_reconciles_exactly():
    """The demo starts a daemon and workers, shows live counters, stops everything and
    reports an exact reconciliation, exit 0, leaving nothing in /dev/shm."""
    result = subprocess.run([AI_ANALYTICS, "demo", "--duration", "2", "--workers", "2"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "received " in result.stdout
    assert "(exact)" in result.stdout
    assert "Traceback" not in result.stderr
    namespace = result.stdout.split("in namespace ", 1)[1].split()[0]
    assert not [n for n in os.listdir("/dev/shm") if n.startswith(f"{namespace}.")]


def test_demo_stops_cleanly_on_ctrl_c():
    """Ctrl-C (SIGINT to the demo) stops the workers, then the daemon, and the counts still
    reconcile exactly."""
    proc = subprocess.Popen([AI_ANALYTICS, "demo", "--duration", "60"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("demo: daemon pid"), line + proc.stderr.read()
        time.sleep(2.0)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out + err
    assert "demo: stopping" in out and "(exact)" in out
    assert "Traceback" not in err
