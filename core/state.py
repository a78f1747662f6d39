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

import orjson

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


def document_json(document: SnapshotDocument) -> bytes:
    """The bytes of the state file, which are also the ``/status`` body: the document as
    compact, strict JSON and a newline. The daemon encodes each document once, for both.

    orjson writes it, not json: json's C encoder holds the GIL for the whole of one call
    (50-100 ms for a document of 1,024 series, ~3 MB), while a lane at 250 k events/s fills
    in 33 ms; encoded in pieces, the pieces' Python competes with the drain thread for the
    GIL at every numpy call of a drain pass. orjson writes the same document in a few
    milliseconds. Keys that are not strings become strings as json writes them ("1",
    "true", "null"); NaN and infinities, which JSON lacks, become null.

    What orjson refuses, json writes, in one call: integers beyond 64 bits (the counters of a
    hostile lane's header, summed) and text that is not valid Unicode (NaN there as json
    writes it, the daemon's documents having none)."""
    try:
        return orjson.dumps(document, option=orjson.OPT_NON_STR_KEYS
                            | orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_APPEND_NEWLINE)
    except TypeError:
        return _encode_any(document).encode() + b"\n"


# A document is a tree the daemon builds (no cycles to look for).
_encode_any = json.JSONEncoder(separators=(",", ":"), check_circular=False).encode


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
