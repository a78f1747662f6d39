"""The two commands' surface in this process (click's CliRunner): help, version, and
``status`` when there is nothing to show."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from click.testing import CliRunner

from ai_analytics.cli import main as cli
from ai_analytics.daemon import main as daemon_main

from helpers import VERSION, assert_not_running_message, invoke


def test_version_is_a_real_version() -> None:
    """The version under test comes from the installed metadata (not a fallback)."""
    assert VERSION and VERSION != "unknown"
    assert VERSION[0].isdigit()


def test_help_and_version_through_cli_runner() -> None:
    """Help and version through click's CliRunner, for both entry points: help lists the
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
