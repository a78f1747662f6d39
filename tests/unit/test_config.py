"""Config files in this process: the loader (``load_config``, ``config_from_mapping``) and
``ai-analytics config check`` through click's CliRunner. A YAML mistake is one line, an empty
file means the defaults, and the shipped config.yaml is the defaults, each written out and
documented. (The end-to-end tests take every bad file through every front end.)
"""

from __future__ import annotations

import os
from pathlib import Path

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
    SHIPPED_CONFIG,
    assert_one_line_error,
    run_cli_runner,
)


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
