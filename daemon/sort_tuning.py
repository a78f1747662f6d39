"""Keep numpy off its AVX-512 sort on AMD Zen 4 CPUs.

numpy sorts with x86-simd-sort. Its AVX-512 partition writes each vector with a
compress-to-memory instruction that Zen 4 cores run in microcode, reported at over 100 cycles
each (numpy pull request #32690, x86-simd-sort issue #6). Zen 5 does not have this problem.
On a 2-core AMD EPYC VM (family 25, model 17), ``np.sort`` of 17,000 int32 keys took 260 us
with AVX-512 and 51 us on numpy's AVX2 path. That is the size of the bucket keys of one drain
batch at 100 k events/s, and sorting them is the largest single cost of a drain pass. With
the AVX2 sort, the daemon's CPU per million events at 100 k events/s fell by 3-7 %
(bench/endtoend.py; at 1 M events/s the difference was within the runs' noise).

numpy reads its dispatch switches from ``NPY_DISABLE_CPU_FEATURES`` once, at its first import.
So ai-analyticsd calls ``prefer_avx2_sort`` before anything imports numpy. It changes nothing:
- on other CPUs;
- where numpy has no AVX2 sort to fall back to (before 2.0: there the scalar sort would be
  slower still);
- where the operator has set ``NPY_DISABLE_CPU_FEATURES`` or ``NPY_ENABLE_CPU_FEATURES``
  (set it empty to keep numpy's own choice).
The switch turns off numpy's other AVX-512 kernels too; they fall back to AVX2. The one that
matters here is ``np.log`` of float64, which is about 4x slower without AVX-512 (15.8 against
66.7 us for 20,000 values on that VM). That costs the drain about 2.5 ns for each value it
buckets, and the sort saves more: a whole drain batch (read, validate, ``Statistics.add``) of
8,192 records took 1.40 ms against 1.54, and ``Statistics.add`` alone 1.00 ms against 1.12
(bench/aggregate_bench.py).
An embedded daemon never calls this: the host process's numpy is not ours to tune.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping
from importlib import metadata

DISABLE_VARIABLE = "NPY_DISABLE_CPU_FEATURES"
ENABLE_VARIABLE = "NPY_ENABLE_CPU_FEATURES"
CPUINFO = "/proc/cpuinfo"
ZEN4_FAMILY = 25  # AMD family 19h: Zen 3 (no AVX-512) and Zen 4

# numpy's dispatch targets that hold its AVX-512 kernels, by the first numpy version that names
# them so. A name that a version does not dispatch is refused with an ImportWarning, so each
# list holds exactly that version's names.
_LEGACY_AVX512 = ("AVX512F AVX512CD AVX512_KNL AVX512_KNM AVX512_SKX AVX512_CLX AVX512_CNL "
                  "AVX512_ICL")
AVX512_TARGETS: tuple[tuple[tuple[int, int], str], ...] = (
    ((2, 4), "X86_V4 AVX512_ICL AVX512_SPR"),
    ((2, 3), _LEGACY_AVX512 + " AVX512_SPR"),
    ((2, 0), _LEGACY_AVX512),
)


def is_zen4(cpuinfo: str) -> bool:
    """Whether ``cpuinfo`` (the text of /proc/cpuinfo) describes an AMD family 25 CPU that
    has AVX-512: Zen 4 (Zen 3, the same family, has no AVX-512)."""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        if not line.strip():
            if fields:
                break  # the first processor's block says it for all
            continue
        name, _, value = line.partition(":")
        fields[name.strip()] = value.strip()
    try:
        family = int(fields.get("cpu family", ""))
    except ValueError:
        return False
    return (fields.get("vendor_id") == "AuthenticAMD" and family == ZEN4_FAMILY
            and "avx512f" in fields.get("flags", "").split())


def avx512_targets(numpy_version: str) -> str | None:
    """The value of ``NPY_DISABLE_CPU_FEATURES`` that turns off the AVX-512 kernels of this
    numpy version; None before 2.0 (no AVX2 sort) or for a version that cannot be read."""
    try:
        major, minor = (int(part) for part in numpy_version.split(".")[:2])
    except ValueError:
        return None
    for first, names in AVX512_TARGETS:
        if (major, minor) >= first:
            return names
    return None


def decide(environ: Mapping[str, str], cpuinfo: str, numpy_version: str) -> str | None:
    """The ``NPY_DISABLE_CPU_FEATURES`` value to set, or None to leave numpy as it is."""
    if DISABLE_VARIABLE in environ or ENABLE_VARIABLE in environ or not is_zen4(cpuinfo):
        return None
    return avx512_targets(numpy_version)


def prefer_avx2_sort(environ: MutableMapping[str, str] = os.environ) -> str | None:
    """Set ``NPY_DISABLE_CPU_FEATURES`` in ``environ`` where ``decide`` says so; the value
    set, or None. Must run before numpy's first import in this process to take effect."""
    try:
        with open(CPUINFO, encoding="utf-8", errors="replace") as file:
            cpuinfo = file.read()
        numpy_version = metadata.version("numpy")
    except (OSError, metadata.PackageNotFoundError):
        return None
    value = decide(environ, cpuinfo, numpy_version)
    if value is not None:
        environ[DISABLE_VARIABLE] = value
    return value


__all__ = ["DISABLE_VARIABLE", "ENABLE_VARIABLE", "avx512_targets", "decide", "is_zen4",
           "prefer_avx2_sort"]
