"""The README's first command: `ai-analytics demo`, end to end."""

from __future__ import annotations

import os
import signal
import subprocess
import urllib.request

from helpers import SHM_DIR, interruptible, script


def test_demo_runs_and_reconciles_exactly():
    """The demo starts a daemon and workers, shows live counters, stops everything, names
    the slow model, the failing model, the poor cache and the burst as findings with their
    recommendations, reconciles every event exactly, exits 0 and leaves nothing in /dev/shm."""
    result = subprocess.run([script("ai-analytics"), "demo", "--duration", "8", "--workers", "2"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "received " in result.stdout
    assert "demo: live page: http://127.0.0.1:" in result.stdout
    assert "(exact)" in result.stdout
    # What a newcomer must see: the four problems named as findings, each with advice.
    final = result.stdout.split("FINDINGS", 1)[1]
    for kind, subject in (("event_loss", "namespace"), ("model_errors", "mistral-7b"),
                          ("poor_cache", "embedding/bge"), ("slow_model", "sd-xl-turbo")):
        assert any(kind in line and subject in line for line in final.splitlines()), (kind, final)
    advice = final.split("RECOMMENDATIONS", 1)[1]
    for category in ("queue_size", "reliability", "caching", "performance"):
        assert category in advice, category
    assert "max_queue_size → " in advice
    assert "Traceback" not in result.stderr
    namespace = result.stdout.split("in namespace ", 1)[1].split()[0]
    assert not [n for n in os.listdir(SHM_DIR) if n.startswith(f"{namespace}.")]


def test_demo_stops_cleanly_on_ctrl_c():
    """Ctrl-C (SIGINT to the demo) stops the workers, then the daemon, and the counts still
    reconcile exactly."""
    # As a context manager: its pipes are closed however the test ends.
    with subprocess.Popen([script("ai-analytics"), "demo", "--duration", "60"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          preexec_fn=interruptible) as proc:
        try:
            line = proc.stdout.readline()
            assert line.startswith("demo: daemon pid"), line + proc.stderr.read()
            # The live page's URL, and the daemon serves the page there.
            while not line.startswith("demo: live page: "):
                line = proc.stdout.readline()
                assert line, proc.stderr.read()
            url = line.split("page: ", 1)[1].split()[0]
            with urllib.request.urlopen(url, timeout=10) as page:
                assert page.status == 200
                assert page.headers["Content-Type"] == "text/html; charset=utf-8"
            # Interrupted once the workers run and events are counted: a live frame shows
            # them.
            while "received " not in line:
                line = proc.stdout.readline()
                assert line, proc.stderr.read()
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, out + err
    assert "demo: stopping" in out and "(exact)" in out
    assert "Traceback" not in err
