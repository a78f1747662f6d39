"""systemd integration in this process: the notify protocol against real sockets, the
wake-up pipe's reload flag, the reload plan and its application to a Daemon, and what the
unit file declares."""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time

import pytest

from ai_analytics.core.config import Config, config_from_mapping
from ai_analytics.core.wakeup import StopRequest
from ai_analytics.daemon import systemd_notify
from ai_analytics.daemon.reload import NEEDS_RESTART, plan_reload
from ai_analytics.daemon.systemd_notify import notify, watchdog_interval

from helpers import (
    SYSTEMD_UNIT,
    Listener,
)


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
    unit = unit_settings(SYSTEMD_UNIT.read_text())
    assert unit["Type"] == ["notify"] and unit["NotifyAccess"] == ["main"]
    assert unit["WatchdogSec"] == ["30"] and unit["Restart"] == ["on-failure"]
    assert unit["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert float(unit["TimeoutStopSec"][0]) > Config().stop_timeout_seconds + 2
    assert unit["User"] == ["ai-analytics"] and unit["Group"] == ["ai-analytics"]
    assert unit["ProtectSystem"] == ["strict"] and unit["NoNewPrivileges"] == ["yes"]
    for hides_shm in ("PrivateDevices", "PrivateIPC", "RemoveIPC", "DynamicUser",
                      "ProtectProc"):
        assert hides_shm not in unit, hides_shm


