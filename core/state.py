"""The daemon's state file: written atomically, read by ``ai-analytics status`` and by the
next daemon, which restores its counters from it.

The schema is documented in docs/snapshot.md; ``SCHEMA_VERSION`` changes with it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import json
import os
import tempfile
from typing import cast

from ai_analytics.core.config import Config
from ai_analytics.core.document import SnapshotDocument
from ai_analytics.core.errors import StateError
from ai_analytics.core.namespace_lock import daemon_running

SCHEMA_VERSION = 1
STATE_FILE = "state.json"
# The temporary file of a write in progress: ".state.<random>.tmp".
TEMP_PREFIX, TEMP_SUFFIX = ".state.", ".tmp"


def state_path(state_dir: str) -> str:
    return os.path.join(state_dir, STATE_FILE)


# A document is a tree the daemon builds (no cycles to look for): 20-25 % faster without.
_encode = json.JSONEncoder(separators=(",", ":"), check_circular=False).encode
# Containers this deep or deeper are encoded in one C call each (an operation's windows, a
# histogram row: a few kB, well under a millisecond).
SPLIT_DEPTH = 3


def encode_document(document: SnapshotDocument) -> str:
    """``document`` as compact JSON, the text ``json.dumps(document, separators=(",", ":"))``
    writes, but encoded in pieces.

    json's C encoder holds the GIL for the whole of one call: for a document of 1,024 series
    (~3 MB) that is 50-100 ms in which the daemon's drain loop, on another thread, cannot run,
    and a lane at 250 k events/s fills in 33 ms. The top levels are joined here, each piece
    below ``SPLIT_DEPTH`` encoded by one C call, and the interpreter can switch threads
    between them (the longest hold at 1,024 series is ~8 ms)."""
    return _pieces(document, 0)


def _pieces(value: object, depth: int) -> str:
    if depth < SPLIT_DEPTH:
        if type(value) is dict and all(type(key) is str for key in value):
            return "{" + ",".join(f"{_encode(key)}:{_pieces(item, depth + 1)}"
                                  for key, item in value.items()) + "}"
        if type(value) is list:
            return "[" + ",".join(_pieces(item, depth + 1) for item in value) + "]"
    return _encode(value)


def document_json(document: SnapshotDocument) -> bytes:
    """The bytes of the state file, which are also the ``/status`` body: ``encode_document``
    and a newline. The daemon encodes each document once, for both."""
    return encode_document(document).encode() + b"\n"


def write_state(state_dir: str, document: SnapshotDocument, encoded: bytes | None = None
                ) -> None:
    """Write ``document`` (``encoded``: its ``document_json``, when the caller has it) so that
    a reader sees the old file or the new one, never a mix."""
    try:
        os.makedirs(state_dir, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX, dir=state_dir)
    except OSError as exc:
        raise StateError(f"cannot write state in {state_dir}: {exc}") from exc
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(encoded if encoded is not None else document_json(document))
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, state_path(state_dir))
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise StateError(f"cannot write state in {state_dir}: {exc}") from exc


def remove_unfinished_writes(state_dir: str) -> int:
    """Remove the temporary files of writes that a killed daemon never finished (each as big
    as a state file: they would pile up, one per crash). Only while holding the namespace, so
    that no write is in progress. Returns how many went."""
    pattern = os.path.join(glob.escape(state_dir), f"{TEMP_PREFIX}*{TEMP_SUFFIX}")
    removed = 0
    for path in glob.glob(pattern):
        with contextlib.suppress(OSError):
            os.unlink(path)
            removed += 1
    return removed


def read_state(state_dir: str) -> SnapshotDocument | None:
    """The last state document, None if there is none; StateError if it is unreadable.

    Only its schema version is checked: the rest may be damaged or written by another
    release, which is why readers that must not fail read it through the tolerant readers of
    ``ai_analytics.core.document``."""
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
    return cast(SnapshotDocument, document)


@dataclasses.dataclass
class StatusReport:
    running: bool
    document: SnapshotDocument | None


def load_status(config: Config) -> StatusReport:
    """The last state document of the configured daemon, with ``daemon.running`` made true."""
    document = read_state(config.state_dir)
    running = daemon_running(config.namespace, config.segment_dir)
    if document is not None:
        # As a plain dict: a damaged file may lack "daemon".
        daemon = cast(dict[str, object], document).setdefault("daemon", {})
        assert isinstance(daemon, dict)
        daemon["running"] = running
    return StatusReport(running, document)


def get_performance_snapshot(config: Config | None = None) -> SnapshotDocument | None:
    """The latest snapshot of the daemon that ``config`` describes (defaults: the built-in
    config and $AI_ANALYTICS_NAMESPACE), or None if it has never written one. Inside the
    daemon's own process, ``Daemon.get_performance_snapshot()`` computes it afresh."""
    return load_status(config or Config()).document
