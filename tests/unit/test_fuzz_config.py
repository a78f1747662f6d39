"""Config files of any shape: Hypothesis writes YAML mappings of random keys to random values
(and YAML-ish text of any kind); ``ai-analytics config check`` accepts the file or refuses it
with exit 2 and one line naming the key, never a traceback. The loader underneath either
returns a Config or raises ConfigError, nothing else.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ai_analytics.core.config import SETTINGS, Config, ConfigError, load_config

from helpers import EXIT_CONFIG, assert_one_line_error, run_cli_runner

FUZZ = settings(max_examples=80, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])
_files = itertools.count()

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(-(10**400), 10**400),
    st.floats(), st.text(max_size=30), st.sampled_from(["drop", "info", "1m", "127.0.0.1"]),
)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=6)
keys = st.one_of(st.sampled_from(sorted(SETTINGS)), st.text(max_size=20), st.integers(),
                 st.booleans(), st.none())
mappings = st.dictionaries(keys, values, max_size=4)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / f"fuzz-{next(_files)}.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    return path


def check_file(path: Path) -> None:
    """The loader gives a Config or a ConfigError; the CLI prints OK or one line, exit 2."""
    try:
        loaded = load_config(path)
    except ConfigError as exc:
        loaded = exc
    assert isinstance(loaded, (Config, ConfigError))
    outcome = run_cli_runner("config", "check", str(path))
    if isinstance(loaded, Config):
        assert outcome.exit_code == 0 and outcome.stdout == f"{path}: OK\n", outcome
    else:
        line = assert_one_line_error(outcome, str(path))
        if loaded.key is not None:  # the line names the key, printably
            assert loaded.key.isprintable() and f": {loaded.key}: " in line, line


@FUZZ
@given(mapping=mappings)
@example(mapping={"batch_timeout_seconds": 10**400})  # was OverflowError in math.isnan
@example(mapping={"insight_queue_fill": -(10**400)})
@example(mapping={"bad\nkey": 1})  # was a two-line message
@example(mapping={"": None})  # was a line that did not show the key
def test_any_mapping_is_accepted_or_refused_in_one_line(tmp_path, mapping):
    check_file(write(tmp_path, yaml.safe_dump(mapping, allow_unicode=True)))


@FUZZ
@given(text=st.text(st.characters(codec="utf-8"), max_size=200) | st.lists(
    st.sampled_from(["a: 1\n", "- x\n", "{", "}", "[", "]", ": ", "&a ", "*a ", "? ", "|\n",
                     "!!python/name:os.system ", "\t", "'", '"', "\\", "\x00", "#", "---\n",
                     "max_lanes: "]),
    max_size=12).map("".join))
def test_any_text_is_accepted_or_refused_in_one_line(tmp_path, text):
    check_file(write(tmp_path, text))


def test_a_python_tag_is_refused_not_run(tmp_path):
    """safe_load: a tag that would call a function in yaml.load is a YAML error."""
    marker = tmp_path / "ran"
    path = write(tmp_path, f"max_lanes: !!python/object/apply:os.system ['touch {marker}']\n")
    assert_one_line_error(run_cli_runner("config", "check", str(path)), "not valid YAML")
    assert not marker.exists()
    assert EXIT_CONFIG == 2
