"""The two commands' surface: help, version, and ``status`` when there is nothing to show."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import pytest
from click.testing import CliRunner

from ai_analytics.cli import main as cli
from ai_analytics.daemon import main as daemon_main

from helpers import invoke, script

VERSION = version("ai-analytics")
EXIT_NOT_RUNNING = 3


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=60)


def test_version_is_a_real_version() -> None:
    """The version under test comes from the installed metadata (not a fallback)."""
    assert VERSION and VERSION != "unknown"
    assert VERSION[0].isdigit()


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


def test_help_and_version_through_cli_runner() -> None:
    """The same through click's CliRunner, for both entry points: help lists the
    subcommands and every option; version prints the installed version."""
    runner = CliRunner()
    top = runner.invoke(cli.main, ["--help"])
    assert top.exit_code == 0
    for command in ("status", "config", "demo"):
        assert command in top.stdout
    assert runner.invoke(cli.main, ["--version"]).stdout == f"ai-analytics, version {VERSION}\n"
    daemon = runner.invoke(daemon_main.main, ["--help"])
    assert daemon.exit_code == 0
    assert "--config" in daemon.stdout and "AI_ANALYTICS_CONFIG" in daemon.stdout
    version_out = runner.invoke(daemon_main.main, ["--version"])
    assert version_out.exit_code == 0
    assert version_out.stdout == f"ai-analyticsd, version {VERSION}\n"
    check = runner.invoke(cli.main, ["config", "check", "--help"])
    assert check.exit_code == 0 and "Validate PATH" in check.stdout


def assert_not_running_message(exit_code: int, stdout: str, stderr: str, state_dir: Path) -> None:
    assert "Traceback" not in stderr, stderr
    assert exit_code == EXIT_NOT_RUNNING, (exit_code, stdout, stderr)
    assert stdout == ""
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("ai-analytics: no state in ")
    assert str(state_dir) in lines[0]
    assert "not running" in lines[0]


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


def test_status_with_empty_state_dir_exits_3(
    make_config: Callable[..., Path], state_dir: Path
) -> None:
    """An existing but empty state_dir is "no state" too (CliRunner, and the directory is
    left as it was)."""
    state_dir.mkdir()
    path = make_config()
    result = invoke("status", "--config", str(path))
    assert_not_running_message(result.exit_code, result.stdout, result.stderr, state_dir)
    assert list(state_dir.iterdir()) == []
