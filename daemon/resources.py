"""Resource sampling: the node, the workers' processes and the GPUs, each in its own thread.

Three probe families, one daemon thread each, none of them on the drain loop:

``system``     (every ``resource_interval_seconds``)  CPU and memory of the node, plus the
               daemon's own CPU and RSS.
``processes``  (every ``process_interval_seconds``)   RSS of each worker pid handed to
               ``set_worker_pids``; a pid that is gone reads ``{"error": "gone"}``.
``gpu``        (every ``resource_interval_seconds``)  per-GPU utilisation, memory, temperature
               and power through NVML, initialised once with its handles cached; the running
               process lists, which cost far more, only every ``gpu_process_interval_seconds``.

Each thread replaces its latest sample whole (one reference store) and ``snapshot`` reads the
references, so no lock is taken anywhere. Every sample carries the (injected) clock time it
was taken at; a section older than its interval plus ``resource_timeout_seconds`` is reported
``"stale": true``. That is how a hung driver call shows: its thread stops publishing, nothing
waits for it, and ``stop`` gives up on it at its deadline (the threads are daemon threads).

No NVIDIA library, no driver or no GPU is a normal state: the gpu section says
``"available": false`` with the reason, the reason is logged once, and NVML init is retried
every ``gpu_retry_seconds`` without logging the same reason again. GPU memory figures are MiB
(2**20 bytes), as ``nvidia-smi`` shows them.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import psutil

from ai_analytics.client._ratelog import worth_logging
from ai_analytics.core.config import Config

try:
    import pynvml
except ImportError:  # a dependency, but a GPU-less node must not need it to start
    pynvml = None

log = logging.getLogger("ai_analytics.daemon")

GPU_RETRY_SECONDS = 60.0
MIB = 1024 * 1024
GONE = "gone"
ACCESS_DENIED = "access denied"
# An unexpected error in a probe is logged the first time and then every this many times.
DEVICE_FIELDS = ("utilization_percent", "memory_used_mb", "memory_total_mb", "temperature_c",
                 "power_w")
SYSTEM_FIELDS = ("cpu_percent", "memory_total_bytes", "memory_used_bytes",
                 "memory_available_bytes", "memory_percent")
DAEMON_FIELDS = ("cpu_percent", "rss_bytes")

T = TypeVar("T")
Clock = Callable[[], float]


@dataclasses.dataclass(frozen=True)
class _Sample:
    """One probe's reading and the clock time it was taken at; never mutated once published."""

    taken: float
    values: Any


@dataclasses.dataclass(frozen=True)
class _GpuReading:
    available: bool
    reason: str | None
    devices: tuple[dict[str, object], ...] = ()


def _optional(read: Callable[..., T], *args: object) -> T | None:
    """A field this GPU does not have (NVML_ERROR_NOT_SUPPORTED) is None, not a failure."""
    assert pynvml is not None
    try:
        return read(*args)
    except pynvml.NVMLError_NotSupported:
        return None


def _mib(value: int | None) -> float | None:
    return None if value is None else round(value / MIB, 1)


class _Nvml:
    """NVML initialised once, device handles and names cached, init retried rarely.

    Used by the gpu thread only (init, reads and shutdown all happen on that thread).
    """

    def __init__(self, clock: Clock, retry_seconds: float) -> None:
        self._clock = clock
        self._retry_seconds = retry_seconds
        self._next_try = -math.inf
        self._logged_reason: str | None = None
        self._initialised = False
        self._process_readers: tuple[Callable[[Any], list[Any]], ...] = ()
        self._errors_logged: set[tuple[int, str]] = set()
        self.handles: list[Any] = []
        self.names: list[str | None] = []
        self.reason: str | None = "NVML not initialised yet"

    def ready(self) -> bool:
        """True once devices are known; otherwise try init, at most every retry_seconds."""
        if self.handles:
            return True
        now = self._clock()
        if now < self._next_try:
            return False
        self._next_try = now + self._retry_seconds
        reason, level = self._init()
        if reason is None:
            self.reason = self._logged_reason = None
            log.info("GPU metrics from %d device(s): %s", len(self.handles),
                     ", ".join(str(name) for name in self.names))
            return True
        self.reason = reason
        if reason != self._logged_reason:  # a retry that fails the same way stays quiet
            self._logged_reason = reason
            log.log(level, "GPU metrics unavailable: %s (NVML init retried every %g s)",
                    reason, self._retry_seconds)
        return False

    def _init(self) -> tuple[str | None, int]:
        """(None, _) when devices were found, else (reason, log level)."""
        if pynvml is None:
            return "the pynvml module (package nvidia-ml-py) is not installed", logging.WARNING
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError_LibraryNotFound:
            return ("NVML library libnvidia-ml.so.1 not found (no NVIDIA driver installed)",
                    logging.INFO)
        except pynvml.NVMLError_DriverNotLoaded:
            return "NVIDIA driver not loaded (NVML found, but no kernel driver)", logging.WARNING
        except pynvml.NVMLError as exc:
            return f"NVML init failed: {exc}", logging.WARNING
        self._initialised = True
        try:
            count = pynvml.nvmlDeviceGetCount()
            handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
            names = [_optional(pynvml.nvmlDeviceGetName, handle) for handle in handles]
        except pynvml.NVMLError as exc:
            self.shutdown()
            return f"NVML could not list the GPUs: {exc}", logging.WARNING
        if not handles:
            # Keep NVML initialised only while there are devices to read.
            self.shutdown()
            return "no GPU found (NVML sees 0 devices)", logging.INFO
        self.handles, self.names = handles, names
        self._process_readers = (pynvml.nvmlDeviceGetComputeRunningProcesses,
                                 pynvml.nvmlDeviceGetGraphicsRunningProcesses)
        return None, logging.INFO

    def shutdown(self) -> None:
        if not self._initialised or pynvml is None:
            return
        self._initialised = False
        self.handles, self.names = [], []
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError as exc:
            log.warning("nvmlShutdown failed: %s", exc)

    def read_device(self, index: int) -> dict[str, object]:
        """The cheap fields of one GPU; a field the GPU lacks is None."""
        assert pynvml is not None
        handle = self.handles[index]
        device: dict[str, object] = {"index": index, "name": self.names[index]}
        try:
            util = _optional(pynvml.nvmlDeviceGetUtilizationRates, handle)
            memory = _optional(pynvml.nvmlDeviceGetMemoryInfo, handle)
            temperature = _optional(pynvml.nvmlDeviceGetTemperature, handle,
                                    pynvml.NVML_TEMPERATURE_GPU)
            milliwatts = _optional(pynvml.nvmlDeviceGetPowerUsage, handle)
        except pynvml.NVMLError as exc:  # e.g. GPU is lost: this device only
            self._log_device_error(index, str(exc))
            return {**device, **dict.fromkeys(DEVICE_FIELDS), "error": str(exc)}
        device.update(
            utilization_percent=None if util is None else util.gpu,
            memory_used_mb=None if memory is None else _mib(memory.used),
            memory_total_mb=None if memory is None else _mib(memory.total),
            temperature_c=temperature,
            power_w=None if milliwatts is None else milliwatts / 1000.0,
        )
        return device

    def gpu_memory_by_pid(self) -> dict[int, float | None]:
        """MiB of GPU memory per pid over all GPUs; None where NVML cannot tell."""
        assert pynvml is not None
        total: dict[int, int | None] = {}
        for index, handle in enumerate(self.handles):
            try:
                on_device = self._device_processes(handle)
            except pynvml.NVMLError as exc:
                self._log_device_error(index, f"process list: {exc}")
                continue
            for pid, used in on_device.items():
                known = total.get(pid)
                total[pid] = used if known is None else known + (used or 0)
        return {pid: _mib(used) for pid, used in total.items()}

    def _device_processes(self, handle: Any) -> dict[int, int | None]:
        """Compute and graphics processes of one GPU, bytes per pid.

        A process with both a compute and a graphics context ("C+G" in nvidia-smi) is listed
        twice with the same memory figure: take it once, not the sum.
        """
        assert pynvml is not None
        used: dict[int, int | None] = {}
        for read in self._process_readers:
            try:
                processes = _optional(read, handle) or []
            except pynvml.NVMLLibraryMismatchError:
                # A driver older than pynvml's _v3 calls: fall back to the _v2 ones, once.
                self._process_readers = (pynvml.nvmlDeviceGetComputeRunningProcesses_v2,
                                         pynvml.nvmlDeviceGetGraphicsRunningProcesses_v2)
                return self._device_processes(handle)
            for process in processes:
                memory = process.usedGpuMemory  # None: NVML_VALUE_NOT_AVAILABLE
                known = used.get(process.pid)
                used[process.pid] = memory if known is None else max(known, memory or 0)
        return used

    def _log_device_error(self, index: int, message: str) -> None:
        # Bounded: devices x NVML error codes.
        if (index, message) not in self._errors_logged:
            self._errors_logged.add((index, message))
            log.warning("GPU %d: %s", index, message)


class _CpuUse:
    """Percent of one CPU that a process used since the previous call (None at the first),
    its children that it has reaped included: the daemon's snapshot children are its CPU."""

    def __init__(self, process: psutil.Process) -> None:
        self._process = process
        self._last: tuple[float, float] | None = None

    def percent(self) -> float | None:
        times = self._process.cpu_times()
        used = times.user + times.system + times.children_user + times.children_system
        now = time.monotonic()
        last, self._last = self._last, (now, used)
        if last is None or now <= last[0]:
            return None
        return round(100.0 * (used - last[1]) / (now - last[0]), 1)


class ResourceSampler:
    """Samples system, worker-process and GPU resources in three daemon threads.

    ``start`` once, ``stop(timeout)`` once; ``set_worker_pids`` and ``snapshot`` from any
    thread at any time. The ``sample_*`` methods take one sample now: the threads call them,
    and tests and benchmarks may call them directly on a sampler that was not started.
    ``apply_config`` (a reload, from the loop thread) replaces ``config`` with one reference
    store: each probe's next wait reads the new interval.
    """

    def __init__(self, config: Config, clock: Clock = time.monotonic, *,
                 gpu_retry_seconds: float = GPU_RETRY_SECONDS) -> None:
        self.config = config
        self._clock = clock
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._started: float | None = None
        self._pids: frozenset[int] = frozenset()
        # pid → its psutil.Process (identity = pid + start time), or None once it is gone.
        # Touched by the processes thread only.
        self._processes_seen: dict[int, psutil.Process | None] = {}
        self._daemon_process = psutil.Process()
        self._daemon_cpu = _CpuUse(self._daemon_process)
        self._cpu_primed = False
        self._nvml = _Nvml(clock, gpu_retry_seconds)
        self._next_gpu_processes = -math.inf
        # The latest sample of each section, replaced whole by its thread.
        self._system: _Sample | None = None
        self._processes: _Sample | None = None
        self._gpu: _Sample | None = None
        self._gpu_processes: _Sample | None = None

    # -- threads ---------------------------------------------------------------------------
    def apply_config(self, config: Config) -> None:
        self.config = config

    def start(self) -> None:
        if self._threads:
            raise RuntimeError("ResourceSampler.start() called twice")
        self._started = self._clock()
        # Each probe reads its interval after every sample: a reload replaces ``config``.
        probes: tuple[tuple[str, Callable[[], float], Callable[[], None],
                            Callable[[], None] | None], ...] = (
            ("system", lambda: self.config.resource_interval_seconds, self.sample_system, None),
            ("processes", lambda: self.config.process_interval_seconds, self.sample_processes,
             None),
            ("gpu", lambda: self.config.resource_interval_seconds, self.sample_gpu,
             self._nvml.shutdown),
        )
        for name, interval, sample, cleanup in probes:
            thread = threading.Thread(target=self._run, args=(name, interval, sample, cleanup),
                                      name=f"ai-analytics-{name}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def stop(self, timeout: float) -> None:
        """Ask every probe to stop and wait at most ``timeout`` seconds in all."""
        self._stop.set()
        deadline = time.monotonic() + timeout  # real time: an injected clock may stand still
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        stuck = [thread.name for thread in self._threads if thread.is_alive()]
        if stuck:
            log.warning("resource probes still busy after %.1f s, left behind: %s "
                        "(a hung driver or /proc call?)", timeout, ", ".join(stuck))

    def _run(self, name: str, interval: Callable[[], float], sample: Callable[[], None],
             cleanup: Callable[[], None] | None) -> None:
        failures = 0

        def guarded() -> None:
            nonlocal failures
            try:
                sample()
            except Exception:  # a probe must never die: its section just goes stale
                failures += 1
                if worth_logging(failures):
                    log.exception("%s resource probe failed (failure %d; it keeps sampling)",
                                  name, failures)

        try:
            guarded()
            while not self._stop.wait(interval()):
                guarded()
        finally:
            if cleanup is not None:
                cleanup()

    # -- probes ----------------------------------------------------------------------------
    def set_worker_pids(self, pids: Iterable[int]) -> None:
        """Replace the set of worker pids to watch (one reference store: thread-safe)."""
        self._pids = frozenset(int(pid) for pid in pids)

    def sample_system(self) -> None:
        # cpu_percent(None) compares with the previous call; the first one only primes it.
        # psutil keeps that state per process: nothing else in the daemon may call it.
        cpu = psutil.cpu_percent(interval=None)
        own_cpu = self._daemon_cpu.percent()
        memory = psutil.virtual_memory()
        rss = self._daemon_process.memory_info().rss
        primed, self._cpu_primed = self._cpu_primed, True
        self._system = _Sample(self._clock(), {
            "system": {
                "cpu_percent": cpu if primed else None,
                "memory_total_bytes": memory.total,
                "memory_used_bytes": memory.used,
                "memory_available_bytes": memory.available,
                "memory_percent": memory.percent,
            },
            "daemon": {"cpu_percent": own_cpu, "rss_bytes": rss},
        })

    def sample_processes(self) -> None:
        pids = self._pids  # one read: a consistent set even if it is swapped meanwhile
        for pid in self._processes_seen.keys() - pids:
            del self._processes_seen[pid]
        entries = tuple(self._process_entry(pid) for pid in sorted(pids))
        self._processes = _Sample(self._clock(), entries)

    def _process_entry(self, pid: int) -> dict[str, object]:
        gone = {"pid": pid, "error": GONE}
        if pid in self._processes_seen:
            process = self._processes_seen[pid]
            if process is None:
                return gone  # stays gone while the pid is in the set, even if reused
        else:
            process = None
        try:
            if process is None:
                process = self._processes_seen[pid] = psutil.Process(pid)
            # is_running compares pid + start time: a reused pid is not our worker.
            if not process.is_running():
                raise psutil.NoSuchProcess(pid)
            with process.oneshot():
                # A zombie is dead, and psutil reads its RSS as 0 without raising.
                if process.status() == psutil.STATUS_ZOMBIE:
                    raise psutil.ZombieProcess(pid)
                rss = process.memory_info().rss
        except psutil.NoSuchProcess:  # ZombieProcess included
            self._processes_seen[pid] = None
            return gone
        except psutil.AccessDenied:
            return {"pid": pid, "error": ACCESS_DENIED}
        return {"pid": pid, "rss_bytes": rss}

    def sample_gpu(self) -> None:
        nvml = self._nvml
        if not nvml.ready():
            self._gpu = _Sample(self._clock(), _GpuReading(False, nvml.reason))
            return
        devices = tuple(nvml.read_device(index) for index in range(len(nvml.handles)))
        now = self._clock()
        self._gpu = _Sample(now, _GpuReading(True, None, devices))
        if now >= self._next_gpu_processes:  # the expensive part, rarely
            self._next_gpu_processes = now + self.config.gpu_process_interval_seconds
            by_pid = nvml.gpu_memory_by_pid()
            self._gpu_processes = _Sample(self._clock(), by_pid)

    # -- reading ---------------------------------------------------------------------------
    def rss_by_pid(self) -> dict[int, int]:
        """RSS in bytes of each worker pid in the latest sample (gone pids left out)."""
        sample = self._processes
        if sample is None:
            return {}
        return {e["pid"]: e["rss_bytes"] for e in sample.values if "rss_bytes" in e}

    def gpu_memory_by_pid(self) -> dict[int, float]:
        """MiB of GPU memory per pid (any process on the GPUs), where NVML reports it."""
        sample = self._gpu_processes
        if sample is None:
            return {}
        return {pid: mb for pid, mb in sample.values.items() if mb is not None}

    def snapshot(self) -> dict[str, object]:
        """The latest sample of every section, JSON-ready, each with its age."""
        now = self._clock()
        cfg = self.config
        system, processes = self._system, self._processes  # read each reference once
        gpu, gpu_processes = self._gpu, self._gpu_processes

        system_age, system_stale = self._age(system, now, cfg.resource_interval_seconds)
        if system is None:
            system_values = dict.fromkeys(SYSTEM_FIELDS)
            daemon_values: dict[str, object] = dict.fromkeys(DAEMON_FIELDS)
        else:
            system_values = dict(system.values["system"])
            daemon_values = dict(system.values["daemon"])

        processes_age, processes_stale = self._age(processes, now, cfg.process_interval_seconds)
        gpu_memory = self.gpu_memory_by_pid()
        entries = []
        for entry in processes.values if processes is not None else ():
            entry = dict(entry)
            if entry["pid"] in gpu_memory:
                entry["gpu_memory_mb"] = gpu_memory[entry["pid"]]
            entries.append(entry)

        return {
            "system": {**system_values, "age_seconds": system_age, "stale": system_stale},
            "daemon": daemon_values,
            "processes": entries,
            "processes_age_seconds": processes_age,
            "processes_stale": processes_stale,
            "gpu": self._gpu_section(gpu, gpu_processes, now),
        }

    def _gpu_section(self, gpu: _Sample | None, gpu_processes: _Sample | None,
                     now: float) -> dict[str, object]:
        cfg = self.config
        age, stale = self._age(gpu, now, cfg.resource_interval_seconds)
        reading = gpu.values if gpu is not None else None
        available = None if reading is None else reading.available
        # The process lists are read on the gpu thread's ticks: never more often than that.
        interval = max(cfg.gpu_process_interval_seconds, cfg.resource_interval_seconds)
        processes_age, processes_stale = self._age(gpu_processes, now, interval)
        return {
            "available": available,
            "reason": None if reading is None else reading.reason,
            "devices": [] if reading is None else [dict(d) for d in reading.devices],
            "age_seconds": age,
            "stale": stale,
            "processes_age_seconds": processes_age,
            # No process list is expected from a node without GPUs.
            "processes_stale": processes_stale and available is True,
        }

    def _age(self, sample: _Sample | None, now: float, interval: float
             ) -> tuple[float | None, bool]:
        """(age, stale). A probe that has not published by its deadline is stale too."""
        limit = interval + self.config.resource_timeout_seconds
        if sample is None:
            started = self._started
            return None, started is not None and now - started > limit
        age = max(0.0, now - sample.taken)
        return round(age, 3), age > limit


__all__ = ["GPU_RETRY_SECONDS", "ResourceSampler"]
