"""The snapshot history in this process: SQLite layout, retention, readers beside the writer,
``ai-analytics history`` through click's CliRunner."""

from __future__ import annotations

import hashlib
import json
import math
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ai_analytics.cli.history_view import render_history
from ai_analytics.core.document import WindowStats
from ai_analytics.core.errors import StateError
from ai_analytics.core.history import (
    COLUMNS,
    HistoryStore,
    connect_readonly,
    flatten,
    history_path,
    parse_duration,
    read_history,
)

import documents
from helpers import EVENTS, invoke, series, window_stats

SPEC_COLUMNS = [
    "count", "successes", "errors", "error_rate", "throughput_per_s", "latency_mean_ms",
    "latency_min_ms", "latency_max_ms", "latency_p50_ms", "latency_p90_ms", "latency_p95_ms",
    "latency_p99_ms", "latency_p999_ms", "quality_count", "quality_mean", "quality_min",
    "quality_p10", "cache_lookups", "cache_hits", "cache_hit_rate", "ttft_count", "ttft_mean_ms",
    "ttft_p50_ms", "ttft_p90_ms", "ttft_p99_ms", "queue_count", "queue_mean_ms", "queue_p50_ms",
    "queue_p90_ms", "queue_p99_ms", "tokens_in", "tokens_out", "tokens_in_per_s",
    "tokens_out_per_s",
]


def empty_stats() -> WindowStats:
    """A series with no data in the window: counts 0, every other value None. (The daemon
    writes rates of 0.0 there; None in them too follows NULL through every REAL column.)"""
    stats = documents.window_stats()
    stats["throughput_per_s"] = None  # type: ignore[typeddict-item]
    stats["tokens"]["in_per_s"] = stats["tokens"]["out_per_s"] = None  # type: ignore[typeddict-item]
    return stats


@pytest.fixture
def store(tmp_path: Path) -> Iterator[HistoryStore]:
    history = HistoryStore(str(tmp_path / "state"), max_age_seconds=1e9, max_megabytes=256.0)
    yield history
    history.close()


def sqlite(path: str) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


# -- layout ----------------------------------------------------------------------------------


def test_columns_are_the_documented_ones_and_the_table_has_them(store: HistoryStore) -> None:
    """COLUMNS is the documented flat list, in order, and the series table is built from it
    (so schema, insert and query cannot drift apart); meta says schema version 2."""
    assert [c.name for c in COLUMNS] == SPEC_COLUMNS
    conn = sqlite(store.path)
    table = [row[1] for row in conn.execute("PRAGMA table_info(series)")]
    assert table == ["snapshot_id", "operation", "model", *SPEC_COLUMNS]
    snapshots = [row[1] for row in conn.execute("PRAGMA table_info(snapshots)")]
    assert snapshots == ["id", "unix", "interval_seconds", *EVENTS]
    indexes = {row[1] for row in conn.execute("SELECT * FROM sqlite_master WHERE type='index'")}
    assert {"snapshots_unix", "series_operation_model"} <= indexes
    assert conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == ("2",)
    assert conn.execute("PRAGMA auto_vacuum").fetchone() == (2,)  # incremental
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    conn.close()


def test_flatten_follows_the_paths_and_keeps_none() -> None:
    """Each column's value comes from its path; a None leaf or a None branch gives None."""
    stats = window_stats(3.0)
    flat = dict(zip(SPEC_COLUMNS, flatten(stats), strict=True))
    assert flat["latency_p999_ms"] == stats["latency_ms"]["p999"]
    assert flat["queue_p90_ms"] == stats["queue_ms"]["p90"]
    assert flat["tokens_out"] == 2000 and isinstance(flat["tokens_out"], int)
    stats["ttft_ms"] = None  # type: ignore[typeddict-item]
    flat = dict(zip(SPEC_COLUMNS, flatten(stats), strict=True))
    assert [flat[c] for c in SPEC_COLUMNS if c.startswith("ttft")] == [None] * 5


# -- append and query ------------------------------------------------------------------------


def test_round_trip_keeps_every_value(store: HistoryStore) -> None:
    """What append stores, query returns: the flat row has unix, ISO time, interval, names and
    every column with the value from its path in the stats, in the documented key order."""
    stats = window_stats(2.0)
    store.append(1_700_000_000.25, 5.0, EVENTS, [series("chat", "llama", stats)])
    [row] = store.query()
    assert list(row) == ["unix", "time", "interval_seconds", "operation", "model", *SPEC_COLUMNS]
    assert row["unix"] == 1_700_000_000.25
    assert row["time"] == "2023-11-14T22:13:20.250+00:00"
    assert row["interval_seconds"] == 5.0
    assert (row["operation"], row["model"]) == ("chat", "llama")
    assert [row[c] for c in SPEC_COLUMNS] == flatten(stats)
    assert row["latency_p50_ms"] == 203.0 and row["cache_hit_rate"] == 0.75
    conn = sqlite(store.path)
    assert conn.execute("SELECT received, dropped, invalid, pending FROM snapshots").fetchone() \
        == (10, 1, 2, 3)
    conn.close()


def test_none_values_stay_none(store: HistoryStore) -> None:
    """A series without data stores NULLs and reads back None (not 0, not NaN); NaN, which
    SQLite cannot hold, reads back as None too."""
    nan_stats = window_stats()
    nan_stats["error_rate"] = math.nan
    store.append(100.0, 5.0, EVENTS, [series("a", "m", empty_stats()), series("b", "m", nan_stats)])
    empty, with_nan = store.query()
    assert empty["count"] == 0
    assert empty["error_rate"] is None and empty["latency_p99_ms"] is None
    assert empty["quality_mean"] is None and empty["tokens_in_per_s"] is None
    assert with_nan["error_rate"] is None and with_nan["latency_p99_ms"] is not None
    assert read_history(str(Path(store.path).parent))[0]["latency_p50_ms"] is None


def test_query_orders_and_filters(store: HistoryStore) -> None:
    """Rows come by time, then operation, then model, whatever order they were appended in;
    operation, model and since filter (since is inclusive); limit keeps the newest rows."""
    names = [("embed", "bge"), ("chat", "qwen"), ("chat", "llama")]
    for unix in (300.0, 100.0, 200.0):
        store.append(unix, 5.0, EVENTS, [series(op, model) for op, model in names])
    keys = [(r["unix"], r["operation"], r["model"]) for r in store.query()]
    assert keys == [(t, op, model) for t in (100.0, 200.0, 300.0) for op, model in sorted(names)]
    assert {(r["operation"], r["model"]) for r in store.query(operation="chat")} == {
        ("chat", "qwen"), ("chat", "llama")}
    assert [r["unix"] for r in store.query(model="bge")] == [100.0, 200.0, 300.0]
    assert [r["unix"] for r in store.query(operation="chat", model="qwen", since_unix=200.0)] \
        == [200.0, 300.0]
    assert store.query(operation="nope") == []
    newest = store.query(limit=4)
    assert [(r["unix"], r["operation"]) for r in newest] == [
        (200.0, "embed"), (300.0, "chat"), (300.0, "chat"), (300.0, "embed")]
    assert read_history(str(Path(store.path).parent), 150.0, "chat", None, 3) == \
        store.query(150.0, "chat", None, 3)


def test_malformed_input_is_a_value_error_and_writes_nothing(store: HistoryStore) -> None:
    """A missing stats key, a wrong type, a missing event counter or a series given twice is
    the caller's bug: ValueError naming it, and the snapshot is not half written."""
    broken = window_stats()
    del broken["latency_ms"]["p95"]  # type: ignore[misc]
    with pytest.raises(ValueError, match=r"latency_ms\.p95"):
        store.append(1.0, 5.0, EVENTS, [series("a", "m"), series("b", "m", broken)])
    wrong = window_stats()
    wrong["count"] = "12"  # type: ignore[typeddict-item]
    with pytest.raises(ValueError, match="count"):
        store.append(1.0, 5.0, EVENTS, [series("a", "m", wrong)])
    with pytest.raises(ValueError, match="twice"):
        store.append(1.0, 5.0, EVENTS, [series("a", "m"), series("a", "m")])
    with pytest.raises(ValueError, match="pending"):
        store.append(1.0, 5.0, {k: v for k, v in EVENTS.items() if k != "pending"}, [])
    conn = sqlite(store.path)
    assert conn.execute("SELECT count(*) FROM snapshots").fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM series").fetchone() == (0,)
    conn.close()


def test_sqlite_errors_are_state_errors_naming_the_file(tmp_path: Path) -> None:
    """A file that is not SQLite, or a history of another schema version, gives a StateError
    naming the path, for the writer and for the reader; no sqlite3 exception escapes."""
    state = tmp_path / "state"
    state.mkdir()
    path = history_path(str(state))
    Path(path).write_bytes(b"this is not a database" * 100)
    with pytest.raises(StateError, match=path) as caught:
        HistoryStore(str(state), 1e9, 256.0)
    assert not isinstance(caught.value, sqlite3.Error)
    with pytest.raises(StateError, match=path):
        read_history(str(state))
    os.unlink(path)
    HistoryStore(str(state), 1e9, 256.0).close()
    conn = sqlite(path)
    conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.close()
    with pytest.raises(StateError, match=r"version 99 history schema.*move it aside"):
        HistoryStore(str(state), 1e9, 256.0)
    with pytest.raises(StateError, match="version 99"):
        read_history(str(state))


def test_a_version_1_history_is_read_and_upgraded_in_place(tmp_path: Path) -> None:
    """A history written before no_lane existed (schema version 1) is read as it is, and
    the daemon adds the column when it opens it: no row is lost, old rows have NULL there."""
    state = tmp_path / "state"
    state.mkdir()
    path = history_path(str(state))
    store = HistoryStore(str(state), 1e9, 256.0)
    store.append(100.0, 5.0, EVENTS, [series("op", "m")])
    store.close()
    conn = sqlite(path)  # back to what version 1 wrote
    conn.execute("ALTER TABLE snapshots DROP COLUMN no_lane")
    conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    conn.close()
    assert len(read_history(str(state)) or []) == 1
    store = HistoryStore(str(state), 1e9, 256.0)
    store.append(105.0, 5.0, EVENTS, [series("op", "m")])
    store.close()
    conn = sqlite(path)
    assert conn.execute("SELECT no_lane FROM snapshots ORDER BY unix").fetchall() == [
        (None,), (4,)]
    assert conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == ("2",)
    conn.close()
    assert len(read_history(str(state)) or []) == 2


def test_a_locked_database_fails_within_the_timeout(tmp_path: Path) -> None:
    """While another connection holds the write lock, append and enforce_retention give up
    after ``timeout`` with a StateError instead of hanging the daemon; afterwards they work."""
    store = HistoryStore(str(tmp_path), 1e9, 256.0, timeout=0.2)
    other = sqlite(store.path)
    other.execute("BEGIN IMMEDIATE")
    started = time.monotonic()
    with pytest.raises(StateError, match="locked"):
        store.append(1.0, 5.0, EVENTS, [series("a", "m")])
    with pytest.raises(StateError, match="locked"):
        store.max_age_seconds = 0.0
        store.enforce_retention()
    assert time.monotonic() - started < 2.0
    other.execute("ROLLBACK")
    other.close()
    store.append(1.0, 5.0, EVENTS, [series("a", "m")])
    assert len(store.query()) == 1
    store.close()


# -- retention -------------------------------------------------------------------------------


def test_retention_by_age(tmp_path: Path) -> None:
    """Snapshots older than now - max_age go, with their series; newer ones stay; the count
    of deleted snapshots is returned, and a second pass deletes nothing."""
    now = [2000.0]
    store = HistoryStore(str(tmp_path), max_age_seconds=60.0, max_megabytes=256.0,
                         clock=lambda: now[0])
    for unix in range(1000, 2001, 10):
        store.append(float(unix), 10.0, EVENTS, [series("a", "m"), series("b", "m")])
    assert store.enforce_retention() == 94
    assert [r["unix"] for r in store.query(operation="a")] == [float(t) for t in
                                                               range(1940, 2001, 10)]
    conn = sqlite(store.path)
    assert conn.execute("SELECT count(*) FROM series").fetchone() == (14,)
    assert conn.execute("SELECT count(*) FROM snapshots").fetchone() == (7,)
    conn.close()
    assert store.enforce_retention() == 0
    now[0] = 3000.0
    assert store.enforce_retention() == 7
    assert store.query() == []
    store.close()


def test_retention_by_size_keeps_the_newest_within_the_limit(tmp_path: Path) -> None:
    """With max_megabytes=1 and 60 series a snapshot, the used size is under the limit after
    every enforce_retention, the newest snapshot always survives, the oldest go, the number
    kept settles, and the file on disk (database and WAL) stops growing."""
    limit = 1024 * 1024
    store = HistoryStore(str(tmp_path), max_age_seconds=1e9, max_megabytes=1.0,
                         clock=lambda: 10_000.0)
    names = [series(f"op{i % 6}", f"model-{i}", window_stats(i)) for i in range(60)]
    kept, files = [], []
    for n in range(400):
        store.append(1000.0 + n, 1.0, EVENTS, names)
        store.enforce_retention()
        assert store.used_bytes() <= limit, n
        rows = store.query(operation="op0", model="model-0")
        assert rows[-1]["unix"] == 1000.0 + n
        kept.append(len(rows))
        files.append((os.path.getsize(store.path), os.path.getsize(store.path + "-wal")))
    assert kept[-1] < 400 and rows[0]["unix"] > 1000.0 + 200  # the oldest are gone
    assert min(kept[200:]) >= 0.8 * max(kept[200:])  # steady, not shrinking to nothing
    assert max(db for db, _ in files) <= limit
    late = max(db + wal for db, wal in files[300:])
    assert late <= max(db + wal for db, wal in files[100:300])
    assert late <= 2 * limit
    store.close()


def test_retention_keeps_the_newest_snapshot_even_if_alone_too_big(tmp_path: Path) -> None:
    """A single snapshot larger than the limit is kept (history never goes empty)."""
    store = HistoryStore(str(tmp_path), max_age_seconds=1e9, max_megabytes=0.01,
                         clock=lambda: 10.0)
    store.append(1.0, 1.0, EVENTS, [series("a", f"m{i}") for i in range(100)])
    store.append(2.0, 1.0, EVENTS, [series("a", f"m{i}") for i in range(100)])
    assert store.enforce_retention() == 1
    assert {r["unix"] for r in store.query()} == {2.0}
    store.close()


# -- readers ---------------------------------------------------------------------------------


def digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_reader_reads_during_an_open_write_transaction(store: HistoryStore) -> None:
    """WAL: while a writer holds a large uncommitted transaction (big enough to spill, which
    takes an exclusive lock in rollback-journal mode), the read-only reader gets the committed
    rows at once, not the uncommitted ones, and leaves the database file unchanged."""
    state_dir = str(Path(store.path).parent)
    store.append(100.0, 5.0, EVENTS, [series("a", "m")])
    writer = sqlite(store.path)
    assert writer.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    writer.execute("PRAGMA cache_size = 10")
    writer.execute("BEGIN IMMEDIATE")
    for unix in range(2000):
        snapshot_id = writer.execute(
            "INSERT INTO snapshots (unix, interval_seconds) VALUES (?, 5)", (200.0 + unix,)
        ).lastrowid
        writer.execute("INSERT INTO series (snapshot_id, operation, model, count) "
                       "VALUES (?, 'a', 'm', 1)", (snapshot_id,))
    before = digest(store.path)
    rows = read_history(state_dir, timeout=0.5)  # a wait for the lock would end in StateError
    assert [r["unix"] for r in rows] == [100.0]
    assert digest(store.path) == before
    writer.execute("COMMIT")
    writer.close()
    assert len(read_history(state_dir)) == 2001


def test_reader_never_creates_a_history(tmp_path: Path) -> None:
    """No history file: the reader says None and creates neither the file nor the directory."""
    state_dir = tmp_path / "state"
    assert read_history(str(state_dir)) is None
    assert not state_dir.exists()
    state_dir.mkdir()
    assert read_history(str(state_dir)) is None
    assert list(state_dir.iterdir()) == []


def test_reader_connection_is_read_only(store: HistoryStore, tmp_path: Path) -> None:
    """The reader's connection refuses writes, and opening a file that is not there fails
    without creating it (the reader can never make or change a history)."""
    conn = connect_readonly(store.path)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        conn.execute("DELETE FROM meta")
    conn.close()
    missing = tmp_path / "missing.sqlite3"
    with pytest.raises(sqlite3.OperationalError):
        connect_readonly(str(missing))
    assert not missing.exists()


def test_reader_after_the_writer_closed(tmp_path: Path) -> None:
    """After the daemon closed the history (WAL checkpointed and removed), the read-only
    reader still reads it, and the database file is unchanged by the read."""
    store = HistoryStore(str(tmp_path), 1e9, 256.0)
    store.append(100.0, 5.0, EVENTS, [series("a", "m")])
    store.close()
    before = digest(history_path(str(tmp_path)))
    assert [r["operation"] for r in read_history(str(tmp_path))] == ["a"]
    assert digest(history_path(str(tmp_path))) == before


# -- parse_duration and the table ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90.0), ("15m", 900.0), ("1h", 3600.0), ("2d", 172800.0), ("1w", 604800.0),
     ("300", 300.0), ("1.5h", 5400.0), (" 10m ", 600.0)],
)
def test_parse_duration_accepts(text: str, seconds: float) -> None:
    """The documented forms: a number with s, m, h, d or w, or plain seconds."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text", ["", "h", "1y", "1H", "-5m", "0", "0s", "1e3", "1 h 2", "inf", "nan", "9" * 400]
)
def test_parse_duration_rejects(text: str) -> None:
    """Anything else is a ValueError naming the text and the accepted forms."""
    with pytest.raises(ValueError, match="not a duration") as caught:
        parse_duration(text)
    assert repr(text) in str(caught.value)
    assert "90s, 15m, 1h, 2d, 1w" in str(caught.value)


def test_render_history_aligns_and_shows_dashes(store: HistoryStore) -> None:
    """One header line and one line per row, in the tables ``status`` draws: columns aligned
    (every line equally long, as the last column is right-aligned); "-" where there is no
    data; err% is a percentage; times in UTC as ``status`` writes them."""
    store.append(1_700_000_000.0, 5.0, EVENTS,
                 [series("chat", "a-very-long-model-name"), series("e", "m", empty_stats())])
    lines = render_history(store.query()).splitlines()
    assert lines[0].split() == ["time", "operation", "model", "count", "err%", "ops/s",
                                "p50", "ms", "p95", "ms", "p99", "ms", "quality"]
    assert len({len(line) for line in lines}) == 1
    assert lines[1].split() == ["2023-11-14T22:13:20+00:00", "chat", "a-very-long-model-name", "10",
                                "10.00", "2.5", "103.00", "105.00", "106.00", "0.750"]
    assert lines[2].split() == ["2023-11-14T22:13:20+00:00", "e", "m", "0", "-", "-", "-", "-", "-",
                                "-"]


# -- the command -----------------------------------------------------------------------------


def history_cli(*argv: str) -> tuple[int, str, str]:
    """``ai-analytics history ARGV`` in this process: exit status, stdout, stderr."""
    result = invoke("history", *argv)
    return result.exit_code, result.stdout, result.stderr


def test_cli_table_and_filters(make_config: Callable[..., Path],
                               recent_history: list[float]) -> None:
    """The default shows the last hour as a table (header and one line per row, oldest
    first); --since, --operation, --model and --limit narrow it; exit 0."""
    config = make_config()
    code, out, err = history_cli("--config", str(config))
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].startswith("time") and lines[0].endswith("quality")
    assert [line.split()[1] for line in lines[1:]] == ["chat", "embed"] * 3
    code, out, _ = history_cli("--config", str(config), "--since", "3h", "--operation", "embed")
    assert code == 0 and [line.split()[2] for line in out.splitlines()[1:]] == ["bge"] * 4
    code, out, _ = history_cli("--config", str(config), "--model", "llama", "--limit", "2")
    assert code == 0 and len(out.splitlines()) == 3


def test_cli_json(make_config: Callable[..., Path], recent_history: list[float]) -> None:
    """--json prints the flat rows as a JSON list, the same as read_history gives."""
    code, out, err = history_cli("--config", str(make_config()), "--json", "--operation", "chat")
    assert (code, err) == (0, "")
    rows = json.loads(out)
    assert [r["unix"] for r in rows] == recent_history[1:]
    assert set(rows[0]) == {"unix", "time", "interval_seconds", "operation", "model",
                            *SPEC_COLUMNS}


def test_cli_no_rows_is_exit_0_with_a_message(
    make_config: Callable[..., Path], recent_history: list[float]
) -> None:
    """No matching rows: exit 0, nothing on stdout (``[]`` with --json), one line on stderr
    naming the window and the filter."""
    config = str(make_config())
    code, out, err = history_cli("--config", config, "--since", "5s")
    assert (code, out, err) == (0, "", "ai-analytics: no history rows in the last 5s\n")
    code, out, err = history_cli("--config", config, "--json", "--model", "gpt")
    assert (code, json.loads(out)) == (0, [])
    assert err == "ai-analytics: no history rows in the last 1h for model 'gpt'\n"


def test_cli_missing_history_is_exit_3(make_config: Callable[..., Path], state_dir: Path) -> None:
    """No history file (the daemon never ran with this config): exit 3, one line naming the
    file, nothing created."""
    code, out, err = history_cli("--config", str(make_config()))
    assert (code, out) == (3, "")
    assert err.splitlines() == [
        f"ai-analytics: no history in {state_dir / 'history.sqlite3'}: ai-analyticsd has not "
        f"run with this config (namespace {os.environ['AI_ANALYTICS_NAMESPACE']!r})"
    ]
    assert not state_dir.exists()


@pytest.mark.parametrize("since", ["yesterday", "5x", "-1h", "0"])
def test_cli_bad_since_is_a_usage_error(make_config: Callable[..., Path], since: str) -> None:
    """A bad --since is click's usage error: exit 2, one "Error:" line naming the text and the
    accepted forms, before any file is looked at."""
    code, out, err = history_cli("--config", str(make_config()), "--since", since)
    assert (code, out) == (2, "")
    errors = [line for line in err.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and repr(since) in errors[0] and "1h" in errors[0]
    assert "Traceback" not in err


def test_cli_damaged_history_is_exit_4(make_config: Callable[..., Path], state_dir: Path) -> None:
    """A history file that is not a database: exit 4 (unreadable), one line naming it, no
    traceback."""
    state_dir.mkdir()
    (state_dir / "history.sqlite3").write_bytes(b"garbage" * 1000)
    code, out, err = history_cli("--config", str(make_config()))
    assert (code, out) == (4, "")
    assert len(err.splitlines()) == 1 and "history.sqlite3" in err


