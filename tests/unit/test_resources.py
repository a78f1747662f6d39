"""The resource sampler in this process: real psutil readings of the node and of this
process, sample ages on an injected clock, no NVML library (this machine has none: pynvml's
NVMLError_LibraryNotFound), and a stop that ends every thread."""

from __future__ import annotations

import ctypes
import json
import logging
import subprocess
import sys
import threading
import time

import psutil
import pytest

from ai_analytics.core.config import Config, config_from_mapping
from ai_analytics.daemon.resources import ResourceSampler, _CpuUse

from helpers import SAMPLER_IDLE, SAMPLER_SHORT, FakeClock, wait_for

LOGGER = "ai_analytics.daemon"


# -- system ------------------------------------------------------------------------------------
def test_system_section_fills_in_with_plausible_values(sampler_factory) -> None:
    """The system thread publishes CPU and memory of the node and the daemon's own CPU and RSS
    within a couple of seconds; the values are in their possible ranges."""
    sampler = sampler_factory(config_from_mapping(SAMPLER_SHORT))
    sampler.start()
    snap = wait_for(lambda: (s := sampler.snapshot())["system"]["cpu_percent"] is not None and s,
                    timeout=3.0, what="a primed CPU reading")
    system, own = snap["system"], snap["daemon"]
    total = psutil.virtual_memory().total
    assert system["memory_total_bytes"] == total
    assert 0 < system["memory_used_bytes"] <= total
    assert 0 < system["memory_available_bytes"] <= total
    assert 0.0 <= system["memory_percent"] <= 100.0
    assert 0.0 <= system["cpu_percent"] <= 100.0
    assert own["cpu_percent"] >= 0.0  # per process: may pass 100 on several cores
    assert 10 * 2**20 < own["rss_bytes"] < total  # a Python process with psutil loaded
    assert 0.0 <= system["age_seconds"] < 2.0 and system["stale"] is False
    json.dumps(snap)  # JSON-ready as it is


def test_before_the_first_sample_every_value_is_none() -> None:
    """A sampler that has taken no sample reports every section with age None and values None,
    and calls nothing stale before it is started."""
    snap = ResourceSampler(Config()).snapshot()
    assert set(snap["system"]) == {"cpu_percent", "memory_total_bytes", "memory_used_bytes",
                                   "memory_available_bytes", "memory_percent", "age_seconds",
                                   "stale"}
    assert all(v is None for k, v in snap["system"].items() if k != "stale")
    assert snap["daemon"] == {"cpu_percent": None, "rss_bytes": None}
    assert snap["processes"] == [] and snap["processes_age_seconds"] is None
    assert snap["gpu"] == {"available": None, "reason": None, "devices": [], "age_seconds": None,
                           "stale": False, "processes_age_seconds": None,
                           "processes_stale": False}
    assert not snap["system"]["stale"] and not snap["processes_stale"]


def test_age_grows_with_the_injected_clock_and_stale_flips_past_interval_plus_timeout(
    sampler_factory,
) -> None:
    """Each section's age is clock now minus the time it was taken; it turns stale only when
    the age passes its interval plus resource_timeout_seconds."""
    clock = FakeClock()
    config = config_from_mapping({**SAMPLER_IDLE, "resource_timeout_seconds": 5.0})
    sampler = sampler_factory(config, clock=clock)
    sampler.start()  # first samples at once, the next ones an hour away
    wait_for(lambda: sampler.snapshot()["processes_age_seconds"] is not None
             and sampler.snapshot()["system"]["age_seconds"] is not None, timeout=3.0,
             what="first samples")
    snap = sampler.snapshot()
    assert snap["system"]["age_seconds"] == 0.0 and snap["system"]["stale"] is False

    limit = 3600.0 + 5.0
    clock.now += 12.5
    snap = sampler.snapshot()
    assert snap["system"]["age_seconds"] == 12.5
    assert snap["processes_age_seconds"] == 12.5 and snap["gpu"]["age_seconds"] == 12.5

    clock.now += limit - 12.5 - 0.01
    snap = sampler.snapshot()
    assert not snap["system"]["stale"] and not snap["processes_stale"]
    assert not snap["gpu"]["stale"]

    clock.now += 0.02
    snap = sampler.snapshot()
    assert snap["system"]["stale"] and snap["processes_stale"] and snap["gpu"]["stale"]
    assert snap["system"]["age_seconds"] == round(limit + 0.01, 3)
    # A GPU-less node is not expected to produce process lists: never stale for that.
    assert snap["gpu"]["processes_stale"] is False


# -- gpu: the real failure on this machine -----------------------------------------------------
def _has_real_nvml() -> bool:
    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return False
    return True


@pytest.mark.skipif(_has_real_nvml(), reason="this machine has a libnvidia-ml.so.1")
def test_no_nvml_library_reports_unavailable_and_logs_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Without libnvidia-ml.so.1 the real pynvml raises NVMLError_LibraryNotFound: the gpu
    section says available false with a reason naming the library, and the reason is logged
    once, at info (no GPU is a normal state), however often init is retried."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    sampler = ResourceSampler(config_from_mapping(SAMPLER_SHORT), gpu_retry_seconds=0.0)
    for _ in range(5):
        sampler.sample_gpu()  # retry_seconds 0: every sample tries nvmlInit again
    gpu = sampler.snapshot()["gpu"]
    assert gpu["available"] is False and gpu["devices"] == []
    assert "libnvidia-ml.so.1 not found" in gpu["reason"]
    lines = [r for r in caplog.records if "GPU metrics unavailable" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.INFO
    assert sampler.gpu_memory_by_pid() == {}


# -- stop --------------------------------------------------------------------------------------
def test_stop_returns_promptly_and_ends_every_thread() -> None:
    """stop wakes the threads out of their interval wait: it returns at once, not after an
    interval, and no probe thread is left."""
    sampler = ResourceSampler(config_from_mapping(SAMPLER_IDLE))
    sampler.start()
    wait_for(lambda: sampler.snapshot()["gpu"]["age_seconds"] is not None, timeout=3.0,
             what="first samples")
    started = time.monotonic()
    sampler.stop(5.0)
    assert time.monotonic() - started < 1.0
    assert not [t for t in threading.enumerate() if t.name.startswith("ai-analytics-")]


def test_the_daemons_cpu_counts_the_children_it_reaped():
    """The daemon's cpu_percent includes its reaped children (its snapshots' statistics are
    computed in children): a child that burns 0.3 s of CPU shows in the next reading."""
    use = _CpuUse(psutil.Process())
    started = time.monotonic()
    assert use.percent() is None
    subprocess.run([sys.executable, "-c", "import time\nend = time.process_time() + 0.3\n"
                    "while time.process_time() < end: pass"], check=True)
    percent = use.percent()
    assert percent is not None
    assert percent / 100 * (time.monotonic() - started) >= 0.28
