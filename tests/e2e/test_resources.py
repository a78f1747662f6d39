"""The resource sampler with real processes: a real child process's memory, and the real
pynvml made to fail the way it does on real nodes.

A small C library built from tests/fake_nvml/fake_nvml.c stands in for libnvidia-ml.so.1 in a
subprocess (found by pynvml's own CDLL("libnvidia-ml.so.1") through LD_LIBRARY_PATH) for
"driver not loaded", "no GPU", two working GPUs, and a driver call that never returns.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from ai_analytics.core.config import config_from_mapping
from ai_analytics.daemon.resources import GONE

from helpers import SAMPLER_IDLE, SAMPLER_SHORT, TESTS, wait_for

FAKE_NVML_SOURCE = TESTS / "fake_nvml" / "fake_nvml.c"


@pytest.fixture
def sleeper():
    """A real child process that sleeps, handed over once its interpreter is up (sampled
    between exec and the interpreter's start, its RSS is still under a megabyte); reaped at
    the end whatever happens."""
    with subprocess.Popen(
        [sys.executable, "-c", "import time; print('ready', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE,
    ) as child:
        assert child.stdout is not None
        assert child.stdout.readline() == b"ready\n"
        try:
            yield child
        finally:
            if child.poll() is None:
                child.kill()


# -- processes ---------------------------------------------------------------------------------
def test_worker_rss_is_reported_then_gone_once_the_worker_exits(
    sampler_factory, sleeper: subprocess.Popen[bytes]
) -> None:
    """A live worker pid reads its real RSS; once it dies it reads {"error": "gone"}: as a
    zombie (psutil would read RSS 0 there) and after it is reaped; nothing raises."""
    sampler = sampler_factory(config_from_mapping(SAMPLER_SHORT))
    sampler.set_worker_pids([sleeper.pid])
    sampler.start()
    rss = wait_for(lambda: sampler.rss_by_pid().get(sleeper.pid), timeout=3.0,
                   what="the child's RSS")
    assert 1 * 2**20 < rss < psutil.virtual_memory().total
    entry = sampler.snapshot()["processes"][0]
    assert entry == {"pid": sleeper.pid, "rss_bytes": entry["rss_bytes"]}

    sleeper.kill()
    wait_for(lambda: psutil.Process(sleeper.pid).status() == psutil.STATUS_ZOMBIE,
             what="the child to be a zombie")
    zombie_seen_after = time.monotonic()

    def gone_since(moment: float) -> bool:
        snap = sampler.snapshot()
        fresh = time.monotonic() - snap["processes_age_seconds"] > moment
        return fresh and snap["processes"] == [{"pid": sleeper.pid, "error": GONE}]

    wait_for(lambda: gone_since(zombie_seen_after), timeout=3.0, what="the zombie as gone")
    sleeper.wait()
    reaped_after = time.monotonic()
    wait_for(lambda: gone_since(reaped_after), timeout=3.0, what="the reaped child as gone")
    assert sampler.rss_by_pid() == {}


def test_set_worker_pids_replaces_the_watched_set(
    sampler_factory, sleeper: subprocess.Popen[bytes]
) -> None:
    """set_worker_pids swaps the whole set: a pid left out is no longer reported, a pid that
    never existed reads as gone, and the daemon's own pid reads its RSS."""
    sampler = sampler_factory(config_from_mapping(SAMPLER_IDLE))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    sampler.set_worker_pids([sleeper.pid, dead.pid, os.getpid()])
    sampler.sample_processes()
    entries = {e["pid"]: e for e in sampler.snapshot()["processes"]}
    assert set(entries) == {sleeper.pid, dead.pid, os.getpid()}
    assert entries[dead.pid] == {"pid": dead.pid, "error": GONE}
    assert entries[os.getpid()]["rss_bytes"] > 0

    sampler.set_worker_pids([os.getpid()])
    sampler.sample_processes()
    assert [e["pid"] for e in sampler.snapshot()["processes"]] == [os.getpid()]


# -- gpu: a fake libnvidia-ml in a subprocess ---------------------------------------------------
@pytest.fixture(scope="session")
def fake_nvml(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The fake libnvidia-ml.so.1, built by gcc: "full", and "no_v3" (an older driver)."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed: cannot build the fake libnvidia-ml.so.1")
    built = {}
    for variant, flags in (("full", []), ("no_v3", ["-DFAKE_NVML_NO_V3"])):
        folder = tmp_path_factory.mktemp(f"fake_nvml_{variant}")
        subprocess.run([gcc, "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror", *flags,
                        "-o", str(folder / "libnvidia-ml.so.1"), str(FAKE_NVML_SOURCE)],
                       check=True, capture_output=True, text=True)
        built[variant] = folder
    return built


# Runs in the subprocess: sample until a counter of the fake library reaches a value, then
# print the snapshot, the log records and the library's counters as JSON.
SAMPLER_SCRIPT = textwrap.dedent("""
    import ctypes, json, logging, os, sys, time
    from ai_analytics.core.config import config_from_mapping
    from ai_analytics.daemon.resources import ResourceSampler

    args = json.loads(sys.argv[1])
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append([record.levelname, record.getMessage()])

    logger = logging.getLogger("ai_analytics.daemon")
    logger.addHandler(Keep())
    logger.setLevel(logging.INFO)

    sampler = ResourceSampler(config_from_mapping(args["config"]), gpu_retry_seconds=0.0)
    sampler.set_worker_pids([os.getpid()])
    sampler.start()
    lib = ctypes.CDLL("libnvidia-ml.so.1")  # the library pynvml loads: the same handle

    def counter(name):
        return ctypes.c_int.in_dll(lib, "fake_nvml_" + name).value

    deadline = time.monotonic() + 20
    while counter(args["wait_for"]) < args["at_least"] and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(args.get("settle", 0.0))
    snapshot = sampler.snapshot()
    gpu_memory = sampler.gpu_memory_by_pid()
    started = time.monotonic()
    sampler.stop(0.5)
    stop_seconds = time.monotonic() - started
    names = ("init_calls", "shutdown_calls", "handle_calls", "utilization_calls",
             "process_list_calls")
    print(json.dumps({
        "snapshot": snapshot, "logs": records, "stop_seconds": stop_seconds,
        "gpu_memory_by_pid": {str(k): v for k, v in gpu_memory.items()},
        "counters": {name: counter(name) for name in names},
        "pid": os.getpid(), "ppid": os.getppid(),
    }))
""")


def run_sampler(lib_dir: Path, mode: str, wait_for: str, at_least: int, settle: float = 0.0,
                **settings: object) -> dict:
    """Run SAMPLER_SCRIPT with the fake library in ``mode``; return what it printed."""
    config = {"resource_interval_seconds": 0.1, "process_interval_seconds": 0.1,
              "gpu_process_interval_seconds": 3600.0, **settings}
    args = json.dumps({"config": config, "wait_for": wait_for, "at_least": at_least,
                       "settle": settle})
    env = {**os.environ, "LD_LIBRARY_PATH": str(lib_dir), "FAKE_NVML_MODE": mode,
           "PYTHONWARNINGS": "error"}
    result = subprocess.run([sys.executable, "-c", SAMPLER_SCRIPT, args], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return json.loads(result.stdout)


def unavailable_lines(out: dict) -> list[list[str]]:
    return [line for line in out["logs"] if "GPU metrics unavailable" in line[1]]


def test_driver_not_loaded_reports_unavailable_and_logs_once(fake_nvml) -> None:
    """nvmlInit failing with NVML_ERROR_DRIVER_NOT_LOADED makes the gpu section unavailable
    with reason "driver not loaded"; five retries log it once (a warning: the library is
    installed, its driver is not)."""
    out = run_sampler(fake_nvml["full"], "driver_not_loaded", "init_calls", 5)
    gpu = out["snapshot"]["gpu"]
    assert gpu["available"] is False and gpu["devices"] == []
    assert "driver not loaded" in gpu["reason"].lower()
    assert unavailable_lines(out) == [["WARNING", unavailable_lines(out)[0][1]]]
    assert "driver not loaded" in unavailable_lines(out)[0][1].lower()
    assert out["counters"]["init_calls"] >= 5
    assert out["counters"]["shutdown_calls"] == 0  # never initialised: nothing to shut down


def test_no_gpu_reports_unavailable_and_logs_once_at_info(fake_nvml) -> None:
    """NVML that initialises but sees 0 devices is "no GPU": unavailable, logged once at info
    across five retries, and every successful init is balanced by nvmlShutdown."""
    out = run_sampler(fake_nvml["full"], "no_gpu", "init_calls", 5)
    gpu = out["snapshot"]["gpu"]
    assert gpu["available"] is False and "no GPU" in gpu["reason"]
    lines = unavailable_lines(out)
    assert len(lines) == 1 and lines[0][0] == "INFO" and "no GPU" in lines[0][1]
    assert not [line for line in out["logs"] if line[0] != "INFO"]
    counters = out["counters"]
    assert counters["init_calls"] >= 5 and counters["shutdown_calls"] == counters["init_calls"]
    assert counters["handle_calls"] == 0


@pytest.mark.parametrize("variant", ["full", "no_v3"])
def test_fake_gpus_are_read_end_to_end(fake_nvml, variant: str) -> None:
    """With two (fake) GPUs every cheap field comes through pynvml with its unit converted,
    a field NVML does not support is None, per-pid GPU memory is summed over GPUs (a process
    listed as compute and graphics on one GPU counted once) and joined to the worker's
    entry; NVML is initialised once, handles are looked up once, the expensive process
    lists are read once in ten cheap samples, and nvmlShutdown runs at stop. "no_v3" is a
    driver without the _v3 process-list calls: the sampler falls back to _v2."""
    out = run_sampler(fake_nvml[variant], "gpu", "utilization_calls", 20)
    gpu = out["snapshot"]["gpu"]
    assert gpu["available"] is True and gpu["reason"] is None and gpu["stale"] is False
    assert gpu["devices"] == [
        {"index": 0, "name": "Fake GPU 0", "utilization_percent": 37, "memory_used_mb": 20480.0,
         "memory_total_mb": 81920.0, "temperature_c": 61, "power_w": 123.456},
        {"index": 1, "name": "Fake GPU 1", "utilization_percent": 5, "memory_used_mb": 0.0,
         "memory_total_mb": 16384.0, "temperature_c": None, "power_w": None},
    ]
    assert gpu["processes_age_seconds"] is not None and gpu["processes_stale"] is False
    pid, ppid = out["pid"], out["ppid"]
    assert out["gpu_memory_by_pid"] == {str(pid): 1536.0, str(ppid): 256.0}
    (me,) = out["snapshot"]["processes"]
    assert me["pid"] == pid and me["rss_bytes"] > 0 and me["gpu_memory_mb"] == 1536.0

    counters = out["counters"]
    assert counters["init_calls"] == 1 and counters["handle_calls"] == 2
    assert counters["shutdown_calls"] == 1
    assert counters["utilization_calls"] >= 20  # 10 samples of 2 GPUs ...
    assert 0 < counters["process_list_calls"] <= 8  # ... one round of 4 lists (2 calls each)
    assert [line[0] for line in out["logs"]] == ["INFO"]
    assert "GPU metrics from 2 device(s)" in out["logs"][0][1]


def test_a_hung_driver_call_shows_as_stale_and_stop_keeps_its_deadline(fake_nvml) -> None:
    """A driver call that never returns stalls only the gpu thread: the gpu section turns
    stale (it never published), the system and process sections stay fresh, stop(0.5)
    returns at its deadline, and the process still exits."""
    out = run_sampler(fake_nvml["full"], "hang", "handle_calls", 2, settle=0.6,
                      resource_timeout_seconds=0.1)
    snap = out["snapshot"]
    assert snap["gpu"]["stale"] is True and snap["gpu"]["age_seconds"] is None
    assert snap["system"]["stale"] is False and snap["processes_stale"] is False
    assert 0.4 < out["stop_seconds"] < 1.5
    assert any("still busy" in line[1] and "ai-analytics-gpu" in line[1] for line in out["logs"])


