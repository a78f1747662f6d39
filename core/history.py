"""A bounded history of snapshots: ``<state_dir>/history.sqlite3``, written by the daemon,
read by ``ai-analytics history``.

The daemon appends one snapshot per snapshot interval: the event totals, and for every
(operation, model) series the flattened window statistics. ``enforce_retention`` then keeps
the file within ``history_max_age_seconds`` and ``history_max_megabytes``. The command line
opens the file read-only (``mode=ro``) while the daemon writes: WAL mode lets a reader see the
last committed snapshot without waiting for, or blocking, the writer.

Schema, version 2 (``SCHEMA_VERSION``; the meta table holds it). Version 1 had no
``no_lane`` column: the daemon adds it when it opens such a file, and the reader, which
reads only ``series``, takes both::

    PRAGMA auto_vacuum = INCREMENTAL   -- set before the first table: deleted pages can be
                                       -- returned to the file system (incremental_vacuum)
    PRAGMA journal_mode = WAL          -- persistent; readers never block the writer
    PRAGMA synchronous = NORMAL        -- per connection, like foreign_keys = ON

    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT                     -- ('schema_version', '2')
    );
    CREATE TABLE snapshots (
        id               INTEGER PRIMARY KEY,
        unix             REAL NOT NULL,     -- when the snapshot was taken, Unix seconds
        interval_seconds REAL NOT NULL,     -- the window its statistics cover
        received         INTEGER,           -- event totals since the daemon's state began,
        dropped          INTEGER,           --   as in state.json "events"
        overwritten      INTEGER,
        invalid          INTEGER,
        lost_on_restart  INTEGER,
        pending          INTEGER,
        no_lane          INTEGER            -- NULL in rows written by schema version 1
    );
    CREATE INDEX snapshots_unix ON snapshots (unix);
    CREATE TABLE series (
        snapshot_id INTEGER NOT NULL REFERENCES snapshots (id) ON DELETE CASCADE,
        operation   TEXT NOT NULL,
        model       TEXT NOT NULL,
        <the columns of COLUMNS, in order>,
        PRIMARY KEY (snapshot_id, operation, model)
    ) WITHOUT ROWID;
    CREATE INDEX series_operation_model ON series (operation, model, snapshot_id);

The series columns, each from a path in the window statistics (``None`` stays NULL, and so
does NaN; INTEGER columns are counts, REAL columns rates, ratios and milliseconds):

    count INTEGER              count                 successes INTEGER          successes
    errors INTEGER             errors                error_rate REAL            error_rate
    throughput_per_s REAL      throughput_per_s
    latency_mean_ms REAL       latency_ms.mean       latency_min_ms REAL        latency_ms.min
    latency_max_ms REAL        latency_ms.max        latency_p50_ms REAL        latency_ms.p50
    latency_p90_ms REAL        latency_ms.p90        latency_p95_ms REAL        latency_ms.p95
    latency_p99_ms REAL        latency_ms.p99        latency_p999_ms REAL       latency_ms.p999
    quality_count INTEGER      quality.count         quality_mean REAL          quality.mean
    quality_min REAL           quality.min           quality_p10 REAL           quality.p10
    cache_lookups INTEGER      cache.lookups         cache_hits INTEGER         cache.hits
    cache_hit_rate REAL        cache.hit_rate
    ttft_count INTEGER         ttft_ms.count         ttft_mean_ms REAL          ttft_ms.mean
    ttft_p50_ms REAL           ttft_ms.p50           ttft_p90_ms REAL           ttft_ms.p90
    ttft_p99_ms REAL           ttft_ms.p99
    queue_count INTEGER        queue_ms.count        queue_mean_ms REAL         queue_ms.mean
    queue_p50_ms REAL          queue_ms.p50          queue_p90_ms REAL          queue_ms.p90
    queue_p99_ms REAL          queue_ms.p99
    tokens_in INTEGER          tokens.in_total       tokens_out INTEGER         tokens.out_total
    tokens_in_per_s REAL       tokens.in_per_s       tokens_out_per_s REAL      tokens.out_per_s

The table ``series`` is clustered by snapshot, so dropping the oldest snapshots (retention)
and reading a time range are range operations; ``series_operation_model`` serves the
``--operation`` / ``--model`` filters.

Retention: snapshots older than ``max_age_seconds`` go first; then, while the used size,
``(page_count - freelist_count) * page_size``, exceeds ``max_megabytes``, the oldest
snapshots go in chunks (down to ``LOW_WATER`` of the limit, so that the next appends reuse
the freed pages instead of deleting again at once), never the newest one; the freed pages
are then returned with ``PRAGMA incremental_vacuum`` and a passive checkpoint. On disk there
is the database, its used size once the freed pages are checkpointed, and the WAL:
checkpointed every quarter of the limit (at least ``WAL_PAGES_MIN``, at most
``WAL_PAGES_MAX`` pages) and truncated to that size afterwards, unless a reader holds an old
snapshot open.

Every sqlite3 error becomes a ``StateError`` naming the file; every wait for a lock ends after
``timeout`` seconds, so a database locked by someone else cannot hang the daemon.
"""

from __future__ import annotations

import contextlib
import logging
import math
import numbers
import os
import re
import sqlite3
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

from ai_analytics.core.config import Config
from ai_analytics.core.document import WindowStats
from ai_analytics.core.errors import StateError
from ai_analytics.core.outcomes import OUTCOMES
from ai_analytics.core.times import iso_utc

log = logging.getLogger("ai_analytics.daemon")

SCHEMA_VERSION = 2
# Versions a file may have: older ones differ only in columns of ``snapshots`` (see above).
READABLE_VERSIONS = ("1", "2")
HISTORY_FILE = "history.sqlite3"
DEFAULT_TIMEOUT_SECONDS = 5.0
# After a size-triggered deletion the used size is brought down to this share of the limit.
LOW_WATER = 0.9
# The WAL is checkpointed every quarter of the size limit, between these bounds in pages
# (SQLite's default is 1000), and truncated to that size after a checkpoint.
WAL_PAGES_MIN = 100
WAL_PAGES_MAX = 1000


SQLITE_MAX_INTEGER = 2**63 - 1


def _integer(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"must be an integer or None, got {value!r}")
    return int(value)


def _real(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"must be a number or None, got {value!r}")
    return float(value)


_CONVERT: dict[str, Callable[[object], Any]] = {"INTEGER": _integer, "REAL": _real}


class Column(NamedTuple):
    """One flat column of ``series``: its name, where it is in the window stats, its type."""

    name: str
    path: tuple[str, ...]
    sql_type: str


def _columns(*specs: tuple[str, str, str]) -> tuple[Column, ...]:
    return tuple(Column(name, tuple(path.split(".")), sql_type) for name, path, sql_type in specs)


# The one list that the schema, append and query are built from.
COLUMNS: tuple[Column, ...] = _columns(
    ("count", "count", "INTEGER"),
    ("successes", "successes", "INTEGER"),
    ("errors", "errors", "INTEGER"),
    ("error_rate", "error_rate", "REAL"),
    ("throughput_per_s", "throughput_per_s", "REAL"),
    ("latency_mean_ms", "latency_ms.mean", "REAL"),
    ("latency_min_ms", "latency_ms.min", "REAL"),
    ("latency_max_ms", "latency_ms.max", "REAL"),
    ("latency_p50_ms", "latency_ms.p50", "REAL"),
    ("latency_p90_ms", "latency_ms.p90", "REAL"),
    ("latency_p95_ms", "latency_ms.p95", "REAL"),
    ("latency_p99_ms", "latency_ms.p99", "REAL"),
    ("latency_p999_ms", "latency_ms.p999", "REAL"),
    ("quality_count", "quality.count", "INTEGER"),
    ("quality_mean", "quality.mean", "REAL"),
    ("quality_min", "quality.min", "REAL"),
    ("quality_p10", "quality.p10", "REAL"),
    ("cache_lookups", "cache.lookups", "INTEGER"),
    ("cache_hits", "cache.hits", "INTEGER"),
    ("cache_hit_rate", "cache.hit_rate", "REAL"),
    ("ttft_count", "ttft_ms.count", "INTEGER"),
    ("ttft_mean_ms", "ttft_ms.mean", "REAL"),
    ("ttft_p50_ms", "ttft_ms.p50", "REAL"),
    ("ttft_p90_ms", "ttft_ms.p90", "REAL"),
    ("ttft_p99_ms", "ttft_ms.p99", "REAL"),
    ("queue_count", "queue_ms.count", "INTEGER"),
    ("queue_mean_ms", "queue_ms.mean", "REAL"),
    ("queue_p50_ms", "queue_ms.p50", "REAL"),
    ("queue_p90_ms", "queue_ms.p90", "REAL"),
    ("queue_p99_ms", "queue_ms.p99", "REAL"),
    ("tokens_in", "tokens.in_total", "INTEGER"),
    ("tokens_out", "tokens.out_total", "INTEGER"),
    ("tokens_in_per_s", "tokens.in_per_s", "REAL"),
    ("tokens_out_per_s", "tokens.out_per_s", "REAL"),
)
_COLUMN_CONVERTERS = tuple((column, _CONVERT[column.sql_type]) for column in COLUMNS)
EVENT_COLUMNS = OUTCOMES  # one INTEGER column each in "snapshots"

# The SQL below is built from this module's own column constants only; every value is a bound
# parameter. Hence the S608 exemptions (ruff cannot tell constants from input).
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS snapshots (
    id INTEGER PRIMARY KEY, unix REAL NOT NULL, interval_seconds REAL NOT NULL,
    {", ".join(f"{name} INTEGER" for name in EVENT_COLUMNS)}
);
CREATE INDEX IF NOT EXISTS snapshots_unix ON snapshots (unix);
CREATE TABLE IF NOT EXISTS series (
    snapshot_id INTEGER NOT NULL REFERENCES snapshots (id) ON DELETE CASCADE,
    operation TEXT NOT NULL, model TEXT NOT NULL,
    {", ".join(f"{c.name} {c.sql_type}" for c in COLUMNS)},
    PRIMARY KEY (snapshot_id, operation, model)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS series_operation_model ON series (operation, model, snapshot_id);
INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', '{SCHEMA_VERSION}');
"""  # noqa: S608
_INSERT_SNAPSHOT = (
    f"INSERT INTO snapshots (unix, interval_seconds, {', '.join(EVENT_COLUMNS)}) "  # noqa: S608
    f"VALUES (?, ?, {', '.join('?' for _ in EVENT_COLUMNS)})"
)
_INSERT_SERIES = (
    f"INSERT INTO series (snapshot_id, operation, model, {', '.join(c.name for c in COLUMNS)}) "  # noqa: S608
    f"VALUES (?, ?, ?, {', '.join('?' for _ in COLUMNS)})"
)
_OLDEST = "SELECT id FROM snapshots ORDER BY unix, id LIMIT ?"
_TOO_OLD = "SELECT id FROM snapshots WHERE unix < ?"


def history_path(state_dir: str) -> str:
    return os.path.join(state_dir, HISTORY_FILE)


def flatten(stats: WindowStats) -> list[object]:
    """The values of COLUMNS, in order, from one series' window stats (a None branch gives
    None leaves). A missing key or a value of the wrong type is a bug in the caller: ValueError
    naming the path."""
    values: list[object] = []
    for column, convert in _COLUMN_CONVERTERS:
        node: Any = stats
        try:
            for key in column.path:
                if node is None:
                    break
                node = node[key]
            values.append(convert(node))
        except (KeyError, TypeError) as exc:
            where = ".".join(column.path)
            raise ValueError(f"window stats {where} (column {column.name}): {exc}") from None
    return values


class HistoryStore:
    """The daemon's writer: one connection, held open, one transaction per call.

    The daemon makes it in its loop thread but writes through it from a worker thread, one
    write at a time (daemon/sinks/breaker.py: a write bounded by max_processing_time_seconds runs
    in its own thread, and no second write starts while one runs), hence
    ``check_same_thread=False``: sqlite3's default check refuses any use from another thread
    to prevent two threads using the connection at once, which that rule already excludes.
    """

    def __init__(self, state_dir: str, max_age_seconds: float, max_megabytes: float,
                 clock: Callable[[], float] = time.time,
                 timeout: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        self.path = history_path(state_dir)
        self.max_age_seconds = max_age_seconds
        self.max_bytes = int(max_megabytes * 1024 * 1024)
        self.clock = clock
        self._timeout = timeout
        self._file: tuple[int, int] | None = None  # (device, inode) of the file we opened
        self._open()

    def _open(self) -> None:
        with self._errors("cannot open"):
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            self._conn = sqlite3.connect(self.path, timeout=self._timeout,
                                         isolation_level=None, check_same_thread=False)
        try:
            with self._errors("cannot open"):
                self._setup()
                info = os.stat(self.path)
        except StateError:
            self._conn.close()
            raise
        self._file = (info.st_dev, info.st_ino)

    def _reopen_if_gone(self) -> None:
        """A database file removed or replaced under us (the state directory deleted by hand)
        would take our writes where nobody reads them: start a new file instead."""
        try:
            info = os.stat(self.path)
            if (info.st_dev, info.st_ino) == self._file:
                return
        except FileNotFoundError:
            pass
        except OSError:
            return  # cannot tell (the directory is unreadable just now): keep our file
        log.warning("history database %s is gone or was replaced (state directory removed?): "
                    "starting a new one", self.path)
        with contextlib.suppress(sqlite3.Error):
            self._conn.close()
        self._file = None
        self._open()

    def apply_config(self, config: Config) -> None:
        """New retention limits (a reload), used from the next ``enforce_retention``; the
        WAL's size limits chosen at open stay until the next start."""
        self.max_age_seconds = config.history_max_age_seconds
        self.max_bytes = int(config.history_max_megabytes * 1024 * 1024)

    def _setup(self) -> None:
        conn = self._conn
        # Only effective before the first table is created, hence first.
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            raise sqlite3.OperationalError(f"journal_mode is {mode}, cannot switch to wal")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        wal_pages = min(WAL_PAGES_MAX, max(WAL_PAGES_MIN, self.max_bytes // 4 // page_size))
        conn.execute(f"PRAGMA wal_autocheckpoint = {wal_pages}")
        conn.execute(f"PRAGMA journal_size_limit = {wal_pages * page_size}")
        with self._transaction():
            if _check_version(conn, self.path) == "1":
                conn.execute("ALTER TABLE snapshots ADD COLUMN no_lane INTEGER")
                conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'",
                             (str(SCHEMA_VERSION),))
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)

    @contextlib.contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        try:
            yield
        except StateError:
            raise
        except (sqlite3.Error, OSError) as exc:
            raise StateError(f"{doing} {self.path}: {exc}") from exc

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE (waits at most ``timeout`` for the write lock) … COMMIT."""
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def append(self, snapshot_unix: float, interval_seconds: float, events: Mapping[str, object],
               series: Sequence[Mapping[str, Any]]) -> None:
        """Store one snapshot and its series in one transaction.

        ``events`` holds the EVENT_COLUMNS (extra keys are ignored); each item of ``series``
        is {"operation": str, "model": str, "stats": <window stats>}. Malformed input is a
        ValueError (nothing is written); a database problem a StateError.
        """
        try:
            event_values = [_integer(events[name]) for name in EVENT_COLUMNS]
        except (KeyError, TypeError) as exc:
            raise ValueError(f"snapshot events: {exc}") from None
        # A lane's writer can claim counts beyond SQLite's signed 64-bit integers (its own
        # counts are then wrong anyway): store the largest one rather than fail every write.
        event_values = [v if v is None else min(v, SQLITE_MAX_INTEGER) for v in event_values]
        rows = []
        seen: set[tuple[str, str]] = set()
        for item in series:
            try:
                operation, model, stats = item["operation"], item["model"], item["stats"]
            except (KeyError, TypeError) as exc:
                raise ValueError(f"a series needs operation, model and stats: {exc}") from None
            if not isinstance(operation, str) or not isinstance(model, str):
                raise ValueError(f"series names must be strings, got {operation!r}, {model!r}")
            if (operation, model) in seen:
                raise ValueError(f"series ({operation!r}, {model!r}) appears twice")
            seen.add((operation, model))
            rows.append([operation, model, *flatten(stats)])
        self._reopen_if_gone()
        with self._errors("cannot append to"), self._transaction() as conn:
            cursor = conn.execute(
                _INSERT_SNAPSHOT, [float(snapshot_unix), float(interval_seconds), *event_values]
            )
            snapshot_id = cursor.lastrowid
            conn.executemany(_INSERT_SERIES, ([snapshot_id, *row] for row in rows))

    def used_bytes(self) -> int:
        """The pages in use: (page_count - freelist_count) * page_size."""
        with self._errors("cannot measure"):
            return _used_bytes(self._conn)

    def enforce_retention(self) -> int:
        """Delete snapshots (and their series) past the age or the size limit; return how many
        snapshots went."""
        with self._errors("cannot enforce retention on"):
            deleted = self._delete(_TOO_OLD, self.clock() - self.max_age_seconds)
            used = _used_bytes(self._conn)
            while used > self.max_bytes:
                total = self._conn.execute("SELECT count(*) FROM snapshots").fetchone()[0]
                if total <= 1:
                    break  # the newest snapshot stays, whatever its size
                share = (used - LOW_WATER * self.max_bytes) / used
                chunk = min(total - 1, max(1, math.ceil(total * share)))
                deleted += self._delete(_OLDEST, chunk)
                used = _used_bytes(self._conn)
            if deleted:
                # executescript steps the pragma to its end (execute() frees one page only);
                # the passive checkpoint, which waits for no one, then shrinks the file.
                self._conn.executescript(
                    "PRAGMA incremental_vacuum; PRAGMA wal_checkpoint(PASSIVE);"
                )
        return deleted

    def _delete(self, select_ids: str, parameter: float) -> int:
        with self._transaction() as conn:
            # select_ids is _OLDEST or _TOO_OLD, never input.
            conn.execute(f"DELETE FROM series WHERE snapshot_id IN ({select_ids})",  # noqa: S608
                         (parameter,))
            return conn.execute(f"DELETE FROM snapshots WHERE id IN ({select_ids})",  # noqa: S608
                                (parameter,)).rowcount

    def query(self, since_unix: float | None = None, operation: str | None = None,
              model: str | None = None, limit: int | None = None) -> list[dict[str, object]]:
        """The flat rows of the daemon's own file; see ``read_history``."""
        with self._errors("cannot read"):
            return _query(self._conn, since_unix, operation, model, limit)

    def close(self) -> None:
        with self._errors("cannot close"):
            self._conn.close()


def _used_bytes(conn: sqlite3.Connection) -> int:
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    return (pages - free) * conn.execute("PRAGMA page_size").fetchone()[0]


def _check_version(conn: sqlite3.Connection, path: str) -> str | None:
    """The file's schema version (one of READABLE_VERSIONS), None when it has no tables yet."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone() is None:
        return None
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    if row is None or row[0] not in READABLE_VERSIONS:
        found = "no" if row is None else f"version {row[0]}"
        raise StateError(f"{path} has {found} history schema, not version {SCHEMA_VERSION}; "
                         "move it aside to start a new history")
    return str(row[0])


def _query(conn: sqlite3.Connection, since_unix: float | None, operation: str | None,
           model: str | None, limit: int | None) -> list[dict[str, object]]:
    conditions, parameters = [], []
    for clause, value in (("s.unix >= ?", since_unix), ("r.operation = ?", operation),
                          ("r.model = ?", model)):
        if value is not None:
            conditions.append(clause)
            parameters.append(value)
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    names = ["operation", "model", *(c.name for c in COLUMNS)]
    # With a limit, the newest rows, still returned oldest first.
    sql = (
        f"SELECT * FROM (SELECT s.unix, s.interval_seconds, r.operation, r.model, "  # noqa: S608
        f"{', '.join(f'r.{c.name}' for c in COLUMNS)} "
        f"FROM series r JOIN snapshots s ON s.id = r.snapshot_id {where} "
        f"ORDER BY s.unix DESC, r.operation DESC, r.model DESC LIMIT ?) "
        f"ORDER BY unix, operation, model"
    )
    parameters.append(-1 if limit is None else limit)
    return [
        {"unix": unix, "time": iso_utc(unix), "interval_seconds": interval,
         **dict(zip(names, rest, strict=True))}
        for unix, interval, *rest in conn.execute(sql, parameters)
    ]


def connect_readonly(path: str, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> sqlite3.Connection:
    """A connection that cannot create or change ``path`` (``mode=ro``): sqlite3.Error if it
    does not exist, and on any attempt to write."""
    uri = f"file:{urllib.parse.quote(os.path.abspath(path))}?mode=ro"
    return sqlite3.connect(uri, uri=True, timeout=timeout, isolation_level=None)


@contextlib.contextmanager
def reading(state_dir: str, timeout: float = DEFAULT_TIMEOUT_SECONDS
            ) -> Iterator[sqlite3.Connection | None]:
    """A read-only connection to the history of ``state_dir`` (never creating or changing the
    file, while the daemon may write), inside one read transaction whose schema version has
    been checked; None when there is no history file, or no tables committed in it yet.

    A StateError names the file when it cannot be opened or read; the caller's own
    sqlite3 errors inside the block become one too.
    """
    path = history_path(state_dir)
    if not os.path.exists(path):
        yield None
        return
    try:
        conn = connect_readonly(path, timeout)
    except sqlite3.Error as exc:
        if not os.path.exists(path):
            yield None
            return
        raise StateError(f"cannot open {path}: {exc}") from exc
    try:
        # One read transaction: the version check and the rows see the same snapshot.
        conn.execute("BEGIN")
        ready = _check_version(conn, path) is not None  # None: created a moment ago
        yield conn if ready else None
    except sqlite3.Error as exc:
        raise StateError(f"cannot read {path}: {exc}") from exc
    finally:
        conn.close()


def read_history(state_dir: str, since_unix: float | None = None, operation: str | None = None,
                 model: str | None = None, limit: int | None = None,
                 timeout: float = DEFAULT_TIMEOUT_SECONDS) -> list[dict[str, object]] | None:
    """The reader's side (``ai-analytics history``): open the file read-only, never creating
    or changing it, while the daemon may write. None when there is no history file.

    Rows are flat dicts: unix, time (ISO 8601, UTC), interval_seconds, operation, model and
    the COLUMNS, ordered by time, operation, model; ``limit`` keeps the newest rows.
    """
    if not os.path.exists(history_path(state_dir)):
        return None
    with reading(state_dir, timeout) as conn:
        if conn is None:
            # Gone since (None, as before it existed), or tables not yet committed ([]).
            return None if not os.path.exists(history_path(state_dir)) else []
        return _query(conn, since_unix, operation, model, limit)


_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw]?)")
_UNIT_SECONDS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_duration(text: str) -> float:
    """Seconds in "90s", "15m", "1h", "2d", "1w" or plain "300"; ValueError naming the text."""
    match = _DURATION.fullmatch(text.strip())
    seconds = float(match[1]) * _UNIT_SECONDS[match[2]] if match else 0.0
    if not seconds > 0 or math.isinf(seconds):
        raise ValueError(f"{text!r} is not a duration: use a positive number of seconds (300) "
                         "or a number with a unit s, m, h, d or w (90s, 15m, 1h, 2d, 1w)")
    return seconds


__all__ = [
    "COLUMNS", "EVENT_COLUMNS", "HISTORY_FILE", "SCHEMA_VERSION", "Column", "HistoryStore",
    "connect_readonly", "flatten", "history_path", "parse_duration", "read_history", "reading",
]
