"""The operator's view with real processes: ``ai-analytics status`` against a live daemon and
after it was killed, ``ai-analytics lanes`` reading shared memory that real producers wrote,
and ``--watch`` in a real terminal under tmux."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from ai_analytics.cli import status
from ai_analytics.cli.shm_view import read_namespace

from helpers import (
    SHM_DIR,
    STATUS_TITLES,
    invoke,
    row,
    run_python,
    script,
    section,
    start_python,
    wait_for,
)

# -- status against a live daemon, and after it was killed -------------------------------------
EMIT_KNOWN = """
from ai_analytics import client
for i in range({n}):
    client.emit("chat_completion", 10.0 + i % 10, model="llama-3-8b", quality=0.5,
                success=i % 25 != 0)
"""


def test_status_against_a_live_daemon(
    daemon_factory: Callable[..., object], namespace: str, make_config: Callable[..., Path]
) -> None:
    """A healthy live daemon: status (CliRunner and the installed script) exits 0 with every
    section, the operation's count and error rate as emitted; --json is the snapshot with
    daemon.running true."""
    path = make_config()
    daemon = daemon_factory(path)
    run_python(EMIT_KNOWN.format(n=120), namespace)
    daemon.state_after(lambda d: d["events"]["received"] == 120, what="120 received")
    result = invoke("status", "--config", str(path))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"ai-analyticsd running · namespace {namespace} · pid "
                                    f"{daemon.proc.pid} ·")
    for title in STATUS_TITLES:
        assert title in result.stdout
    cells = row(result.stdout, "chat_completion")
    assert cells[1:3] == ["llama-3-8b", "120"] and cells[4] == "4.2%"
    assert cells[-1] == "0.500"
    assert "events: received 120 · dropped 0" in result.stdout
    as_json = invoke("status", "--config", str(path), "--json")
    assert as_json.exit_code == 0
    document = json.loads(as_json.stdout)
    assert document["daemon"]["running"] is True and document["daemon"]["pid"] == daemon.proc.pid
    assert document["events"]["received"] == 120
    assert set(document) >= {"schema_version", "operations", "models", "events", "resources"}
    proc = subprocess.run([script("ai-analytics"), "status", "--config", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr == "" and "OPERATIONS (last 1m)" in proc.stdout
    assert max(len(line) for line in proc.stdout.splitlines()) <= 120


PRODUCE_WITHOUT_DAEMON = """
import json, os, threading
from ai_analytics import client
main = [client.emit("chat_completion", 5.0, model="llama-3-8b") for _ in range({main})]
main_lane = client._emit._local.lane.name
side = []
def work():
    side.extend(client.emit("embedding", 1.0) for _ in range({side}))
    side.append(client._emit._local.lane.name)
thread = threading.Thread(target=work)
thread.start()
thread.join()
side_lane = side.pop()
print(json.dumps({{"pid": os.getpid(), "main_ok": sum(main), "main_dropped": main.count(False),
                  "side_ok": sum(side), "main_lane": main_lane, "side_lane": side_lane}}))
"""


def lane_row(text: str, namespace: str, name: str) -> list[str]:
    """The cells of the table row of lane ``name``, which tables label by the first 6 hex
    digits of its instance and its serial."""
    return row(text, status.lane_label(name, f"{namespace}.lane."))


def test_status_with_the_daemon_killed_reads_shared_memory(
    daemon_factory: Callable[..., object], namespace: str, make_config: Callable[..., Path]
) -> None:
    """Kill the daemon, then a producer emits into 16-record lanes (the geometry the dead
    daemon published): status says plainly that ai-analyticsd is NOT running, shows the
    lanes with pending and dropped equal to what was emitted, the producer gone and the
    thread's lane retired, and exits 3."""
    path = make_config(max_queue_size=16)
    daemon = daemon_factory(path)
    run_python(EMIT_KNOWN.format(n=5), namespace)
    daemon.state_after(lambda d: d["events"]["received"] == 5, what="5 received")
    daemon.kill()
    assert not status.daemon_running(namespace)
    emitted = json.loads(run_python(PRODUCE_WITHOUT_DAEMON.format(main=40, side=3),
                                    namespace).stdout)
    assert (emitted["main_ok"], emitted["main_dropped"], emitted["side_ok"]) == (16, 24, 3)
    pid = emitted["pid"]

    proc = subprocess.run([script("ai-analytics"), "status", "--config", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    head = " ".join(proc.stdout.split("\n\n")[0].split())
    assert head.startswith(f"ai-analyticsd is NOT running for namespace {namespace}: showing "
                           "shared memory directly; last snapshot from ")
    shm = section(proc.stdout, "SHARED MEMORY")
    assert "events pending 19" in shm and "dropped 24" in shm
    assert "0 producer processes alive, 1 retired" in shm
    assert (f"written by pid {daemon.proc.pid} in its PID namespace, uid {os.getuid()} (no "
            "daemon holds the namespace)") in " ".join(shm.split())
    #        lane, pid, uid, alive, retired, on_full, capacity, pending, fill, dropped, names...
    uid = str(os.getuid())
    assert lane_row(shm, namespace, emitted["main_lane"])[1:10] == [
        str(pid), uid, "no", "no", "drop", "16", "16", "100.0%", "24"]
    assert lane_row(shm, namespace, emitted["side_lane"])[1:10] == [
        str(pid), uid, "no", "yes", "drop", "16", "3", "18.8%", "0"]
    assert "LAST SNAPSHOT" in proc.stdout and "received 5" in section(proc.stdout,
                                                                       "LAST SNAPSHOT")
    as_json = invoke("status", "--config", str(path), "--json")
    assert as_json.exit_code == 3
    assert json.loads(as_json.stdout)["daemon"]["running"] is False

    view = invoke("lanes", "--config", str(path), "--json")
    assert view.exit_code == 0
    data = json.loads(view.stdout)
    ours = {lane["names"][0]: lane for lane in data["lanes"] if lane["pid"] == pid}
    assert {k: ours["chat_completion"][k] for k in (
        "name", "head", "tail", "pending", "dropped", "capacity", "fill", "retired", "alive",
        "worker_pid", "same_pid_namespace", "uid", "ring", "names")} == {
        "name": emitted["main_lane"], "head": 16, "tail": 0, "pending": 16, "dropped": 24,
        "capacity": 16, "fill": 1.0, "retired": False, "alive": False, "worker_pid": pid,
        "same_pid_namespace": True, "uid": os.getuid(), "ring": True,
        "names": ["chat_completion", "llama-3-8b"]}
    assert (ours["embedding"]["head"], ours["embedding"]["retired"]) == (3, True)
    assert data["control"]["daemon_pid"] == daemon.proc.pid
    assert data["control"]["owner_uid"] == os.getuid()
    assert data["lock"] == {"present": True, "held": False, "holder_pid": None,
                            "recorded_pid": daemon.proc.pid}


# -- lanes, read from shared memory ------------------------------------------------------------
def test_lanes_with_a_live_daemon_and_producer(
    daemon_factory: Callable[..., object], namespace: str, make_config: Callable[..., Path]
) -> None:
    """With a daemon draining and a producer still alive: lanes shows the daemon holding the
    lock and publishing the control segment, the lane drained by it (tail = head = emits,
    consumer = the daemon), the producer alive; exit 0 in text and JSON."""
    path = make_config(max_queue_size=64)
    daemon = daemon_factory(path)
    producer = start_python("""
        import sys
        from ai_analytics import client
        for i in range(50):
            client.emit("rerank", 2.0, model="bge-reranker")
        print(client._emit._local.lane.name, flush=True)
        sys.stdin.read()
        """, namespace, stdin=subprocess.PIPE)
    try:
        name = producer.stdout.readline().strip()

        def drained() -> dict | None:
            result = invoke("lanes", "--config", str(path), "--json")
            data = json.loads(result.stdout)
            lanes = [lane for lane in data["lanes"] if lane["name"] == name]
            return data if lanes and lanes[0]["tail"] == 50 else None

        data = wait_for(drained, what="the daemon drains the lane")
        (lane,) = [lane for lane in data["lanes"] if lane["name"] == name]
        assert (lane["head"], lane["pending"], lane["capacity"], lane["consumer_pid"]) == \
            (50, 0, 64, daemon.proc.pid)
        assert lane["alive"] is True and lane["retired"] is False
        assert lane["pid"] == lane["worker_pid"] == producer.pid
        assert lane["names_count"] == 2 and lane["names_capacity"] >= 2
        assert data["lock"]["held"] is True
        assert data["lock"]["recorded_pid"] == daemon.proc.pid
        assert data["lock"]["holder_pid"] in (daemon.proc.pid, None)  # None: /proc/locks hidden
        assert data["control"]["daemon_pid"] == daemon.proc.pid
        assert data["control"]["capacity"] == 64
        text = invoke("lanes", "--config", str(path))
        assert text.exit_code == 0
        assert text.stdout.startswith(f"namespace {namespace} in /dev/shm: ai-analyticsd running")
        assert f"written by pid {daemon.proc.pid} in its PID namespace" in text.stdout
        assert "(its daemon runs)" in text.stdout
        cells = lane_row(text.stdout, namespace, name)
        assert cells[1:9] == [str(producer.pid), str(os.getuid()), "yes", "no", "drop", "64",
                              "0", "0.0%"]
        positions = section(text.stdout, "POSITIONS")
        assert lane_row(positions, namespace, name)[2:6] == ["50", "50", "2/256",
                                                             str(daemon.proc.pid)]
        assert "rerank, bge-reranker" in positions
    finally:
        producer.communicate(input="", timeout=30)


def _write_segment(namespace: str, suffix: str, data: bytes) -> None:
    with open(os.path.join(SHM_DIR, f"{namespace}.lane.{suffix}"), "wb") as f:
        f.write(data)


def test_lanes_counts_known_emits_and_lists_garbage_as_unreadable(
    namespace: str, make_config: Callable[..., Path], state_dir: Path
) -> None:
    """No daemon: lanes reads a producer's lanes with exactly its emits, and lists every
    hostile or half-made segment (bad magic, empty, no magic yet, wrong size, bad name, not a
    regular file) as unreadable with its reason; nothing crashes, nothing is modified or
    removed, exit 0. An empty namespace exits 3."""
    path = make_config()
    empty = invoke("lanes", "--config", str(path))
    assert empty.exit_code == 3 and "no ai-analyticsd runs for it" in empty.stderr
    assert json.loads(invoke("lanes", "--config", str(path), "--json").stdout)["lanes"] == []

    emitted = json.loads(run_python(PRODUCE_WITHOUT_DAEMON.format(main=7, side=5),
                                    namespace).stdout)
    pid = emitted["pid"]
    real = Path(SHM_DIR, emitted["main_lane"]).read_bytes()
    garbage, empty_file, half_made, short, fifo = (f"{'f' * 15}{k}.0" for k in range(5))
    _write_segment(namespace, garbage, b"garbage!" * 512)
    _write_segment(namespace, empty_file, b"")
    _write_segment(namespace, half_made, bytes(8) + real[8:])  # magic not stored yet
    _write_segment(namespace, short, real[:4096])  # header of a bigger lane
    _write_segment(namespace, "1.0", real)  # a copy under a name that is not a lane's
    _write_segment(namespace, "notalane", b"x")
    os.mkfifo(os.path.join(SHM_DIR, f"{namespace}.lane.{fifo}"))
    before = {name: os.stat(os.path.join(SHM_DIR, name)).st_mtime_ns
              for name in os.listdir(SHM_DIR) if name.startswith(f"{namespace}.")}

    result = invoke("lanes", "--config", str(path), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [(lane["names"], lane["head"], lane["tail"], lane["pending"], lane["dropped"])
            for lane in sorted(data["lanes"], key=lambda lane: lane["names"])] == [
        (["chat_completion", "llama-3-8b"], 7, 0, 7, 0), (["embedding"], 5, 0, 5, 0)]
    assert data["totals"]["pending"] == 12 and data["totals"]["unreadable"] == 7
    reasons = {u["name"].removeprefix(f"{namespace}.lane."): u["reason"]
               for u in data["unreadable"]}
    assert reasons[garbage] == "bad magic b'garbage!'"
    assert reasons[empty_file].endswith("header not written yet")
    assert reasons[half_made].startswith("no magic yet")
    assert reasons[short].startswith("4096 bytes, expected ")
    assert reasons["1.0"].startswith("name does not match")
    assert reasons["notalane"].startswith("name does not match")
    assert reasons[fifo] == "not a regular file"

    text = invoke("lanes", "--config", str(path))
    assert text.exit_code == 0
    assert "ai-analyticsd NOT running" in text.stdout and "control: none" in text.stdout
    assert "UNREADABLE (7)" in text.stdout
    assert f"{namespace}.lane.{garbage}: unreadable: bad magic b'garbage!'" in text.stdout
    assert lane_row(text.stdout, namespace, emitted["main_lane"])[1:11] == [
        str(pid), str(os.getuid()), "no", "no", "drop", "8,192", "7", "0.1%", "0", "0"]
    shown = invoke("status", "--config", str(path))
    assert shown.exit_code == 3
    head = " ".join(shown.stdout.split("\n\n")[0].split())
    assert head.endswith(f"; no snapshot in {state_dir / 'state.json'}")
    assert "events pending 12" in shown.stdout
    assert f"{namespace}.lane.{short}: unreadable: 4096 bytes" in shown.stdout
    after = {name: os.stat(os.path.join(SHM_DIR, name)).st_mtime_ns
             for name in os.listdir(SHM_DIR) if name.startswith(f"{namespace}.")}
    assert after == before
    assert read_namespace(namespace).totals()["published"] == 12


# -- --watch in a real terminal ----------------------------------------------------------------
def _tmux(socket: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """tmux on a private server (its socket in the test's tmp_path, no user config)."""
    return subprocess.run(["tmux", "-S", str(socket), "-f", "/dev/null", *args],
                          capture_output=True, text=True, timeout=30)


@pytest.mark.skipif(shutil.which("tmux") is None,
                    reason="tmux is not installed: --watch needs a real terminal to be tested")
def test_watch_redraws_in_a_real_terminal_and_ctrl_c_exits_130(
    daemon_factory: Callable[..., object], namespace: str, make_config: Callable[..., Path],
    tmp_path: Path,
) -> None:
    """In a real terminal (tmux, 160x50) ``status --watch 0.5`` draws the header and the
    operations table at the terminal's width (not a stale $COLUMNS), redraws in place (one
    header on screen, the clock and snapshot age change), and Ctrl-C ends it with exit
    status 130 and no traceback."""
    path = make_config()
    daemon = daemon_factory(path)
    run_python(EMIT_KNOWN.format(n=30), namespace)
    daemon.state_after(lambda d: d["events"]["received"] == 30, what="30 received")
    exit_file = tmp_path / "exit-status"
    socket = tmp_path / "tmux.sock"
    # A stale $COLUMNS must not win over the terminal's real width.
    command = (f"COLUMNS=80 {shlex.quote(script('ai-analytics'))} status --config "
               f"{shlex.quote(str(path))} --watch 0.5; echo $? > {shlex.quote(str(exit_file))}")

    def screen() -> str:
        return _tmux(socket, "capture-pane", "-p", "-t", "watch").stdout

    def screen_when(predicate: Callable[[str], bool]) -> str | None:
        shown = screen()
        return shown if predicate(shown) else None

    try:
        started = _tmux(socket, "new-session", "-d", "-s", "watch", "-x", "160", "-y", "50",
                        command)
        assert started.returncode == 0, started.stderr
        _tmux(socket, "set-option", "-t", "watch", "remain-on-exit", "on")
        first = wait_for(lambda: screen_when(lambda s: "Ctrl-C to stop" in s), timeout=20,
                         what="the first frame")
        assert first.count("ai-analyticsd running · namespace") == 1
        assert max(len(line) for line in first.splitlines()) > 80  # the 160-column terminal
        assert "OPERATIONS (last 1m)" in first
        assert row(first, "chat_completion")[1:3] == ["llama-3-8b", "30"]
        second = wait_for(lambda: screen_when(lambda s: s != first and "Ctrl-C" in s),
                          timeout=10, what="a redraw")
        assert second.count("ai-analyticsd running · namespace") == 1
        assert "OPERATIONS (last 1m)" in second
        _tmux(socket, "send-keys", "-t", "watch", "C-c")
        code = wait_for(lambda: exit_file.exists() and exit_file.read_text().strip(),
                        timeout=10, what="the exit status")
        assert code == "130"
        final = screen()
        assert "Traceback" not in final and "Aborted" not in final
    finally:
        _tmux(socket, "kill-server")
