"""systemd integration: the notify protocol, what a real daemon tells systemd and when, the
SIGHUP reload, and the unit file as systemd-analyze sees it."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from ai_analytics.client._lane import read_geometry
from ai_analytics.core.config import Config, config_from_mapping
from ai_analytics.core.namespace_lock import daemon_running
from ai_analytics.core.wakeup import StopRequest
from ai_analytics.daemon import systemd_notify
from ai_analytics.daemon.reload import NEEDS_RESTART, plan_reload
from ai_analytics.daemon.service import Daemon
from ai_analytics.daemon.systemd_notify import notify, watchdog_interval

from helpers import (
    REPO,
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

UNIT = REPO / "systemd" / "ai-analyticsd.service"


class Listener:
    """A real AF_UNIX datagram socket standing in for systemd's notify socket."""

    def __init__(self, address: str) -> None:
        self.address = address  # as NOTIFY_SOCKET names it: a path, or "@name"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        bound = "\0" + address[1:] if address.startswith("@") else address
        self.sock.bind(bound)

    def next(self, timeout: float = 10.0) -> str:
        self.sock.settimeout(timeout)
        return self.sock.recv(4096).decode()

    def until(self, wanted: str, timeout: float = 15.0) -> list[str]:
        """Every datagram up to and including the first equal to ``wanted``."""
        deadline = time.monotonic() + timeout
        seen: list[str] = []
        while not seen or seen[-1] != wanted:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {wanted!r} within {timeout} s; got {seen}")
            try:
                seen.append(self.next(left))
            except TimeoutError:
                continue
        return seen

    def pending(self) -> list[str]:
        """The datagrams already queued, without waiting."""
        seen = []
        self.sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            while True:
                seen.append(self.sock.recv(4096).decode())
        return seen

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def listener(tmp_path: Path):
    sock = Listener(str(tmp_path / "notify.sock"))
    yield sock
    sock.close()


@pytest.fixture
def notify_env(monkeypatch: pytest.MonkeyPatch, listener: Listener) -> Listener:
    monkeypatch.setenv("NOTIFY_SOCKET", listener.address)
    return listener


# -- notify() against real sockets ----------------------------------------------------------------
def test_notify_sends_each_state_as_one_exact_datagram(notify_env: Listener):
    """Each call is one datagram holding exactly the state given, multi-line ones included."""
    states = ["READY=1", "WATCHDOG=1", "RELOADING=1\nMONOTONIC_USEC=123456789",
              "STATUS=received 3, dropped 0", "STOPPING=1"]
    for state in states:
        assert notify(state) is True
    assert [notify_env.next(1.0) for _ in states] == states
    assert notify_env.pending() == []


def test_notify_reaches_an_abstract_socket(monkeypatch: pytest.MonkeyPatch):
    """NOTIFY_SOCKET="@name" is the abstract namespace: the datagram reaches a socket bound
    to "\\0name", not a file called "@name"."""
    abstract = Listener(f"@ai-analytics-test-{os.getpid()}-{time.monotonic_ns()}")
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", abstract.address)
        assert notify("READY=1") is True
        assert abstract.next(1.0) == "READY=1"
    finally:
        abstract.close()


def test_notify_without_the_variable_does_nothing(monkeypatch: pytest.MonkeyPatch,
                                                  listener: Listener):
    """Not started by systemd (no NOTIFY_SOCKET, or an empty one): False, nothing sent."""
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify("READY=1") is False
    monkeypatch.setenv("NOTIFY_SOCKET", "")
    assert notify("READY=1") is False
    assert listener.pending() == []


@pytest.mark.parametrize("address", [
    "/nonexistent-dir/notify.sock",  # no such socket
    "@ai-analytics-test-nobody-listens",  # an abstract name nobody bound
    "vsock:2:1234",  # a kind of address we do not speak
])
def test_a_bad_notify_socket_is_false_and_logged_once(address, tmp_path, monkeypatch, caplog):
    """A socket that cannot be reached never raises into the daemon: False, and one warning
    naming the socket however often the daemon tries."""
    if address.startswith("/"):
        address = str(tmp_path / "missing" / "notify.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    monkeypatch.setattr(systemd_notify, "_failed_sockets", set())
    with caplog.at_level(logging.WARNING, logger="ai_analytics.daemon"):
        assert [notify("WATCHDOG=1") for _ in range(3)] == [False] * 3
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and address in warnings[0], warnings


def test_notify_to_a_file_that_is_not_a_socket_is_false(tmp_path, monkeypatch):
    """A path that exists but is no socket (a stale regular file): False, no exception."""
    path = tmp_path / "not-a-socket"
    path.write_text("")
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    monkeypatch.setattr(systemd_notify, "_failed_sockets", set())
    assert notify("READY=1") is False


@pytest.mark.parametrize(("usec", "pid", "expected"), [
    ("500000", None, 0.5),
    ("30000000", "self", 30.0),
    ("30000000", "other", None),  # meant for another process
    (None, None, None),
    ("0", None, None),
    ("soon", None, None),
    ("500000", "not-a-pid", None),
])
def test_watchdog_interval(usec, pid, expected, monkeypatch):
    """$WATCHDOG_USEC in seconds, only when $WATCHDOG_PID is unset or ours; None for no
    watchdog and for values that cannot be read."""
    for name, value in (("WATCHDOG_USEC", usec), ("WATCHDOG_PID", pid)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            value = {"self": str(os.getpid()), "other": str(os.getpid() + 1)}.get(value, value)
            monkeypatch.setenv(name, value)
    assert watchdog_interval() == expected


# -- the wake-up pipe's reload flag ---------------------------------------------------------------
def test_a_reload_request_wakes_the_loop_and_is_taken_once():
    """request_reload wakes a waiting loop at once without asking it to stop; requests made
    before the loop looks are taken once; a request after that is taken again."""
    request = StopRequest()
    try:
        timer = threading.Timer(0.05, request.request_reload)
        started = time.monotonic()
        timer.start()
        assert request.wait(10.0) is False
        assert time.monotonic() - started < 5.0
        timer.join()
        request.request_reload()
        assert request.take_reload() is True
        assert request.take_reload() is False
        request.request_reload()
        assert request.wait(10.0) is False  # a pending reload: no sleep at all
        assert request.take_reload() is True
        assert not request.is_set()
    finally:
        request.close()


# -- the reload plan and its application, in process ----------------------------------------------
def test_plan_keeps_restart_only_settings_and_applies_the_rest(namespace, tmp_path):
    """Settings built into objects at start keep their running value and are reported;
    everything else changes."""
    running = config_from_mapping({"namespace": namespace, "state_dir": str(tmp_path)})
    new = dataclasses.replace(running, http_port=running.http_port + 1, max_series=7,
                              batch_size=128, insight_slow_model_ms=10.0, log_level="debug")
    plan = plan_reload(running, new)
    assert plan.needs_restart == ("max_series", "http_port")
    assert plan.changed == ("batch_size", "log_level", "insight_slow_model_ms")
    assert plan.config == dataclasses.replace(new, http_port=running.http_port, max_series=1024)
    assert set(NEEDS_RESTART) < {f.name for f in dataclasses.fields(Config)}
    assert plan_reload(running, running).changed == ()


def test_reload_updates_every_object_that_keeps_a_setting(make_daemon, state_dir, tmp_path,
                                                         caplog):
    """Daemon.reload reaches the drainer, insights, resources, history, lanes and the sinks'
    breakers, keeps the statistics objects (and so every counter), and logs what needs a
    restart."""
    daemon = make_daemon()
    stats, lanes, insights = daemon.stats, daemon.lanes, daemon.insights
    new = dataclasses.replace(
        daemon.config, batch_size=333, insight_slow_model_ms=12.0,
        resource_interval_seconds=0.5, history_max_megabytes=3.0,
        history_max_age_seconds=120.0, trusted_uids=(4242,), max_lanes=9,
        failure_threshold=2, max_processing_time_seconds=0.5,
        state_dir=str(tmp_path / "elsewhere"))
    with caplog.at_level(logging.INFO, logger="ai_analytics.daemon"):
        plan = daemon.reload(new)
    assert plan.needs_restart == ("state_dir",)
    assert daemon.config.state_dir == str(state_dir)
    assert daemon.drainer.batch_size == 333
    assert daemon.insights is insights and insights.config.insight_slow_model_ms == 12.0
    assert daemon.resources.config.resource_interval_seconds == 0.5
    assert daemon.sinks.history.max_bytes == 3 * 1024 * 1024
    assert daemon.sinks.history.max_age_seconds == 120.0
    assert 4242 in daemon.lanes.trusted_uids and daemon.lanes.max_lanes == 9
    assert daemon.stats is stats and daemon.lanes is lanes
    for sink in daemon.sinks.guarded.values():
        assert sink.breaker.failure_threshold == 2 and sink.bounded.timeout == 0.5
    messages = "\n".join(r.getMessage() for r in caplog.records)
    assert "state_dir changed" in messages and "needs a restart" in messages
    assert "batch_size=333" in messages


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


# -- the unit file --------------------------------------------------------------------------------
def unit_settings(text: str) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith(("#", "[")) and "=" in line:
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


def test_unit_file_declares_notify_watchdog_reload_and_a_long_enough_stop():
    """The unit asks for what the daemon implements (Type=notify, the main process only,
    a 30 s watchdog, SIGHUP for reload), stops later than the daemon's own deadline, and keeps
    /dev/shm shared (no PrivateDevices=, no PrivateIPC=, no RemoveIPC=yes)."""
    unit = unit_settings(UNIT.read_text())
    assert unit["Type"] == ["notify"] and unit["NotifyAccess"] == ["main"]
    assert unit["WatchdogSec"] == ["30"] and unit["Restart"] == ["on-failure"]
    assert unit["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert float(unit["TimeoutStopSec"][0]) > Config().stop_timeout_seconds + 2
    assert unit["User"] == ["ai-analytics"] and unit["Group"] == ["ai-analytics"]
    assert unit["ProtectSystem"] == ["strict"] and unit["NoNewPrivileges"] == ["yes"]
    for hides_shm in ("PrivateDevices", "PrivateIPC", "RemoveIPC", "DynamicUser",
                      "ProtectProc"):
        assert hides_shm not in unit, hides_shm


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
    copy = tmp_path / UNIT.name
    copy.write_text(UNIT.read_text().replace("/usr/local/bin/ai-analyticsd", binary))
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
