"""The linter's configuration catches what must never be in the product: code that runs what
it reads (pickle, marshal, shelve, eval, exec, a shell, an unsafe YAML load) and SQL built from
text. CI runs ``ruff check .`` over the whole tree; these prove the rules it runs are on for
the product's folders, so that switching one off fails here rather than silently."""

from __future__ import annotations

import re
import subprocess

import pytest

from helpers import REPO, script


def ruff_codes(source: str, path: str) -> set[str]:
    """The codes ruff reports for ``source`` as if it were the file ``path`` of this repo."""
    result = subprocess.run(
        [script("ruff"), "check", "--no-cache", "--output-format", "concise", "--stdin-filename",
         path, "-"],
        input=source, capture_output=True, text=True, cwd=REPO, check=False,
    )
    assert result.returncode in (0, 1), result.stderr
    codes = {line.split()[1] for line in result.stdout.splitlines() if line.startswith(path)}
    return {code for code in codes if re.fullmatch(r"S\d+|TID\d+", code)}


@pytest.mark.parametrize(("source", "code"), [
    ("import pickle\n", "TID251"),
    ("from pickle import loads\n", "TID251"),
    ("import marshal\n", "TID251"),
    ("import shelve\n", "TID251"),
    ("eval(input())\n", "S307"),
    ("exec(input())\n", "S102"),
    ("import os\nos.system('ls')\n", "S605"),
    ("import os\nos.popen('ls')\n", "S605"),
    ("import subprocess\nsubprocess.run('ls', shell=True)\n", "S602"),
    ("import yaml\nyaml.load(open('c'))\n", "S506"),
    ("import yaml\nyaml.load(open('c'), Loader=yaml.Loader)\n", "S506"),
    ("import yaml\nyaml.unsafe_load(open('c'))\n", "TID251"),
    ("import yaml\nyaml.full_load(open('c'))\n", "TID251"),
    ("def q(c, t):\n    return c.execute(f'SELECT * FROM {t}')\n", "S608"),
])
@pytest.mark.parametrize("folder", ["client", "core", "daemon", "cli"])
def test_each_dangerous_use_fails_the_lint(folder: str, source: str, code: str) -> None:
    assert code in ruff_codes(source, f"{folder}/probe.py")


def test_safe_equivalents_pass() -> None:
    source = ("import json\nimport sqlite3\nimport yaml\n\n"
              "yaml.safe_load(open('c'))\nyaml.load(open('c'), Loader=yaml.SafeLoader)\n"
              "sqlite3.connect(':memory:').execute('SELECT ?', (1,))\njson.loads('1')\n")
    assert ruff_codes(source, "daemon/probe.py") == set()
