"""The installed commands as real processes: ``--help`` and ``--version`` of each command and
subcommand, and ``status`` when there is nothing to show."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from helpers import VERSION, assert_not_running_message, script


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    ("argv", "prog"),
    [
        pytest.param(lambda: [script("ai-analyticsd")], "ai-analyticsd", id="ai-analyticsd"),
        pytest.param(
            lambda: [sys.executable, "-m", "ai_analytics.daemon"], "ai-analyticsd", id="python-m"
        ),
        pytest.param(lambda: [script("ai-analytics")], "ai-analytics", id="ai-analytics"),
    ],
)
def test_version_option(argv: Callable[[], list[str]], prog: str) -> None:
    """``--version`` of each command exits 0 and prints its name and the package version."""
    result = run(*argv(), "--version")
    assert result.returncode == 0, result
    assert result.stdout == f"{prog}, version {VERSION}\n"
    assert result.stderr == ""


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        pytest.param(
            lambda: [script("ai-analyticsd"), "--help"], "Drain the shared-memory lanes",
            id="ai-analyticsd",
        ),
        pytest.param(
            lambda: [sys.executable, "-m", "ai_analytics.daemon", "-h"], "--config",
            id="python-m",
        ),
        pytest.param(lambda: [script("ai-analytics"), "--help"], "status", id="ai-analytics"),
        pytest.param(
            lambda: [script("ai-analytics"), "status", "--help"], "--json", id="status"
        ),
        pytest.param(
            lambda: [script("ai-analytics"), "config", "check", "--help"], "PATH",
            id="config-check",
        ),
    ],
)  # fmt: skip
def test_help_option(argv: Callable[[], list[str]], expected: str) -> None:
    """``--help`` (and ``-h``) of each command and subcommand exits 0 with its usage."""
    result = run(*argv())
    assert result.returncode == 0, result
    assert result.stdout.startswith("Usage: ")
    assert expected in result.stdout
    assert result.stderr == ""


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_status_without_state_exits_3(
    as_json: bool, make_config: Callable[..., Path], state_dir: Path
) -> None:
    """``ai-analytics status`` with a config whose state_dir holds no state (here: does not
    exist) exits 3 with one clear line naming the directory, and no traceback."""
    path = make_config()
    assert not state_dir.exists()
    result = run(
        script("ai-analytics"), "status", "--config", str(path), *(["--json"] if as_json else [])
    )
    assert_not_running_message(result.returncode, result.stdout, result.stderr, state_dir)
