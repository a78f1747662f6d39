"""Config files: every user mistake is one line naming the key and the bad value, exit code 2.

Each bad file goes through every front end that loads a config: the real daemon
(``python -m ai_analytics.daemon``), the CLI through click's CliRunner (``config check`` and
``status --config``) and the installed ``ai-analytics`` script as a real subprocess.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import pytest
import yaml

from ai_analytics.core.config import (
    SETTINGS,
    Config,
    ConfigError,
    config_from_mapping,
    load_config,
)
from ai_analytics.core.errors import AnalyticsError

from helpers import (
    REPO,
    Outcome,
    assert_one_line_error,
    run_cli_runner,
    run_daemon,
    script,
)

SHIPPED_CONFIG = REPO / "config.yaml"


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


def test_control_character_in_yaml_is_one_line(tmp_path: Path) -> None:
    """A file holding a control character (a YAML reader error, not a parser error) is
    refused with a one-line message, like every other YAML mistake."""
    path = tmp_path / "config.yaml"
    path.write_text("log_level: \x01\n")
    assert_one_line_error(run_cli_runner("config", "check", str(path)), "not valid YAML")


@pytest.mark.parametrize("text", ["", "\n", "# only a comment\n", "---\n"])
def test_empty_file_means_defaults(text: str, tmp_path: Path, namespace: str) -> None:
    """An empty file (or one with only comments) is valid and gives exactly the defaults."""
    path = tmp_path / "config.yaml"
    path.write_text(text)
    assert load_config(path) == Config()
    assert load_config(path).namespace == namespace  # the default follows the environment
    outcome = run_cli_runner("config", "check", str(path))
    assert outcome.exit_code == 0, outcome
    assert outcome.stdout == f"{path}: OK\n"
    assert outcome.stderr == ""


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


def test_shipped_config_is_the_defaults(namespace: str, monkeypatch: pytest.MonkeyPatch,
                                        tmp_path: Path) -> None:
    """The shipped config.yaml holds every default: loading it equals ``Config()``, and its
    namespace and segment_dir follow $AI_ANALYTICS_NAMESPACE and $AI_ANALYTICS_SEGMENT_DIR,
    as the workers' do."""
    loaded = load_config(SHIPPED_CONFIG)
    assert loaded == Config()
    assert loaded.namespace == namespace and loaded.segment_dir == "/dev/shm"
    monkeypatch.setenv("AI_ANALYTICS_SEGMENT_DIR", str(tmp_path))
    assert load_config(SHIPPED_CONFIG).segment_dir == str(tmp_path)


def test_shipped_config_documents_every_setting() -> None:
    """Every setting appears in the shipped config.yaml with a comment above it; namespace and
    segment_dir are the ones left commented out (their defaults come from the environment,
    as the workers' do)."""
    text = SHIPPED_CONFIG.read_text()
    data = yaml.safe_load(text)
    assert set(data) == set(SETTINGS) - {"namespace", "segment_dir"}
    lines = text.splitlines()
    assert "# namespace: ai-analytics" in lines and "# segment_dir: /dev/shm" in lines
    for key in data:
        (index,) = [i for i, line in enumerate(lines) if line.startswith(f"{key}:")]
        assert lines[index - 1].startswith("#"), f"{key} has no comment above it"


def test_shipped_config_values_are_written_out() -> None:
    """config.yaml states each default explicitly (not by leaving keys out): a few spot checks
    against the dataclass, so a changed default shows up here."""
    data = yaml.safe_load(SHIPPED_CONFIG.read_text())
    defaults = Config()
    for key, value in data.items():
        expected = getattr(defaults, key)
        assert (tuple(value) if isinstance(value, list) else value) == expected, key
    assert data["max_queue_size"] == 8192
    assert data["on_full"] == "drop"


def test_config_from_mapping_raises_config_error_with_key_and_value() -> None:
    """A bad value raises ConfigError, which is also a ValueError (and an AnalyticsError),
    carrying the key and the value as attributes and naming both in its message."""
    with pytest.raises(ValueError) as caught:
        config_from_mapping({"log_level": "info", "batch_size": "many"})
    error = caught.value
    assert isinstance(error, ConfigError)
    assert isinstance(error, AnalyticsError)
    assert error.key == "batch_size"
    assert error.value == "many"
    assert str(error).startswith("batch_size: ")
    assert "'many'" in str(error)


def test_config_from_mapping_unknown_key() -> None:
    """An unknown key raises ConfigError with that key and its value as attributes, and the
    message lists the known keys."""
    with pytest.raises(ConfigError) as caught:
        config_from_mapping({"batch_sise": 10})
    assert caught.value.key == "batch_sise"
    assert caught.value.value == 10
    assert "batch_size" in str(caught.value)


def test_config_from_mapping_accepts_good_values() -> None:
    """Valid values are converted and kept: ints for float settings become floats, a list of
    uids becomes a tuple."""
    config = config_from_mapping(
        {"batch_timeout_seconds": 2, "trusted_uids": [1001, 1002], "on_full": "overwrite"}
    )
    assert config.batch_timeout_seconds == 2.0
    assert isinstance(config.batch_timeout_seconds, float)
    assert config.trusted_uids == (1001, 1002)
    assert config.on_full == "overwrite"


def test_missing_file_error_names_the_path(tmp_path: Path) -> None:
    """load_config of a missing file raises ConfigError naming the path (it never exits)."""
    path = tmp_path / "absent.yaml"
    with pytest.raises(ConfigError, match="file not found") as caught:
        load_config(path)
    assert caught.value.source == os.fspath(path)
