"""Containers: workers and the daemon in different PID namespaces, mount namespaces and uids,
sharing only a segment directory, as a container runtime sets them up (``unshare``,
``setpriv``, tmpfs mounts; CI runs as root).

Each test ends in an exact reconciliation against what the workers' ``emit`` calls returned:
every call counted once, the accepted ones as ``received`` under their model, the refused ones
as ``dropped`` or ``no_lane``; and every lane reclaimed.
"""

from __future__ import annotations

import collections
import contextlib
import json
import mmap
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from ai_analytics.client import _layout as L
from ai_analytics.client._lane import read_geometry
from ai_analytics.client._proc import start_ticks
from ai_analytics.client._segments import control_name, lock_name, lock_path

from helpers import (
    SHM_DIR,
    DaemonProcess,
    events_total,
    fetch,
    free_port,
    invoke,
    run_daemon,
    wait_for,
    write_config,
)

PID_NAMESPACE = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"]
MODELS = ("llama-3-8b", "bge-small", "")
DAEMON_UID, WORKER_UID, OTHER_UID, SHARED_GID = 4201, 4202, 4203, 4300


def _runs(command: list[str]) -> str | None:
    """None when ``command`` runs here, else why not (for the skip reason)."""
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    return None if result.returncode == 0 else (result.stderr.strip() or "failed")


_NO_NAMESPACES = _runs([*PID_NAMESPACE, "true"])
pytestmark = pytest.mark.skipif(
    _NO_NAMESPACES is not None,
    reason=f"cannot make PID namespaces here (needs root and unshare): {_NO_NAMESPACES}")

# Emits from ``threads`` threads in each of ``procs`` processes (forked from this one, which
# then only waits: pid 1 of a namespace reaps its children; 0 procs: this process emits).
# ``calls`` per thread, 0 = until killed; after every call that returned, its thread's count
# of returned calls, and of calls accepted per model, goes to its slot of ``progress`` (a
# file shared with the test, 1 + len(models) counters a thread). With ``hold``, each
# thread then waits (two minutes at most) for that file to exist before it ends, so that the
# test can look at live lanes. Prints, per process, the calls by (model, what emit
# returned), and client.dropped_without_lane().
WORKER = """
import json, mmap, os, threading, time
from ai_analytics import client
procs, threads, calls, models = {procs}, {threads}, {calls}, {models!r}
slots = max(1, procs) * threads
width = 1 + len(models)
progress = memoryview(mmap.mmap(os.open({progress!r}, os.O_RDWR), 8 * width * slots)).cast("Q")

def run(first_slot):
    counts = [dict() for _ in range(threads)]
    ready = threading.Barrier(threads)
    def work(t):
        mine, i = counts[t], 0
        ready.wait()
        base = (first_slot + t) * width
        while calls == 0 or i < calls:
            m = (i + t) % len(models)
            ok = client.emit("infer", 1.0, model=models[m])
            key = models[m] + "|" + str(ok)
            mine[key] = mine.get(key, 0) + 1
            i += 1
            if ok:
                progress[base + 1 + m] += 1
            progress[base] = i
            if i % 500 == 0:
                time.sleep({pause})
        deadline = time.monotonic() + 120
        while {hold!r} and not os.path.exists({hold!r}) and time.monotonic() < deadline:
            time.sleep(0.01)
    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for w in workers: w.start()
    for w in workers: w.join()
    total = {{}}
    for mine in counts:
        for key, n in mine.items():
            total[key] = total.get(key, 0) + n
    print(json.dumps({{"pid": os.getpid(), "calls": total,
                      "without_lane": client.dropped_without_lane()}}), flush=True)

if procs == 0:
    run(0)
else:
    children = []
    for p in range(procs):
        pid = os.fork()
        if pid == 0:
            run(p * threads)
            os._exit(0)
        children.append(pid)
    for pid in children:
        os.waitpid(pid, 0)
"""


class Worker:
    """A worker process (or a tree of them) started by ``command`` around a Python; always
    reaped. ``progress`` holds each emitting thread's count of calls that returned, and
    ``accepted`` the calls accepted per model over all threads."""

    def __init__(self, tmp_path: Path, namespace: str, *, wrap: list[str] | None = None,
                 procs: int = 0, threads: int = 2, calls: int = 6000, pause: float = 0.002,
                 hold: bool = False, env: dict[str, str] | None = None) -> None:
        self.slots = max(1, procs) * threads
        self.width = 1 + len(MODELS)
        fd, path = tempfile.mkstemp(dir=tmp_path, prefix="progress-")
        os.ftruncate(fd, 8 * self.width * self.slots)
        os.fchmod(fd, 0o666)  # workers under other uids write it too
        os.close(fd)
        self.progress_path = path
        self.hold = f"{path}.go" if hold else ""
        code = textwrap.dedent(WORKER).format(procs=procs, threads=threads, calls=calls,
                                              models=MODELS, progress=path, pause=pause,
                                              hold=self.hold)
        self.proc = subprocess.Popen(
            [*(wrap or []), sys.executable, "-c", code],
            env={**os.environ, "AI_ANALYTICS_NAMESPACE": namespace, **(env or {})},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def _counters(self) -> list[int]:
        with open(self.progress_path, "rb") as f:
            return list(memoryview(f.read()).cast("Q"))

    def progress(self) -> list[int]:
        """Per thread: calls that returned."""
        return self._counters()[:: self.width]

    def accepted(self) -> dict[str, int]:
        """Per model, over every thread: calls that returned True."""
        counters = self._counters()
        return {model: sum(counters[1 + m :: self.width]) for m, model in enumerate(MODELS)}

    def inner_pid(self) -> int:
        """The worker's pid here, where ``wrap`` forks (its pid 1 in its namespace)."""
        return wait_for(lambda: [c.pid for c in psutil.Process(self.proc.pid).children()],
                        what="the worker inside its namespace")[0]

    def results(self, timeout: float = 120) -> list[dict]:
        if self.hold:
            Path(self.hold).touch()
        out, err = self.proc.communicate(timeout=timeout)
        assert self.proc.returncode == 0, f"worker exit {self.proc.returncode}:\n{err}"
        return [json.loads(line) for line in out.splitlines()]

    def reap(self) -> None:
        if self.hold:
            Path(self.hold).touch()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate()


@pytest.fixture
def workers(tmp_path: Path, namespace: str) -> Iterator[Callable[..., Worker]]:
    started: list[Worker] = []

    def start(**options: object) -> Worker:
        started.append(Worker(tmp_path, namespace, **options))  # type: ignore[arg-type]
        return started[-1]

    yield start
    for worker in started:
        worker.reap()


@pytest.fixture
def tmpfs() -> Iterator[Callable[..., str]]:
    """Mount tmpfs file systems (an emptyDir with medium: Memory) for the test; unmounted at
    the end."""
    mounted: list[str] = []

    def mount(options: str = "size=64m") -> str:
        path = tempfile.mkdtemp(prefix="aitest-segments-")
        problem = _runs(["mount", "-t", "tmpfs", "-o", options, "tmpfs", path])
        if problem:
            os.rmdir(path)
            pytest.skip(f"cannot mount a tmpfs here: {problem}")
        mounted.append(path)
        return path

    yield mount
    for path in mounted:
        subprocess.run(["umount", "-l", path], check=False)
        with contextlib.suppress(OSError):
            os.rmdir(path)


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A directory other users can reach (the test's tmp_path is private to root), for the
    config and state of a daemon that runs as another user."""
    path = Path(tempfile.mkdtemp(prefix="aitest-public-"))
    path.chmod(0o755)
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=False)


def daemon_files(public_dir: Path, uid: int, **settings: object) -> tuple[Path, Path]:
    """A state directory owned by ``uid`` and a config everyone may read, in ``public_dir``."""
    state = public_dir / "state"
    state.mkdir()
    os.chown(state, uid, uid)
    config = write_config(public_dir / "daemon.yaml", state_dir=str(state), **settings)
    config.chmod(0o644)
    return config, state


def tally(results: list[dict]) -> tuple[collections.Counter, int]:
    """Calls accepted per model, and calls refused, over every worker process's report."""
    accepted: collections.Counter = collections.Counter()
    refused = 0
    for report in results:
        for key, n in report["calls"].items():
            model, returned = key.rsplit("|", 1)
            if returned == "True":
                accepted[model] += n
            else:
                refused += n
    return accepted, refused


def per_model(state: dict) -> dict[str, int]:
    return {m["model"]: m["windows"]["since_start"]["count"] for m in state["models"]
            if m["windows"]["since_start"]["count"]}


def reconcile(daemon: DaemonProcess, results: list[dict], timeout: float = 60) -> dict:
    """Wait until every lane is reclaimed and every call counted; check each outcome and
    model against what emit returned. Returns that state."""
    accepted, refused = tally(results)
    calls = sum(accepted.values()) + refused
    state = daemon.state_after(lambda s: s["lanes"] == [] and events_total(s) == calls,
                               timeout, what=f"all {calls} calls counted, lanes reclaimed",
                               fresh=False)
    events = state["events"]
    assert events["received"] == sum(accepted.values())
    assert events["dropped"] + events["no_lane"] == refused
    assert events["invalid"] == events["overwritten"] == events["lost_on_restart"] == 0
    assert per_model(state) == {model: n for model, n in accepted.items() if n}
    return state


def reconcile_killed(state: dict, worker: Worker) -> None:
    """After a kill: every call that returned is counted, and each thread's call in flight
    may be too (published, never returned); per model likewise."""
    calls, threads = sum(worker.progress()), worker.slots
    assert calls <= events_total(state) <= calls + threads
    counted = per_model(state)
    for model, accepted in worker.accepted().items():
        assert accepted <= counted.get(model, 0) <= accepted + threads, (model, counted)
    assert state["events"]["received"] == sum(counted.values())


def lanes_in(directory: str, namespace: str) -> list[str]:
    return [n for n in os.listdir(directory) if n.startswith(f"{namespace}.lane.")]


# -- PID namespaces ---------------------------------------------------------------------------

def test_worker_in_its_own_pid_namespace(namespace, workers, daemon_factory):
    """A worker that is pid 1 of its own PID namespace (a container) keeps its lane while it
    lives: the daemon on the host sees it alive by its lock, names its host pid, and counts
    every event under its model."""
    daemon = daemon_factory()
    worker = workers(wrap=PID_NAMESPACE, threads=2, calls=0)
    host_pid = worker.inner_pid()
    first = daemon.state_after(lambda s: len(s["lanes"]) == 2, what="both lanes attached")
    # Many liveness checks later (one per 0.1 s scan), the same lanes are still live.
    done = sum(worker.progress())
    wait_for(lambda: sum(worker.progress()) > done + 6000, what="the worker going on")
    state = daemon.state_after(lambda s: len(s["lanes"]) == 2, what="both lanes still there")
    assert [lane["name"] for lane in state["lanes"]] == [lane["name"] for lane in first["lanes"]]
    for lane in state["lanes"]:
        assert lane["state"] == "live"
        assert lane["worker_pid"] == 1 and lane["same_pid_namespace"] is False
        assert lane["pid"] == host_pid, lane  # from /proc/locks: the host's pid for it
        assert f"pid {host_pid} (pid 1 in PID namespace" in lane["process"]
    model = next(m for m in state["models"] if m["model"] == MODELS[0])
    assert [p["pid"] for p in model["processes"]] == [host_pid]  # its RSS is attributed
    worker.proc.kill()  # --kill-child: the worker goes with its unshare
    worker.proc.communicate()
    calls = sum(worker.progress())
    state = daemon.state_after(lambda s: s["lanes"] == [] and events_total(s) >= calls,
                               what="lanes reclaimed", fresh=False)
    reconcile_killed(state, worker)


def test_two_workers_both_pid_1(namespace, workers, daemon_factory):
    """Two containers whose workers are both pid 1 never share, collide on or take over each
    other's lanes: four threads, four lanes, each worker's calls counted exactly."""
    daemon = daemon_factory()
    first = workers(wrap=PID_NAMESPACE, threads=2, calls=8000, hold=True)
    second = workers(wrap=PID_NAMESPACE, threads=2, calls=8000, hold=True)
    wait_for(lambda: min(first.progress() + second.progress()) == 8000, what="all four threads")
    state = daemon.state_after(lambda s: len(s["lanes"]) == 4, what="four lanes")
    assert {lane["worker_pid"] for lane in state["lanes"]} == {1}
    assert len({lane["pid"] for lane in state["lanes"]}) == 2  # two host pids
    results = first.results() + second.results()
    assert [r["pid"] for r in results] == [1, 1]
    reconcile(daemon, results)
    assert "removed segment" not in daemon.log() and "ignoring segment" not in daemon.log()


def test_daemon_in_its_own_pid_namespace(namespace, workers, daemon_factory):
    """A sidecar daemon in its own PID namespace (no shareProcessNamespace) attaches, drains
    and reclaims the lanes of workers it cannot see, exactly as on a host; status says their
    memory cannot be attributed instead of showing zero."""
    daemon = daemon_factory(wrap=PID_NAMESPACE, snapshot_child="always")
    worker = workers(threads=3, calls=6000, hold=True)
    wait_for(lambda: min(worker.progress()) == 6000, what="the worker's calls")
    state = daemon.state_after(lambda s: len(s["lanes"]) == 3 and s["events"]["received"]
                               == 18000, what="three lanes attached and drained")
    for lane in state["lanes"]:
        assert lane["pid"] is None and lane["worker_pid"] == worker.proc.pid
        assert "(not visible here)" in lane["process"]
    model = next(m for m in state["models"] if m["model"] == MODELS[0])
    assert model["processes"] == [] and model["processes_not_visible"] == 1
    assert model["rss_bytes"] is None
    state = reconcile(daemon, worker.results())
    assert state["daemon"]["pid"] == 1
    # Its snapshots' statistics come from children it forks and reaps as pid 1.
    assert state["drain"]["stats_in_child"] >= 1 and state["drain"]["stats_child_failures"] == 0
    assert "removed segment" not in daemon.log()
    assert daemon.stop() == 0


def test_worker_killed_inside_its_namespace(namespace, workers, daemon_factory):
    """A worker SIGKILLed inside its PID namespace: counted up to the call in flight, its
    lanes gone from the directory within seconds."""
    daemon = daemon_factory()
    worker = workers(wrap=PID_NAMESPACE, threads=2, calls=0)
    inner = worker.inner_pid()
    wait_for(lambda: min(worker.progress()) > 3000, what="the worker under way")
    os.kill(inner, signal.SIGKILL)
    assert worker.proc.wait(timeout=30) != 0
    worker.proc.communicate()
    calls = sum(worker.progress())
    killed = time.monotonic()
    state = daemon.state_after(lambda s: s["lanes"] == [] and events_total(s) >= calls,
                               timeout=30, what="lanes reclaimed", fresh=False)
    wait_for(lambda: not lanes_in(SHM_DIR, namespace), timeout=30, what="lanes unlinked")
    assert time.monotonic() - killed < 10
    reconcile_killed(state, worker)


def test_whole_namespace_killed(namespace, workers, daemon_factory):
    """Killing a namespace's pid 1 takes every process in it (a container stopped with
    SIGKILL): all their lanes are found dead, drained and reclaimed, each counted up to its
    call in flight."""
    daemon = daemon_factory()
    worker = workers(wrap=PID_NAMESPACE, procs=3, threads=2, calls=0)
    inner = worker.inner_pid()
    wait_for(lambda: min(worker.progress()) > 1500, what="six threads under way")
    daemon.state_after(lambda s: len(s["lanes"]) == 6, what="six lanes")
    os.kill(inner, signal.SIGKILL)
    worker.proc.wait(timeout=30)
    worker.proc.communicate()
    calls = sum(worker.progress())
    state = daemon.state_after(lambda s: s["lanes"] == [] and events_total(s) >= calls,
                               timeout=30, what="lanes reclaimed", fresh=False)
    wait_for(lambda: not lanes_in(SHM_DIR, namespace), timeout=30, what="lanes unlinked")
    reconcile_killed(state, worker)
    assert state["lanes_summary"]["reclaimed"] == 6


# -- segment directories ------------------------------------------------------------------------

def test_segment_dir_shared_while_dev_shm_is_private(namespace, workers, daemon_factory, tmpfs):
    """Lanes in a configured directory (an emptyDir mounted in both containers) while the
    worker's /dev/shm is a private tmpfs of its own: nothing of ours lands in either /dev/shm,
    and the count is exact."""
    segments = tmpfs("size=64m")
    daemon = daemon_factory(segment_dir=segments)
    private = [*PID_NAMESPACE[:-1], "--kill-child", "sh", "-c",
               'mount -t tmpfs tmpfs /dev/shm && exec "$0" "$@"']
    worker = workers(wrap=private, threads=2, calls=6000, hold=True,
                     env={"AI_ANALYTICS_SEGMENT_DIR": segments})
    wait_for(lambda: min(worker.progress()) == 6000, what="the worker's calls")
    assert len(lanes_in(segments, namespace)) == 2
    assert not lanes_in(SHM_DIR, namespace)
    reconcile(daemon, worker.results())
    wait_for(lambda: not lanes_in(segments, namespace), what="the lanes removed")
    assert not [n for n in os.listdir(SHM_DIR) if n.startswith(f"{namespace}.")]
    assert sorted(os.listdir(segments)) == sorted([lock_name(namespace), control_name(namespace)])


def test_unusable_segment_dir_is_one_line_and_exit_2(make_config, tmp_path, namespace):
    """The daemon refuses a segment_dir that does not exist or is not a directory, in one
    line naming it, with exit 2 (a configuration error)."""
    for bad in (tmp_path / "missing", tmp_path / "a-file"):
        if bad.name == "a-file":
            bad.write_text("")
        result = run_daemon(make_config(segment_dir=str(bad)))
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and f"segment_dir: {bad}" in lines[0], result.stderr


def test_worker_with_an_unusable_segment_dir_drops_and_counts(tmp_path, namespace):
    """A worker whose directory does not exist drops its events, counts them for the whole
    process (every thread), and says so once on stderr."""
    code = textwrap.dedent("""
        import threading
        from ai_analytics import client
        def work():
            assert all(client.emit("infer", 1.0) is False for _ in range(300))
        threads = [threading.Thread(target=work) for _ in range(3)]
        for t in threads: t.start()
        for t in threads: t.join()
        print(client.dropped_without_lane())
    """)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
        env={**os.environ, "AI_ANALYTICS_NAMESPACE": namespace,
             "AI_ANALYTICS_SEGMENT_DIR": str(tmp_path / "missing")})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "900"
    assert result.stderr.count("cannot create a lane") == 1
    assert result.stderr.count("cannot create even a") == 1


def test_drops_without_a_lane_reach_the_daemon_once_a_lane_can_be_made(tmp_path, namespace):
    """Threads that found no usable directory (so not even a no-ring lane) hand their count
    over when they end, on a no-ring lane made then, retired at once, if the directory is
    usable by then; once each, and still counted in the process."""
    directory = tmp_path / "late"
    code = textwrap.dedent(f"""
        import os, threading
        from ai_analytics import client
        made = threading.Event()
        def work():
            assert all(client.emit("infer", 1.0) is False for _ in range(300))
            made.wait()
        threads = [threading.Thread(target=work) for _ in range(3)]
        for t in threads: t.start()
        while client.dropped_without_lane() < 900: pass
        os.mkdir({str(directory)!r})
        made.set()
        for t in threads: t.join()
        print(client.dropped_without_lane())
    """)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
        env={**os.environ, "AI_ANALYTICS_NAMESPACE": namespace,
             "AI_ANALYTICS_SEGMENT_DIR": str(directory)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "900"
    stubs = sorted(directory.iterdir())
    assert len(stubs) == 3
    for stub in stubs:
        q = memoryview(stub.read_bytes()).cast("Q")
        assert q[L.OFF_FLAGS // 8] >> 32 & L.FLAG_NO_RING  # flags: the u32 at byte 36
        assert (q[L.Q_DROPPED], q[L.Q_RETIRED]) == (300, 1)


def test_segment_dir_too_small_for_every_lane(namespace, workers, daemon_factory, tmpfs):
    """A 2 MiB directory and 8 threads: the threads that find no room get a no-ring lane, so
    their refused events reach the daemon as no_lane; status, /metrics and a finding name
    the directory, its size and what the lanes need; the daemon warned at start."""
    segments = tmpfs("size=2m")
    port = free_port()
    daemon = daemon_factory(segment_dir=segments, http_port=port)
    assert "holds 2.0 MiB: room for 3 lanes of 548 KiB" in daemon.log()
    worker = workers(threads=8, calls=20000, pause=0.0005,
                     env={"AI_ANALYTICS_SEGMENT_DIR": segments})
    results = worker.results()
    state = reconcile(daemon, results)
    no_lane = state["events"]["no_lane"]
    assert no_lane >= 5 * 20000  # five threads without a lane refuse all their calls
    assert results[0]["without_lane"] == no_lane  # the process's count, every thread's
    finding = next(f for f in state["findings"] if f["kind"] == "segment_dir_full")
    assert finding["severity"] == "critical" and finding["subject"]["name"] == segments
    assert finding["evidence"]["size_bytes"] == 2 * 1024 * 1024
    advice = next(r for r in state["recommendations"] if r["finding"] == finding["id"])
    assert "sizeLimit" in advice["message"] and "MiB" in advice["message"]
    status, _, body = fetch(port, path="/metrics")
    assert status == 200
    assert f'ai_analytics_events_total{{outcome="no_lane"}} {float(no_lane)}' in body.decode()
    text = invoke("status", "--config", str(daemon.config_path)).output
    assert f"no lane {no_lane:,}" in text and "segment_dir_full" in text


# -- users ------------------------------------------------------------------------------------

def as_user(uid: int, *groups: int) -> list[str]:
    """Run as ``uid`` in ``groups`` (what runAsUser / fsGroup give a container). The ambient
    CAP_DAC_READ_SEARCH only lets it read the interpreter under a private home directory: it
    grants no write access, so every write these tests rely on (creating a lane, the daemon
    opening one read-write, removing one) is checked against the shared group."""
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}",
            f"--groups={','.join(map(str, groups))}" if groups else "--clear-groups",
            "--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"]


_NO_SETPRIV = _runs([*as_user(OTHER_UID), "true"])


@pytest.mark.skipif(_NO_SETPRIV is not None, reason=f"cannot change uid here: {_NO_SETPRIV}")
def test_workers_and_daemon_under_different_uids(namespace, workers, daemon_factory, tmpfs,
                                                 public_dir):
    """Worker and daemon under different uids sharing one group, through a setgid directory
    (what a pod's fsGroup makes of an emptyDir): the worker follows the daemon's control
    segment because $AI_ANALYTICS_DAEMON_UID names its owner; the daemon drains and removes
    the worker's lanes; status splits the events by uid."""
    segments = tmpfs(f"size=64m,mode=2770,gid={SHARED_GID}")
    config, state = daemon_files(
        public_dir, DAEMON_UID, namespace=namespace, segment_dir=segments,
        trusted_uids=[WORKER_UID], max_queue_size=1024, batch_timeout_seconds=0.05,
        snapshot_interval_seconds=0.2, discovery_interval_seconds=0.1, http_port=free_port(),
        snapshot_child="always")
    daemon = daemon_factory(config, state_dir=state, segment_dir=segments,
                            wrap=as_user(DAEMON_UID, SHARED_GID))
    worker = workers(wrap=as_user(WORKER_UID, SHARED_GID), threads=2, calls=6000,
                     hold=True, env={"AI_ANALYTICS_SEGMENT_DIR": segments,
                                     "AI_ANALYTICS_DAEMON_UID": str(DAEMON_UID)})
    wait_for(lambda: min(worker.progress()) == 6000, what="the worker's calls")
    lanes = lanes_in(segments, namespace)
    infos = [os.stat(os.path.join(segments, name)) for name in lanes]
    assert {(i.st_uid, i.st_gid, i.st_mode & 0o777) for i in infos} == {
        (WORKER_UID, SHARED_GID, 0o660)}
    assert {i.st_size for i in infos} == {L.lane_size(1024, L.DEFAULT_NAMES_CAPACITY)}
    final = reconcile(daemon, worker.results())
    assert set(final["events_by_uid"]) == {str(WORKER_UID)}
    assert final["drain"]["stats_in_child"] >= 1 and final["drain"]["stats_child_failures"] == 0
    # The daemon (another user, in the group) may remove them; it does once the state file
    # that counts them is written.
    wait_for(lambda: not lanes_in(segments, namespace), what="the worker's lanes removed")
    assert daemon.stop() == 0


@pytest.mark.skipif(_NO_SETPRIV is not None, reason=f"cannot change uid here: {_NO_SETPRIV}")
def test_worker_refuses_a_control_segment_of_an_untrusted_user(namespace, tmpfs):
    """Whoever writes the control segment chooses every new lane's size and drop policy: a
    worker follows one owned by root, its own uid or $AI_ANALYTICS_DAEMON_UID only, and one
    nobody else can write; otherwise it uses the defaults and says why once."""
    segments = tmpfs("size=8m,mode=1777")
    path = os.path.join(segments, control_name(namespace))
    with open(path, "wb") as f:
        f.write(L.CONTROL.pack(L.CONTROL_MAGIC, L.VERSION, 1024, L.FLAG_OVERWRITE,
                               L.DEFAULT_NAMES_CAPACITY, 1))
    os.chmod(path, 0o644)
    os.chown(path, OTHER_UID, OTHER_UID)
    assert read_geometry(namespace, segments).capacity == L.DEFAULT_CAPACITY
    os.environ["AI_ANALYTICS_DAEMON_UID"] = str(OTHER_UID)
    try:
        geometry = read_geometry(namespace, segments)
        assert (geometry.capacity, geometry.overwrite) == (1024, True)
        os.chmod(path, 0o664)  # its group could change it
        assert read_geometry(namespace, segments).capacity == L.DEFAULT_CAPACITY
    finally:
        del os.environ["AI_ANALYTICS_DAEMON_UID"]
    code = ("from ai_analytics import client; client.emit('infer', 1.0); "
            "print(len(client._emit._local.lane.buf))")
    os.chmod(path, 0o644)
    result = subprocess.run([*as_user(WORKER_UID), sys.executable, "-c", code],
                            capture_output=True, text=True, timeout=60,
                            env={**os.environ, "AI_ANALYTICS_NAMESPACE": namespace,
                                 "AI_ANALYTICS_SEGMENT_DIR": segments})
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) == L.lane_size(L.DEFAULT_CAPACITY, L.DEFAULT_NAMES_CAPACITY)
    assert f"owned by uid {OTHER_UID}, which is not root, this process's uid" in result.stderr


def test_a_squatted_namespace_lock_is_removed(namespace, daemon_factory, tmpfs):
    """Someone else's <namespace>.daemon.lock, even locked, does not keep the daemon out: it
    is removed (logged, naming its owner) and the daemon takes a lock file of its own."""
    segments = tmpfs("size=8m,mode=1777")
    lock = lock_path(namespace, segments)
    squatter = subprocess.Popen(  # holds an exclusive flock on it, as another daemon would
        ["flock", "-x", lock, "sleep", "300"])
    try:
        wait_for(lambda: os.path.exists(lock), what="the squatter's lock")
        os.chown(lock, OTHER_UID, OTHER_UID)
        # (It reports "started" at once: the squatter's lock looks like a daemon's.)
        daemon = daemon_factory(segment_dir=segments)
        wait_for(lambda: f"namespace lock owned by uid {OTHER_UID}" in daemon.log(),
                 what="the squatter's lock removed")
        daemon.state_after(lambda s: s["daemon"]["running"], what="the daemon draining")
        assert os.stat(lock).st_uid == 0
        assert daemon.stop() == 0
    finally:
        squatter.kill()
        squatter.wait()


@pytest.mark.skipif(_NO_SETPRIV is not None, reason=f"cannot change uid here: {_NO_SETPRIV}")
def test_a_squatted_lock_the_daemon_cannot_remove_is_refused_clearly(namespace, tmpfs,
                                                                      public_dir):
    """In a sticky directory a daemon that is not root may not remove another user's lock
    file: it exits 1 with one line naming the file, its owner and the remedy."""
    segments = tmpfs("size=8m,mode=1777")
    lock = lock_path(namespace, segments)
    with open(lock, "w"):
        pass
    os.chown(lock, OTHER_UID, OTHER_UID)
    config, _state = daemon_files(public_dir, DAEMON_UID, namespace=namespace,
                                  segment_dir=segments, http_enabled=False)
    result = run_daemon(config, wrap=as_user(DAEMON_UID))
    assert result.returncode == 1
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("ai-analyticsd: cannot take namespace"), result.stderr
    assert f"owned by uid {OTHER_UID}" in line and "remove it" in line


# -- upgrade ------------------------------------------------------------------------------------

def test_a_lane_of_an_earlier_release_is_refused_once_and_counted(namespace, daemon_factory):
    """A lane in layout version 1 (a worker still running the earlier release) is never
    read: refused once with a log line that says to restart the workers, counted in status
    and a finding; removed once the process that wrote it is gone."""
    old_worker = subprocess.Popen(["sleep", "300"])
    try:
        name = f"{namespace}.lane.{old_worker.pid}.0"  # the earlier release's lane name
        size = L.lane_size(64, 8)
        with open(os.path.join(SHM_DIR, name), "wb") as f:
            f.truncate(size)
        with open(os.path.join(SHM_DIR, name), "r+b") as f, \
                mmap.mmap(f.fileno(), size) as mm:
            L.HEADER_FIXED.pack_into(mm, L.OFF_VERSION, 1, L.HEADER_SIZE, L.RECORD_SIZE, 64, 8,
                                     L.NAME_ENTRY_SIZE, old_worker.pid, 0,
                                     start_ticks(old_worker.pid), time.time_ns(), 1)
            mm[L.OFF_HEAD : L.OFF_HEAD + 8] = (40).to_bytes(8, "little")
            mm[: 8] = L.LANE_MAGIC.to_bytes(8, "little")
        daemon = daemon_factory()
        state = daemon.state_after(lambda s: s["lanes_summary"]["outdated"] == 1,
                                   what="the outdated lane counted")
        assert state["events"]["received"] == 0 and state["lanes"] == []
        finding = next(f for f in state["findings"] if f["kind"] == "outdated_workers")
        assert "restart those workers" in finding["message"]
        wait_for(lambda: daemon.log().count("restart the workers") == 1, what="the log line")
        old_worker.kill()
        old_worker.wait()
        daemon.state_after(lambda s: s["lanes_summary"]["outdated"] == 0,
                           what="the outdated lane removed")
        assert not os.path.exists(os.path.join(SHM_DIR, name))
        assert daemon.log().count("restart the workers") == 1
    finally:
        old_worker.kill()
        old_worker.wait()
