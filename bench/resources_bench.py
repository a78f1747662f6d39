"""What one sample of each resource probe family costs, in µs.

Usage, from the repository root::

    .venv/bin/python bench/resources_bench.py [--rounds N] [--samples N] [--pids N]
                                              [--out bench/resources_results.json]
                                              [--no-fake-gpu]

Each case calls one ``ResourceSampler.sample_*`` method ``--samples`` times per round, on a
sampler that was not started (no threads: the call is the whole cost). Rounds are
interleaved (round r runs every case once, in an order rotated by r) so that a burst of load
hits all cases alike; the FASTEST round is the figure, the median is shown beside it. The
script prints a markdown table and writes every round to ``--out`` as JSON.

Cases:

``system``
    ``psutil.cpu_percent``, ``virtual_memory`` and the daemon's own CPU and RSS.
``processes``
    RSS of ``--pids`` (default 10) real sleeping child processes, each checked for pid reuse
    and zombie state.
``gpu_unavailable``
    The gpu probe on a node without NVML, between init retries: what it pays every
    ``resource_interval_seconds`` on a GPU-less node.
``gpu_unavailable_retry``
    The same with a retry each sample: a failed ``nvmlInit`` (dlopen of a missing
    libnvidia-ml.so.1), paid once per ``GPU_RETRY_SECONDS`` in production.
``gpu_fake_cheap`` / ``gpu_fake_with_processes`` (only when gcc is found; ``--no-fake-gpu``)
    Two GPUs of tests/fake_nvml/fake_nvml.c, in a child process with LD_LIBRARY_PATH set:
    the cheap fields only, and the cheap fields plus the compute and graphics process lists.
    The fake answers at once, so these are pynvml's and ctypes' own overhead; a real driver
    adds its ioctls on top. The child runs its rounds after the parent's, not interleaved.

Children and temporary files are removed at the end, on error and on SIGTERM too.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

from ai_analytics.core.config import config_from_mapping
from ai_analytics.daemon.resources import ResourceSampler

from benchlib.report import exit_on_sigterm
from benchlib.timing import interleaved_rounds

HERE = Path(__file__).resolve().parent
FAKE_NVML_SOURCE = HERE.parent / "tests" / "fake_nvml" / "fake_nvml.c"
NOTES = {
    "system": "node CPU + memory, daemon CPU + RSS",
    "processes": "RSS of {pids} worker pids (reuse and zombie checked)",
    "gpu_unavailable": "no NVML, between init retries",
    "gpu_unavailable_retry": "no NVML, failed nvmlInit each sample",
    "gpu_fake_cheap": "2 fake GPUs: name, utilisation, memory, temperature, power",
    "gpu_fake_with_processes": "2 fake GPUs: cheap fields + compute/graphics process lists",
}


class StepClock:
    """A clock that moves one hour per reading: every gpu sample is due for process lists."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 3600.0
        return self.now


def time_samples(sample: Callable[[], None], samples: int) -> float:
    """µs per call of ``sample`` over ``samples`` calls."""
    start = time.perf_counter_ns()
    for _ in range(samples):
        sample()
    return (time.perf_counter_ns() - start) / samples / 1000.0


def run_rounds(cases: dict[str, Callable[[], None]], rounds: int,
               samples: int) -> dict[str, list[float]]:
    """Interleaved rounds; one warm-up call per case first (it primes cpu_percent, NVML)."""
    for sample in cases.values():
        sample()
    return interleaved_rounds(
        {name: partial(time_samples, sample, samples) for name, sample in cases.items()}, rounds)


@contextlib.contextmanager
def sleeping_children(count: int) -> Iterator[list[int]]:
    """``count`` real child processes that sleep; killed and reaped on the way out."""
    children: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(count):
            children.append(subprocess.Popen([sys.executable, "-c",
                                              "import time; time.sleep(3600)"]))
        yield [child.pid for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
            child.wait()


def host_cases(pids: list[int]) -> dict[str, Callable[[], None]]:
    config = config_from_mapping({})
    system = ResourceSampler(config)
    processes = ResourceSampler(config)
    processes.set_worker_pids(pids)
    quiet = ResourceSampler(config)  # retries NVML init after GPU_RETRY_SECONDS only
    retrying = ResourceSampler(config, gpu_retry_seconds=0.0)
    return {
        "system": system.sample_system,
        "processes": processes.sample_processes,
        "gpu_unavailable": quiet.sample_gpu,
        "gpu_unavailable_retry": retrying.sample_gpu,
    }


def fake_gpu_cases() -> dict[str, Callable[[], None]]:
    """Run in the child, where LD_LIBRARY_PATH finds the fake libnvidia-ml.so.1."""
    cheap = ResourceSampler(config_from_mapping({"gpu_process_interval_seconds": 3600.0}))
    full = ResourceSampler(config_from_mapping({}), clock=StepClock())
    cheap.sample_gpu()
    if cheap.snapshot()["gpu"]["available"] is not True:
        raise RuntimeError(f"the fake NVML did not load: {cheap.snapshot()['gpu']['reason']}")
    return {"gpu_fake_cheap": cheap.sample_gpu, "gpu_fake_with_processes": full.sample_gpu}


def measure_fake_gpu(rounds: int, samples: int) -> dict[str, list[float]]:
    """Build the fake NVML with gcc and time the gpu probe against it in a child process."""
    gcc = shutil.which("gcc")
    if gcc is None:
        print("gcc not found: the fake-GPU cases are left out", file=sys.stderr)
        return {}
    with tempfile.TemporaryDirectory(prefix="fake-nvml-") as folder:
        subprocess.run([gcc, "-shared", "-fPIC", "-O2", "-o",
                        os.path.join(folder, "libnvidia-ml.so.1"), str(FAKE_NVML_SOURCE)],
                       check=True)
        env = {**os.environ, "LD_LIBRARY_PATH": folder, "FAKE_NVML_MODE": "gpu"}
        result = subprocess.run(
            [sys.executable, __file__, "--child-fake-gpu", "--rounds", str(rounds),
             "--samples", str(samples)],
            env=env, check=True, capture_output=True, text=True, timeout=600,
        )
    return json.loads(result.stdout)


def summarize(results: dict[str, list[float]], pids: int) -> dict[str, dict[str, Any]]:
    return {
        name: {
            "fastest_us": round(min(rounds), 2),
            "median_us": round(statistics.median(rounds), 2),
            "rounds_us": [round(value, 2) for value in rounds],
            "what": NOTES[name].format(pids=pids),
        }
        for name, rounds in results.items()
    }


def table(summary: dict[str, dict[str, Any]]) -> str:
    lines = ["| probe | fastest µs/sample | median µs/sample | one sample |",
             "|---|---:|---:|---|"]
    for name, row in summary.items():
        lines.append(f"| {name} | {row['fastest_us']:.1f} | {row['median_us']:.1f} | "
                     f"{row['what']} |")
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "load_average": [round(load, 2) for load in os.getloadavg()],
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=15, help="rounds per case (default 15)")
    parser.add_argument("--samples", type=int, default=200,
                        help="samples per round (default 200)")
    parser.add_argument("--pids", type=int, default=10,
                        help="worker processes for the processes case (default 10)")
    parser.add_argument("--out", type=Path, default=HERE / "resources_results.json",
                        help="JSON results file (default bench/resources_results.json)")
    parser.add_argument("--no-fake-gpu", action="store_true",
                        help="leave out the cases that need gcc and the fake NVML")
    parser.add_argument("--child-fake-gpu", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child_fake_gpu:
        print(json.dumps(run_rounds(fake_gpu_cases(), args.rounds, args.samples)))
        return 0
    exit_on_sigterm()
    before = machine()
    with sleeping_children(args.pids) as pids:
        results = run_rounds(host_cases(pids), args.rounds, args.samples)
    if not args.no_fake_gpu:
        results.update(measure_fake_gpu(args.rounds, args.samples))
    summary = summarize(results, args.pids)
    report = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": before,
        "rounds": args.rounds,
        "samples_per_round": args.samples,
        "pids": args.pids,
        "cases": summary,
    }
    print(table(summary))
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
