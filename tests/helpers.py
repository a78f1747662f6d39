"""Shared test helpers, each in one copy: namespaces and configs, a real daemon process and
producer processes, HTTP requests, the CLI in this process, hand-made records, lanes and
segments; and, by topic, what a topic's in-process tests (tests/unit) and its end-to-end
tests (tests/e2e) both use. The fixtures built on them are in conftest.py."""

from __future__ import annotations

import contextlib
import http.client
import importlib.metadata
import itertools
import json
import math
import os
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import yaml

from ai_analytics.client import _layout as L
from ai_analytics.core.document import CountedDistribution, WindowStats

import documents

SHM_DIR = "/dev/shm"
# The repository and its tests/ folder (this file's), wherever a test file sits below it.
TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
SHIPPED_CONFIG = REPO / "config.yaml"


# -- namespaces, ports, config files, the installed scripts ----------------------------------------
def shm_names(namespace: str) -> list[str]:
    """The segments and files of ``namespace`` in /dev/shm."""
    return sorted(n for n in os.listdir(SHM_DIR) if n.startswith(f"{namespace}."))


def lane_names(namespace: str) -> list[str]:
    return [n for n in shm_names(namespace) if n.startswith(f"{namespace}.lane.")]


def remove_namespace(namespace: str) -> None:
    for name in shm_names(namespace):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(SHM_DIR, name))


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def write_config(path: Path, **settings: object) -> Path:
    """Write a config.yaml from keyword settings (values rendered as YAML via json)."""
    path.write_text("".join(f"{key}: {json.dumps(value)}\n" for key, value in settings.items()))
    return path


def read_config(path: Path) -> dict[str, object]:
    """The settings a config file holds (what ``write_config`` wrote)."""
    return yaml.safe_load(path.read_text()) or {}


def script(name: str) -> str:
    """An installed console script (ai-analytics, ai-analyticsd, ruff): next to the running
    interpreter."""
    path = Path(sys.executable).parent / name
    assert path.exists(), f"{name} is not installed next to {sys.executable}"
    return str(path)


def interruptible() -> None:
    """``preexec_fn`` for a child that the test stops with SIGINT, as Ctrl-C would. A test run
    started in the background (a shell's ``&``, ``nohup``) ignores SIGINT, that disposition
    survives exec, and a Python started with SIGINT ignored never raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_daemon(config: Path, *, env: Mapping[str, str] | None = None,
               wrap: Sequence[str] = (), timeout: float = 60.0,
               ) -> subprocess.CompletedProcess[str]:
    """Run ``python -m ai_analytics.daemon --config CONFIG`` to its end (a start that must be
    refused); ``env``: variables added to its environment, ``wrap``: a command that runs it."""
    return subprocess.run(
        [*wrap, sys.executable, "-m", "ai_analytics.daemon", "--config", str(config)],
        env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=timeout)


# -- waiting, a real daemon, producer processes ----------------------------------------------------
def wait_for(predicate, timeout: float = 10.0, interval: float = 0.02, what: str = "condition"):
    """Poll ``predicate`` until it returns a truthy value; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class DaemonProcess:
    """A real ``ai-analyticsd`` in a subprocess, always reaped. ``env``: variables added to
    its environment (e.g. systemd's NOTIFY_SOCKET); ``segment_dir``: the config's; ``wrap``:
    a command that runs it (``unshare ... --fork`` for a PID namespace of its own, whose
    forked child is the daemon: signals go to that child, which unshare does not forward)."""

    def __init__(self, config_path: Path, state_dir: Path, namespace: str, *,
                 env: dict[str, str] | None = None, segment_dir: str = SHM_DIR,
                 wrap: list[str] | None = None) -> None:
        self.config_path = config_path
        self.segment_dir = segment_dir
        self.state_dir = state_dir
        self.namespace = namespace
        self.env = dict(env or {})
        self.wrap = list(wrap or [])
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = config_path.with_suffix(".log")

    def start(self) -> DaemonProcess:
        env = {**os.environ, "AI_ANALYTICS_NAMESPACE": self.namespace, **self.env}
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in reap()
        self.proc = subprocess.Popen(
            [*self.wrap, sys.executable, "-m", "ai_analytics.daemon", "--config",
             str(self.config_path)],
            env=env, stderr=self._log, stdout=self._log,
        )
        # Ready for producers once the lanes' geometry is published: a lane made before then
        # gets the defaults, not this config's max_queue_size.
        wait_for(lambda: self._ready() or self.proc.poll() is not None, what="daemon start")
        assert self.proc.poll() is None, f"daemon exited at start:\n{self.log()}"
        return self

    def _ready(self) -> bool:
        from ai_analytics.client._segments import control_name

        published = os.path.exists(os.path.join(self.segment_dir, control_name(self.namespace)))
        return self._lock_held() and (published or b"cannot publish the control" in
                                      self.log_path.read_bytes())

    @property
    def pid(self) -> int:
        """The daemon's pid here: the wrapper's forked child where ``wrap`` forks."""
        assert self.proc is not None
        if "--fork" not in self.wrap:
            return self.proc.pid
        import psutil

        return wait_for(lambda: [c.pid for c in psutil.Process(self.proc.pid).children()],
                        what="the wrapped daemon")[0]

    def _lock_held(self) -> bool:
        from ai_analytics.core.namespace_lock import daemon_running

        return daemon_running(self.namespace, self.segment_dir)

    def state(self) -> dict:
        return json.loads((self.state_dir / "state.json").read_text())

    def state_after(self, predicate, timeout: float = 10.0, what: str = "state",
                    fresh: bool = True) -> dict:
        """Wait for a state file written after now that satisfies ``predicate``. ``fresh``
        False: any state file that satisfies it (for a daemon whose wall clock is not ours)."""
        since = time.time() if fresh else -math.inf

        def fresh_enough() -> dict | None:
            try:
                doc = self.state()
            except (FileNotFoundError, ValueError):
                return None
            return doc if doc["written_unix"] >= since and predicate(doc) else None

        return wait_for(fresh_enough, timeout, what=what)

    @contextlib.contextmanager
    def stopped(self) -> Iterator[None]:
        """SIGSTOP the daemon for the block (a reader that does not read); SIGCONT after it,
        whatever happens in it."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            self.proc.send_signal(signal.SIGCONT)

    def stop(self, timeout: float = 15.0) -> int:
        assert self.proc is not None
        os.kill(self.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self.reap()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()
        self.reap()

    def reap(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if getattr(self, "_log", None) is not None:
            self._log.close()
            self._log = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def run_python(code: str, namespace: str, timeout: float = 60.0, check: bool = True,
               args: Sequence[str] = (), warnings: str = "error",
               **popen: object) -> subprocess.CompletedProcess[str]:
    """Run ``code`` (``args``: its sys.argv[1:]) in a fresh interpreter with the test's
    namespace, warnings raised as errors unless ``warnings`` says otherwise; return its
    result."""
    env = {**os.environ, "AI_ANALYTICS_NAMESPACE": namespace, "PYTHONWARNINGS": warnings}
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args], env=env, capture_output=True,
        text=True, timeout=timeout, **popen,
    )
    if check:
        assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def start_python(code: str, namespace: str, args: Sequence[str] = (),
                 **popen: object) -> subprocess.Popen[str]:
    """Start ``code`` (``args``: its sys.argv[1:]) in a fresh interpreter with the test's
    namespace (caller must wait)."""
    env = {**os.environ, "AI_ANALYTICS_NAMESPACE": namespace, "PYTHONWARNINGS": "error"}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args], env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, **popen,
    )


# -- what a Daemon in this process has counted ---------------------------------------------------
Series = dict[tuple[str, str], Any]


def drained(make_daemon: Callable[..., Any]) -> Callable[[], Series]:
    """A Daemon in this process (``make_daemon``: the fixture), as a function that scans and
    drains the lanes and returns the since-start stats per (operation, model)."""
    daemon = make_daemon()

    def series() -> Series:
        daemon.lanes.scan()
        daemon.drain()
        document = daemon.get_performance_snapshot()
        return {(row["operation"], row["model"]): row["windows"]["since_start"]
                for row in document["operations"]}

    return series


def counts(series: Series) -> dict[tuple[str, str], tuple[int, int]]:
    """(count, errors) of each (operation, model) of ``drained``'s answer."""
    return {key: (stats["count"], stats["errors"]) for key, stats in series.items()}


# -- HTTP ------------------------------------------------------------------------------------------
# What the ``serve`` fixture's StatusServers answer on /status unless told otherwise.
SERVED_DOCUMENT = {"schema_version": 1, "namespace": "t", "events": {"received": 3, "dropped": 0}}


def always_healthy() -> tuple[bool, str]:
    """A StatusServer's health callback with nothing wrong."""
    return True, ""


def fetch(target: object, method: str = "GET", path: str = "/status",
          body: bytes | None = None, headers: dict[str, str] | None = None,
          timeout: float = 10.0) -> tuple[int, http.client.HTTPMessage, bytes]:
    """One request with http.client: (status, headers, body), error statuses included.
    ``target``: a port on 127.0.0.1, a (host, port) pair, or a server with an ``address``."""
    address = getattr(target, "address", target)
    host, port = ("127.0.0.1", address) if isinstance(address, int) else address
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


def raw_exchange(target: object, data: bytes, timeout: float = 10.0) -> bytes:
    """Send ``data`` on a plain socket and read until the server closes (``target`` as for
    ``fetch``)."""
    address = getattr(target, "address", target)
    if isinstance(address, int):
        address = ("127.0.0.1", address)
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def http_status(port: int) -> dict | None:
    """The daemon's /status document (served from memory), None while it does not answer."""
    try:
        status, _, body = fetch(port)
        return json.loads(body) if status == 200 else None
    except (OSError, ValueError):
        return None


def status_where(port: int, predicate, what: str, timeout: float = 15.0) -> dict:
    """Wait for a /status document that satisfies ``predicate``; return it."""
    return wait_for(lambda: (doc := http_status(port)) is not None and predicate(doc) and doc,
                    timeout, interval=0.05, what=what)


@contextlib.contextmanager
def taken_port() -> Iterator[int]:
    """A loopback port that another socket listens on for the block."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


# -- what producers emitted ------------------------------------------------------------------------
def events_total(state: dict) -> int:
    """Sum of the outcome counters: every emit call made in the namespace."""
    return sum(state["events"].values())


# Emits about 4000 events/s until the file {stop!r} exists (at most two minutes); prints how
# many emit calls it made, whatever they returned.
EMITTER = """
import json, os, time
from ai_analytics import client
sent = 0
deadline = time.monotonic() + 120
while not os.path.exists({stop!r}) and time.monotonic() < deadline:
    for _ in range(20):
        client.emit("steady", 2.0, model="m")
        sent += 1
    time.sleep(0.005)
print(json.dumps(sent))
"""


class Emitters:
    """Producer processes that emit steadily until ``finish``; ``reap`` kills what is left."""

    def __init__(self, namespace: str, stop: Path, count: int = 2) -> None:
        self.stop = stop
        self.procs = [start_python(EMITTER.format(stop=str(stop)), namespace)
                      for _ in range(count)]

    def finish(self) -> int:
        """Stop them; the number of emit calls they made."""
        self.stop.touch()
        emitted = 0
        for proc in self.procs:
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0 and err == "", err
            emitted += json.loads(out)
        return emitted

    def reap(self) -> None:
        self.stop.touch()
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()


# -- import cost -----------------------------------------------------------------------------------
# What a producer must never load: the daemon's dependencies and the daemon package itself.
HEAVY_MODULES = ("numpy", "yaml", "psutil", "pynvml", "click", "ai_analytics.daemon")


def heavy_modules(modules: Sequence[str]) -> list[str]:
    """Those of ``modules`` (a child's sys.modules) that are HEAVY_MODULES or inside one."""
    return sorted(m for m in modules if m in HEAVY_MODULES
                  or m.startswith(tuple(h + "." for h in HEAVY_MODULES)))


# -- the operator CLI in this process --------------------------------------------------------------
def invoke(*args: str):
    """``ai-analytics ARGS`` through click's CliRunner; its result. Ending by sys.exit() is how
    the CLI ends: any other exception is a crash and fails the test."""
    from click.testing import CliRunner

    from ai_analytics.cli import main as cli

    result = CliRunner().invoke(cli.main, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result


VERSION = importlib.metadata.version("ai-analytics")  # the version under test, installed
EXIT_CONFIG = 2  # both programs' status for an unusable config file
EXIT_NOT_RUNNING = 3  # ai-analytics: no daemon holds the namespace, or nothing to show


class Outcome(NamedTuple):
    """What one front end made of a config file: its name, exit status and output."""

    prog: str
    exit_code: int
    stdout: str
    stderr: str


def assert_not_running_message(exit_code: int, stdout: str, stderr: str, state_dir: Path) -> None:
    """Exit 3 and one line on stderr that names ``state_dir`` and says no daemon runs."""
    assert "Traceback" not in stderr, stderr
    assert exit_code == EXIT_NOT_RUNNING, (exit_code, stdout, stderr)
    assert stdout == ""
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("ai-analytics: no state in ")
    assert str(state_dir) in lines[0]
    assert "not running" in lines[0]


def run_cli_runner(*args: str) -> Outcome:
    result = invoke(*args)
    return Outcome("ai-analytics", result.exit_code, result.stdout, result.stderr)


def assert_one_line_error(outcome: Outcome, *needles: str) -> str:
    """Exit 2, nothing on stdout, one line on stderr holding every needle; return the line."""
    assert "Traceback" not in outcome.stderr, outcome.stderr
    assert outcome.exit_code == EXIT_CONFIG, outcome
    assert outcome.stdout == ""
    lines = outcome.stderr.splitlines()
    assert len(lines) == 1, f"expected one line, got:\n{outcome.stderr}"
    line = lines[0]
    assert line.startswith(f"{outcome.prog}: "), line
    for needle in needles:
        assert needle in line, f"{needle!r} not in {line!r}"
    return line


# -- clocks, records and lanes built by hand -------------------------------------------------------
class FakeClock:
    """A monotonic clock the test moves by hand (``clock.now = ...``)."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_records(n: int, second: float = 1000.0, latency: np.ndarray | Sequence[float] | float
                 = 10.0, **fields: object) -> np.ndarray:
    """``n`` well-formed records as the drain hands them to the statistics engine, stamped
    ``second``; ``fields`` set other columns (one value, or one per record)."""
    from ai_analytics.daemon.ingest.records import RECORD_DTYPE

    records = np.zeros(n, RECORD_DTYPE)
    records["ts_ns"] = int(second * 1e9)
    records["latency_ms"] = latency
    records["success"] = 1
    records["quality"] = np.nan
    records["cache_hit"] = L.CACHE_ABSENT
    for name, value in fields.items():
        records[name] = value
    return records


def add_records(stats, records: np.ndarray, operation: str | list[str] = "op",
                model: str | list[str] = "m") -> None:
    """Add ``records`` to a Statistics under ``operation`` and ``model`` (one name for all,
    or one per record)."""
    def ids(names: str | list[str]) -> np.ndarray:
        if isinstance(names, str):
            names = [names] * len(records)
        return np.array([stats.registry.name_id(name) for name in names], np.int64)

    stats.add(records, ids(operation), ids(model))


def write_names(lane, entries: Sequence[bytes | str]) -> None:
    """Publish ``entries`` as a lane's name table (ids 1, 2, ...), as a writer that skips the
    client's checks would."""
    for index, name in enumerate(entries):
        raw = name.encode() if isinstance(name, str) else name
        offset = L.HEADER_SIZE + index * L.NAME_ENTRY_SIZE
        lane.buf[offset] = len(raw)
        lane.buf[offset + 1 : offset + 1 + len(raw)] = raw
    lane.q[L.Q_NAMES_COUNT] = len(entries)


class LaneView(NamedTuple):
    capacity: int
    overwrite: bool
    head: int
    dropped: int
    tail: int
    names: list[str]


def read_lane(name: str) -> LaneView:
    """The lane header fields and name table the tests look at, read straight from /dev/shm
    (offsets from the layout module, values parsed here)."""
    with open(os.path.join(SHM_DIR, name), "rb") as f:
        raw = f.read()
    (capacity,) = struct.unpack_from("<I", raw, L.OFF_CAPACITY)
    (flags,) = struct.unpack_from("<I", raw, L.OFF_FLAGS)
    words = struct.unpack_from("<32Q", raw)
    names = []
    for i in range(words[L.Q_NAMES_COUNT]):
        offset = L.HEADER_SIZE + i * L.NAME_ENTRY_SIZE
        names.append(raw[offset + 1 : offset + 1 + raw[offset]].decode())
    return LaneView(capacity, bool(flags & L.FLAG_OVERWRITE), words[L.Q_HEAD],
                    words[L.Q_DROPPED], words[L.Q_TAIL], names)


# -- lane segments built byte by byte, as a writer that is not our client may leave them -----------
U64_MAX = 2**64 - 1
# Serial numbers of hand-made lanes: names that no lane of this process's client takes.
segment_serials = itertools.count()

# The header's fields in the layout's order, and its counters with their offsets.
HEADER_IDENTITY = ("magic", "version", "header_size", "record_size", "capacity",
                   "names_capacity", "entry_size", "pid", "flags", "pid_start", "created_ns",
                   "thread_id")
HEADER_COUNTERS = {"head": L.OFF_HEAD, "dropped": L.OFF_DROPPED,
                   "names_count": L.OFF_NAMES_COUNT, "retired": L.OFF_RETIRED,
                   "tail": L.OFF_TAIL, "overwritten": L.OFF_OVERWRITTEN,
                   "invalid": L.OFF_INVALID}


def lane_segment(capacity: int, names: list[bytes], records: list[bytes],
                 names_capacity: int = 8, fields: Mapping[str, int] | None = None
                 ) -> bytearray:
    """A lane's bytes as an honest producer writes them (name entries with their length byte,
    records at slots 0..), then any header field or counter in ``fields`` overwritten."""
    identity = dict(zip(HEADER_IDENTITY, (L.LANE_MAGIC, L.VERSION, L.HEADER_SIZE,
                                          L.RECORD_SIZE, capacity, names_capacity,
                                          L.NAME_ENTRY_SIZE, os.getpid(), 0, 0, 1, 1),
                        strict=True))
    counters = {name: 0 for name in HEADER_COUNTERS} | {"head": len(records),
                                                        "names_count": len(names)}
    for name, value in (fields or {}).items():
        (identity if name in identity else counters)[name] = value
    raw = bytearray(L.lane_size(capacity, names_capacity))
    raw[L.OFF_MAGIC : L.OFF_MAGIC + 8] = identity.pop("magic").to_bytes(8, "little")
    L.HEADER_FIXED.pack_into(raw, L.OFF_VERSION, *identity.values())
    for name, offset in HEADER_COUNTERS.items():
        struct.pack_into("<Q", raw, offset, counters[name])
    for index, entry in enumerate(names):
        offset = L.HEADER_SIZE + index * L.NAME_ENTRY_SIZE
        raw[offset : offset + len(entry)] = entry
    base = L.records_offset(names_capacity)
    for index, record in enumerate(records):
        raw[base + index * L.RECORD_SIZE : base + (index + 1) * L.RECORD_SIZE] = record
    return raw


def entry(text: str) -> bytes:
    raw = text.encode("utf-8")
    return bytes([len(raw)]) + raw


def record(seq: int, latency_ms: float, op_id: int = 1, model_id: int = 0) -> bytes:
    """A well-formed basic record (kind 0)."""
    raw = bytearray(L.RECORD_SIZE)
    L.RECORD_BASIC.pack_into(raw, 0, seq, 1, latency_ms, float("nan"), op_id, model_id, 1,
                             L.CACHE_ABSENT)
    return bytes(raw)


def write_segment(namespace: str, raw: bytes) -> str:
    """Create ``raw`` as a lane segment named with our (live) pid; return its name."""
    name = f"{namespace}.lane.{os.getpid():016x}.{next(segment_serials)}"
    fd = os.open(os.path.join(SHM_DIR, name), os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, raw)
    finally:
        os.close(fd)
    return name


def honest_lane() -> bytearray:
    """A small lane with two names and twelve well-formed records."""
    return lane_segment(16, [entry("op"), entry("model")],
                        [record(seq, 2.0, op_id=1, model_id=2) for seq in range(12)])


# Found by reading, pinned here: two valid latencies near the float maximum summed to
# infinity, and the snapshot's mean became Infinity, which is not JSON.
HUGE_LATENCIES = bytes(lane_segment(16, [entry("op")], [record(0, 1.7e308), record(1, 1.7e308)]))
# Found by Hypothesis: a head 2**64 - 1 ahead of the tail, with an overwritten count set by
# the writer, made the daemon's stored count overflow 64 bits and the drain raise.
COUNTER_OVERFLOW = bytes(lane_segment(16, [entry("op")], [],
                                      fields={"head": U64_MAX, "overwritten": 17}))


# -- systemd ---------------------------------------------------------------------------------------
SYSTEMD_UNIT = REPO / "systemd" / "ai-analyticsd.service"


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


# -- the resource sampler --------------------------------------------------------------------------
# Sampling intervals: every 0.1 s, or long enough that a started sampler takes its first
# sample and then sits in its wait.
SAMPLER_SHORT = {
    "resource_interval_seconds": 0.1,
    "process_interval_seconds": 0.1,
    "gpu_process_interval_seconds": 0.1,
}
SAMPLER_IDLE = {
    "resource_interval_seconds": 3600.0,
    "process_interval_seconds": 3600.0,
    "gpu_process_interval_seconds": 3600.0,
}


# -- the operator's views as text ------------------------------------------------------------------
# The titles of the sections of ``ai-analytics status``, in their order.
STATUS_TITLES = ("OPERATIONS (", "MODELS (", "RESOURCES", "EVENT PATH", "CACHES", "FINDINGS",
                 "RECOMMENDATIONS")


def section(text: str, title: str) -> str:
    """The lines of the section whose title starts with ``title``, up to the next blank line."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    end = next((i for i in range(start, len(lines)) if not lines[i]), len(lines))
    return "\n".join(lines[start:end])


def row(text: str, first_cell: str) -> list[str]:
    """The cells (split on runs of spaces) of the table row that starts with ``first_cell``."""
    line = next(line for line in text.splitlines() if line.strip().startswith(first_cell + " "))
    return line.split()


# -- /metrics and the dashboard --------------------------------------------------------------------
DASHBOARD = REPO / "docs" / "grafana" / "ai-analytics.json"


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every panel target."""
    dashboard = json.loads(DASHBOARD.read_text())
    return [(panel["title"], target["expr"]) for panel in dashboard["panels"]
            for target in panel.get("targets", [])]


# -- the deploy/ files, as the deployment tests read them ------------------------------------------
DEPLOY = REPO / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
TOPOLOGIES = ("sidecar", "daemonset")
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = DEPLOY / "docker-compose.yml"

Manifest = dict[str, Any]


def yaml_documents(path: Path) -> list[Manifest]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def manifest_files() -> list[Path]:
    return sorted(p for p in KUBERNETES.glob("*/*.yaml") if p.name != "kustomization.yaml")


def is_custom_resource(doc: Manifest) -> bool:
    return doc["apiVersion"].startswith("monitoring.coreos.com/")


# -- history rows built by hand, for the history store and its readers -----------------------------
EVENTS = {"received": 10, "dropped": 1, "overwritten": 0, "invalid": 2, "lost_on_restart": 0,
          "pending": 3, "no_lane": 4}


def window_stats(base: float = 1.0) -> WindowStats:
    """Window stats from the factory with every leaf a different value from ``base``."""
    n = int(base)

    def timing(offset: float) -> CountedDistribution:
        return documents.counted(n + 1, values=documents.exact_distribution(
            [base + offset + i / 8 for i in range(8)]))

    return documents.window_stats(
        n * 10, n, throughput_per_s=base * 2.5,
        latency_ms=documents.exact_distribution([base * 100 + i for i in range(8)]),
        quality=documents.quality_stats(4, 0.75, low=0.5, p10=0.55), lookups=8, hits=6,
        ttft_ms=timing(20.0), queue_ms=timing(30.0),
        tokens=documents.token_stats(1000, 2000, 50.0, 100.0))


def series(operation: str, model: str, stats: WindowStats | None = None) -> dict[str, object]:
    return {"operation": operation, "model": model, "stats": stats or window_stats()}
