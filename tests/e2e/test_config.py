"""Config files through every front end that loads one: each user mistake is one line
naming the key and the bad value, exit code 2, alike from the real daemon (``python -m
ai_analytics.daemon``), the CLI through click's CliRunner (``config check`` and ``status
--config``) and the installed ``ai-analytics`` script as a real subprocess; the script
accepts an empty file and the shipped config.yaml.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import pytest

from helpers import (
    SHIPPED_CONFIG,
    Outcome,
    assert_one_line_error,
    run_cli_runner,
    run_daemon,
    script,
)


def daemon_outcome(path: Path) -> Outcome:
    result = run_daemon(path)
    return Outcome("ai-analyticsd", result.returncode, result.stdout, result.stderr)


def run_cli_script(path: Path) -> Outcome:
    result = subprocess.run(
        [script("ai-analytics"), "config", "check", str(path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return Outcome("ai-analytics", result.returncode, result.stdout, result.stderr)


FRONT_ENDS: dict[str, Callable[[Path], Outcome]] = {
    "daemon": daemon_outcome,
    "cli-config-check": lambda path: run_cli_runner("config", "check", str(path)),
    "cli-status": lambda path: run_cli_runner("status", "--config", str(path)),
    "cli-script": run_cli_script,
}


class BadFile(NamedTuple):
    """A config file's text (None: no file at all) and what its error must say."""

    text: str | None
    needles: tuple[str, ...]
    guarded: bool = True  # append this test's namespace and state_dir (valid settings)


def bad_value(key: str, yaml_value: str, value: object) -> BadFile:
    """``key: yaml_value`` must be refused with a message showing the key and repr(value)."""
    return BadFile(f"{key}: {yaml_value}\n", (f": {key}: ", f"got {value!r}"))


BAD_FILES = {
    "unknown-key": BadFile("max_queue: 100\n", (": max_queue: unknown key",)),
    "string-for-int": bad_value("max_queue_size", '"lots"', "lots"),
    "float-for-int": bad_value("batch_size", "2.5", 2.5),
    "bool-for-float": bad_value("batch_timeout_seconds", "true", True),
    "list-for-bool": bad_value("enable_circuit_breaker", "[true]", [True]),
    "int-too-small": bad_value("max_queue_size", "15", 15),
    "int-too-big": bad_value("max_queue_size", "16777217", 16777217),
    "float-too-small": bad_value("snapshot_interval_seconds", "0.01", 0.01),
    "float-too-big": bad_value("stop_timeout_seconds", "601", 601),
    "float-nan": bad_value("batch_timeout_seconds", ".nan", float("nan")),
    "bad-on-full": bad_value("on_full", "block", "block"),
    "bad-log-level": bad_value("log_level", "verbose", "verbose"),
    "bad-namespace-dot": bad_value("namespace", "has.dot", "has.dot"),
    "bad-namespace-long": bad_value("namespace", "n" * 65, "n" * 65),
    "bad-trusted-uids": bad_value("trusted_uids", "[root]", ["root"]),
    "bad-yaml-syntax": BadFile(
        "batch_size: 100\nmax_queue_size: [16\nlog_level: info\n",
        ("not valid YAML", "line 3"),
        guarded=False,
    ),
    "top-level-list": BadFile(
        "- max_queue_size\n- 8192\n", ("must be a mapping of settings, got list",), guarded=False
    ),
    "missing-file": BadFile(None, ("file not found",)),
}


@pytest.mark.parametrize("front_end", sorted(FRONT_ENDS))
@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_config_is_one_line_exit_2(
    case: str, front_end: str, tmp_path: Path, namespace: str
) -> None:
    """Every front end refuses a bad config file with exit code 2 and one line on stderr
    that names the file, the key and the bad value (the line, for a YAML syntax error), and
    never a traceback."""
    bad = BAD_FILES[case]
    path = tmp_path / "config.yaml"
    if bad.text is not None:
        # Were the bad setting accepted, a daemon would start in this test's namespace and
        # state directory, never in the system's (and the subprocess timeout stops it).
        extra = ""
        if bad.guarded:
            if not bad.text.startswith("namespace:"):
                extra += f"namespace: {namespace}\n"
            extra += f"state_dir: {tmp_path / 'state'}\n"
        path.write_text(bad.text + extra)
    line = assert_one_line_error(FRONT_ENDS[front_end](path), str(path), *bad.needles)
    assert not (tmp_path / "state").exists(), line


def test_empty_file_passes_the_real_script(tmp_path: Path) -> None:
    """The installed ``ai-analytics config check`` accepts an empty file and says OK."""
    path = tmp_path / "config.yaml"
    path.write_text("")
    outcome = run_cli_script(path)
    assert outcome.exit_code == 0, outcome
    assert outcome.stdout == f"{path}: OK\n"
    assert "Traceback" not in outcome.stderr


def test_shipped_config_passes_config_check() -> None:
    """The shipped config.yaml passes ``ai-analytics config check`` (the real script)."""
    outcome = run_cli_script(SHIPPED_CONFIG)
    assert outcome.exit_code == 0, outcome
    assert outcome.stdout == f"{SHIPPED_CONFIG}: OK\n"
    assert outcome.stderr == ""
