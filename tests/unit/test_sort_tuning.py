"""Which CPUs and numpy versions ai-analyticsd keeps off numpy's AVX-512 sort
(daemon/sort_tuning.py), from the text of /proc/cpuinfo."""

from __future__ import annotations

import pytest

from ai_analytics.daemon.sort_tuning import (
    DISABLE_VARIABLE,
    ENABLE_VARIABLE,
    avx512_targets,
    decide,
    is_zen4,
)


def cpuinfo(vendor: str, family: int, flags: str, processors: int = 2) -> str:
    block = (f"processor\t: {{n}}\nvendor_id\t: {vendor}\ncpu family\t: {family}\n"
             f"model\t\t: 17\nmodel name\t: a CPU\nflags\t\t: fpu sse2 {flags}\n\n")
    return "".join(block.format(n=n) for n in range(processors))


ZEN4 = cpuinfo("AuthenticAMD", 25, "avx2 avx512f avx512bw avx512vl")
NUMPY = "2.4.6"


@pytest.mark.parametrize(("text", "expected"), [
    (ZEN4, True),
    (cpuinfo("AuthenticAMD", 25, "avx2"), False),  # Zen 3: the same family, no AVX-512
    (cpuinfo("AuthenticAMD", 26, "avx2 avx512f"), False),  # Zen 5 sorts fast with AVX-512
    (cpuinfo("GenuineIntel", 6, "avx2 avx512f"), False),  # AVX-512 is numpy's best there
    (cpuinfo("AuthenticAMD", 25, "avx2 avx512fx"), False),  # a flag is a whole word
    ("", False),
    ("cpu family\t: twenty-five\nvendor_id\t: AuthenticAMD\nflags\t: avx512f\n", False),
    ("processor\t: 0\nBogoMIPS\t: 50.00\nCPU implementer\t: 0x41\n", False),  # arm64
])
def test_only_zen4_is_recognised(text: str, expected: bool) -> None:
    assert is_zen4(text) is expected


def test_the_first_processor_speaks_for_all() -> None:
    """A later block (a hypervisor's odd report) does not change the answer."""
    assert is_zen4(ZEN4 + cpuinfo("GenuineIntel", 6, "avx2"))


@pytest.mark.parametrize(("version", "expected"), [
    ("2.4.6", "X86_V4 AVX512_ICL AVX512_SPR"),
    ("2.5.0rc1", "X86_V4 AVX512_ICL AVX512_SPR"),
    ("3.0.0", "X86_V4 AVX512_ICL AVX512_SPR"),
    ("2.3.5", "AVX512F AVX512CD AVX512_KNL AVX512_KNM AVX512_SKX AVX512_CLX AVX512_CNL "
              "AVX512_ICL AVX512_SPR"),
    ("2.0.2", "AVX512F AVX512CD AVX512_KNL AVX512_KNM AVX512_SKX AVX512_CLX AVX512_CNL "
              "AVX512_ICL"),
    ("1.26.4", None),  # no AVX2 sort: the scalar one would be slower than AVX-512's
    ("2", None),
    ("two.four", None),
])
def test_the_names_follow_numpys_version(version: str, expected: str | None) -> None:
    assert avx512_targets(version) == expected


def test_decided_only_on_zen4_and_only_when_the_operator_has_not() -> None:
    assert decide({}, ZEN4, NUMPY) == "X86_V4 AVX512_ICL AVX512_SPR"
    assert decide({}, cpuinfo("GenuineIntel", 6, "avx512f"), NUMPY) is None
    assert decide({}, ZEN4, "1.26.4") is None
    assert decide({DISABLE_VARIABLE: ""}, ZEN4, NUMPY) is None  # empty: numpy's own choice
    assert decide({DISABLE_VARIABLE: "AVX512_SPR"}, ZEN4, NUMPY) is None
    assert decide({ENABLE_VARIABLE: "X86_V3"}, ZEN4, NUMPY) is None
