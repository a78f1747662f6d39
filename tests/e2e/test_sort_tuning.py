"""ai-analyticsd keeps numpy off its AVX-512 sort on AMD Zen 4 (daemon/sort_tuning.py): the
switch's names are the ones the installed numpy dispatches, and a real daemon applies it (and
says so) exactly where this machine's CPU calls for it, unless the operator has chosen."""

from __future__ import annotations

import json
import platform
from importlib import metadata
from pathlib import Path

import pytest

from ai_analytics.daemon.sort_tuning import DISABLE_VARIABLE, avx512_targets, decide

from helpers import run_python

ANNOUNCED = "numpy's AVX-512 kernels are off in this process"


@pytest.mark.skipif(platform.machine() != "x86_64", reason="numpy's x86 dispatch names")
def test_the_switch_names_what_this_numpy_dispatches(namespace: str) -> None:
    """numpy takes every name (an unknown one would be an ImportWarning, an error here) and
    reports each of those features off."""
    names = avx512_targets(metadata.version("numpy"))
    if names is None:
        pytest.skip("this numpy has no AVX2 sort: the daemon leaves it alone")
    result = run_python("""
        import json, os, sys
        os.environ["NPY_DISABLE_CPU_FEATURES"] = sys.argv[1]
        import numpy
        from numpy._core._multiarray_umath import __cpu_features__
        print(json.dumps({name: __cpu_features__[name] for name in sys.argv[1].split()}))
    """, namespace, args=[names])
    features = json.loads(result.stdout)
    assert sorted(features) == sorted(names.split())
    assert not any(features.values())


def test_a_real_daemon_applies_it_where_the_cpu_calls_for_it(
        daemon_factory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DISABLE_VARIABLE, raising=False)
    monkeypatch.delenv("NPY_ENABLE_CPU_FEATURES", raising=False)
    expected = decide({}, Path("/proc/cpuinfo").read_text(errors="replace"),
                      metadata.version("numpy"))
    daemon = daemon_factory()
    log = daemon.log()
    if expected is None:
        assert ANNOUNCED not in log
    else:
        assert f"{ANNOUNCED} ({DISABLE_VARIABLE}={expected})" in log
    daemon.state_after(lambda doc: True, what="a snapshot")
    assert daemon.stop() == 0


def test_the_operators_choice_stands(daemon_factory) -> None:
    """Set, even empty, the variable is the operator's: the daemon leaves it and says nothing."""
    daemon = daemon_factory(env={DISABLE_VARIABLE: ""})
    daemon.state_after(lambda doc: True, what="a snapshot")
    assert daemon.stop() == 0
    assert ANNOUNCED not in daemon.log()
