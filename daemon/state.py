"""The daemon's state file: written atomically, read by ``ai-analytics status`` and by the
next daemon, which restores its counters from it.

The schema is documented in docs/snapshot.md; ``SCHEMA_VERSION`` changes with it.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile

from .errors import StateError

SCHEMA_VERSION = 1
STATE_FILE = "state.json"


def state_path(state_dir: str) -> str:
    return os.path.join(state_dir, STATE_FILE)


def write_state(state_dir: str, document: dict[str, object]) -> None:
    """Write ``document`` so that a reader sees the old file or the new one, never a mix."""
    try:
        os.makedirs(state_dir, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".state.", suffix=".tmp", dir=state_dir)
    except OSError as exc:
        raise StateError(f"cannot write state in {state_dir}: {exc}") from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(document, f, separators=(",", ":"))
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, state_path(state_dir))
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise StateError(f"cannot write state in {state_dir}: {exc}") from exc


def read_state(state_dir: str) -> dict[str, object] | None:
    """The last state document, None if there is none; StateError if it is unreadable."""
    path = state_path(state_dir)
    try:
        with open(path, encoding="utf-8") as f:
            document = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise StateError(f"cannot read {path}: {exc}; move it aside to start counting from zero"
                         ) from exc
    if not isinstance(document, dict) or document.get("schema_version") != SCHEMA_VERSION:
        raise StateError(f"{path} is not a version {SCHEMA_VERSION} state file; move it aside "
                         "to start counting from zero")
    return document
