"""systemd integration with real processes: what a real daemon tells systemd and when, the
SIGHUP reload of a running daemon, and the unit file as systemd-analyze sees it."""

from __future__ import annotations

import itertools
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from ai_analytics.client._lane import read_geometry
from ai_analytics.core.config import config_from_mapping
from ai_analytics.core.namespace_lock import daemon_running
from ai_analytics.daemon.service import Daemon

from helpers import (
    SYSTEMD_UNIT,
    fetch,
    free_port,
    read_config,
    run_daemon,
    run_python,
    script,
    taken_port,
    wait_for,
    write_config,
)


# -- a Daemon run in this process, a lane made by another ------------------------------------------
def test_ready_comes_after_the_namespace_http_and_the_first_scan(namespace, tmp_path):
    """At the moment READY=1 is sent, the namespace lock is held, the HTTP port accepts
    connections and a lane that existed before the start is attached; STOPPING=1 is the last
    word, and WATCHDOG=1 comes from the loop at the given pace."""
    run_python('from ai_analytics import client\nclient.emit("web", 1.0)', namespace)
    port = free_port()
    daemon = Daemon(config_from_mapping({
        "namespace": namespace, "state_dir": str(tmp_path), "http_port": port,
        "batch_timeout_seconds": 0.05, "snapshot_interval_seconds": 0.2}))
    sent: list[str] = []
    at_ready: dict[str, object] = {}

    def fake_notify(state: str) -> bool:
        if state == "READY=1" and not at_ready:
            at_ready["lock"] = daemon_running(namespace)
            with socket.create_connection(("127.0.0.1", port), timeout=2):
                at_ready["http"] = True
            at_ready["lanes"] = len(daemon.lanes)
        sent.append(state)
        if sent.count("WATCHDOG=1") >= 3:
            daemon.request_stop()
        return True

    thread = threading.Thread(target=daemon.run,
                              kwargs={"notify": fake_notify, "watchdog_seconds": 0.1})
    thread.start()
    thread.join(30)
    assert not thread.is_alive()
    assert at_ready == {"lock": True, "http": True, "lanes": 1}
    assert sent[0] == "READY=1" and sent[-1] == "STOPPING=1"
    assert sent.count("WATCHDOG=1") == 3


# -- a real daemon process ------------------------------------------------------------------------
def test_a_real_daemon_says_ready_then_beats_then_stopping(daemon_factory, make_config,
                                                            listener):
    """ai-analyticsd with NOTIFY_SOCKET and WATCHDOG_USEC=500000: READY=1 first, and its
    HTTP port answers right after; then WATCHDOG=1 every ~0.25 s (never a gap as long as the
    watchdog timeout) with STATUS= lines between; after SIGTERM, STOPPING=1, exit 0, and no
    beat after it."""
    config = make_config()
    daemon = daemon_factory(config, env={"NOTIFY_SOCKET": listener.address,
                                         "WATCHDOG_USEC": "500000"})
    assert listener.next(15.0) == "READY=1"
    status = fetch(read_config(config)["http_port"], path="/healthz")[0]
    assert status in (200, 503)  # listening: "ok", or "starting" before the first round
    beats: list[float] = []
    others: list[str] = []
    while len(beats) < 8:
        message = listener.next(5.0)
        if message == "WATCHDOG=1":
            beats.append(time.monotonic())
        else:
            others.append(message)
    gaps = [b - a for a, b in itertools.pairwise(beats)]
    assert max(gaps) < 0.5, gaps
    assert any(m.startswith("STATUS=") and "received 0" in m for m in others), others
    daemon.proc.send_signal(signal.SIGTERM)
    after = listener.until("STOPPING=1")
    assert daemon.proc.wait(15) == 0
    assert "READY=1" not in after
    assert "WATCHDOG=1" not in listener.pending()


def test_no_ready_when_the_port_is_taken(make_config, listener):
    """A daemon that cannot listen never says READY=1: systemd sees a failed start."""
    with taken_port() as port:
        result = run_daemon(make_config(http_port=port), env={"NOTIFY_SOCKET": listener.address},
                            timeout=30)
    assert result.returncode == 1
    assert listener.pending() == []


def slow_model_findings(state: dict) -> list[dict]:
    return [f for f in state.get("findings", []) if f["kind"] == "slow_model"]


def test_sighup_reload_applies_new_settings_and_keeps_the_counters(daemon_factory, make_config,
                                                                   namespace, listener):
    """SIGHUP with a changed, valid file: RELOADING=1 (with MONOTONIC_USEC on the same
    clock) then READY=1; the new snapshot interval shows in state.json's daemon section and
    the new slow-model threshold opens a finding; events received before the reload are
    still counted after it. Then files with a bad value or an unknown key: refused with a
    log line naming the key, RELOADING=1/READY=1 still sent, the daemon runs on with the
    config it had."""
    path = make_config()
    settings = read_config(path)
    daemon = daemon_factory(path, env={"NOTIFY_SOCKET": listener.address})
    listener.until("READY=1")
    run_python('from ai_analytics import client\n'
               'for _ in range(30): client.emit("generate", 100.0, model="big")', namespace)
    before = daemon.state_after(lambda s: s["events"]["received"] == 30, what="events")
    assert slow_model_findings(before) == []
    assert before["daemon"]["snapshot_interval_seconds"] == 0.2

    write_config(path, **{**settings, "snapshot_interval_seconds": 0.3,
                          "insight_slow_model_ms": 50.0})
    listener.pending()
    asked = time.monotonic_ns() // 1000
    daemon.proc.send_signal(signal.SIGHUP)
    messages = [m for m in listener.until("READY=1") if not m.startswith(("STATUS=",))]
    assert len(messages) == 2 and messages[1] == "READY=1", messages
    reloading, stamp = messages[0].split("\n")
    assert reloading == "RELOADING=1" and stamp.startswith("MONOTONIC_USEC=")
    assert 0 <= int(stamp.split("=")[1]) - asked < 10_000_000

    after = daemon.state_after(
        lambda s: s["daemon"]["snapshot_interval_seconds"] == 0.3 and slow_model_findings(s),
        what="the reloaded settings at work")
    assert after["events"] == before["events"]
    assert slow_model_findings(after)[0]["threshold"] == 50.0
    assert "config reloaded: snapshot_interval_seconds=0.3, insight_slow_model_ms=50.0" \
        in daemon.log()

    for bad, key in (({**settings, "insight_slow_model_ms": -5}, "insight_slow_model_ms"),
                     ({**settings, "snapshot_intervall": 1.0}, "snapshot_intervall")):
        write_config(path, **bad)
        daemon.proc.send_signal(signal.SIGHUP)
        messages = [m for m in listener.until("READY=1") if not m.startswith("STATUS=")]
        assert messages[0].startswith("RELOADING=1\n"), messages
        refused = wait_for(lambda key=key: [
            line for line in daemon.log().splitlines()
            if "reload refused" in line and key in line], what=f"refusal naming {key}")
        assert len(refused) == 1, refused
    assert daemon.proc.poll() is None
    kept = daemon.state_after(lambda s: True, what="a state after the refusals")
    assert kept["daemon"]["snapshot_interval_seconds"] == 0.3
    assert slow_model_findings(kept)[0]["threshold"] == 50.0
    assert kept["events"]["received"] == 30
    assert daemon.stop() == 0
    assert daemon.state()["events"]["received"] == 30


def test_sighup_keeps_restart_only_settings_and_republishes_lane_settings(daemon_factory,
                                                                          make_config, namespace):
    """A new http_port is logged as needing a restart and the old port keeps serving; a new
    max_queue_size and on_full reach the control segment, which new lanes are made from."""
    path = make_config()
    settings = read_config(path)
    daemon = daemon_factory(path)
    wait_for(lambda: fetch(settings["http_port"], path="/healthz")[0] == 200, what="healthz")
    assert read_geometry(namespace).capacity != 1024
    new_port = free_port()
    write_config(path, **{**settings, "http_port": new_port, "max_queue_size": 1024,
                          "on_full": "overwrite"})
    daemon.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "config reloaded" in daemon.log(), what="the reload")
    assert f"http_port changed to {new_port}, which needs a restart" in daemon.log()
    geometry = read_geometry(namespace)
    assert (geometry.capacity, geometry.overwrite) == (1024, True)
    assert fetch(settings["http_port"], path="/healthz")[0] == 200
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", new_port), timeout=1).close()
    assert daemon.stop() == 0


# -- the unit file as systemd-analyze sees it ------------------------------------------------------
def verify(unit_path: Path) -> list[str]:
    """systemd-analyze verify's complaints about ``unit_path`` itself.

    It always exits 0 for warnings (an unknown key, a bad value), so its output is what
    counts. Lines about other units (the host's own units, pulled in as dependencies of
    multi-user.target) are not ours to judge and are left out. --man=no: the man pages named
    by Documentation= are not looked up. It does not check that User= exists."""
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit_path)],
                            capture_output=True, text=True, timeout=60)
    lines = (result.stdout + result.stderr).splitlines()
    ours = [line for line in lines if unit_path.name in line]
    if result.returncode != 0:
        ours.append(f"exit status {result.returncode}: {lines}")
    return ours


@pytest.fixture
def unit_copy(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this environment's ai-analyticsd (the installed
    path, /usr/local/bin, does not exist here and would be the one complaint)."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    binary = script("ai-analyticsd")
    assert Path("/bin/kill").exists()  # ExecReload's
    copy = tmp_path / SYSTEMD_UNIT.name
    copy.write_text(SYSTEMD_UNIT.read_text().replace("/usr/local/bin/ai-analyticsd", binary))
    return copy


def test_systemd_analyze_verify_finds_no_problem(unit_copy: Path):
    """systemd-analyze verify has nothing to say about the unit (every key known, every
    value parsed, every command executable)."""
    assert verify(unit_copy) == []


def test_systemd_analyze_verify_would_catch_a_mistake(unit_copy: Path):
    """The check above can fail: a misspelt key and a bad mode are both reported."""
    text = unit_copy.read_text()
    unit_copy.write_text(text.replace("WatchdogSec=", "WatchdogSecs=").replace(
        "UMask=0022", "UMask=0999"))
    problems = verify(unit_copy)
    assert any("WatchdogSecs" in line for line in problems), problems
    assert any("0999" in line for line in problems), problems
