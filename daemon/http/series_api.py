"""``GET /api/series``: a metric of the history database over a range, cut into buckets.

The answer is bounded whatever the history holds: at most ``MAX_POINTS`` buckets per series
and ``MAX_SERIES`` series (the busiest by event count in the range). It reads the history
through a read-only connection (WAL: it never blocks the daemon's writer), on the HTTP
server's thread; at most ``MAX_CONCURRENT`` queries run at once, and each is interrupted at
the request's deadline. docs/http.md describes the parameters, the answer and the bucketing.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import NamedTuple
from urllib.parse import unquote_to_bytes

from ai_analytics.core.errors import StateError
from ai_analytics.core.history import COLUMNS, EVENT_COLUMNS, history_path, reading

MAX_POINTS = 240  # buckets per series
MAX_SERIES = 50  # series per answer
MAX_CONCURRENT = 2  # queries at once: the rest of the daemon keeps its CPU
MAX_VALUE_BYTES = 127  # a parameter's name or value
PROGRESS_STEPS = 10_000  # SQLite VM steps between deadline checks
DIGITS = 4  # decimals kept in the values
# An answer is reused for this share of its step (24h: 15 s, 7d: 105 s; 5m and 1h: below a
# snapshot interval, so never): a day's query reads every row of the day (about 0.6 s for
# 20 series on a 2-core machine), and the page asks again at every snapshot.
CACHE_SHARE_OF_STEP = 1 / 24
CACHE_ENTRIES = 32  # answers kept (as JSON, at most MAX_SERIES x MAX_POINTS points each)
# Tables of every metric kept, by (range, operation, model): the page asks for each metric of
# one range and filter in turn, and one pass over the rows serves them all. Each is at most
# MAX_SERIES x MAX_POINTS rows of the metrics' values (a few MB at the bounds).
TABLE_ENTRIES = 4

RANGES: dict[str, float] = {"5m": 300.0, "1h": 3600.0, "24h": 86400.0, "7d": 604800.0}
PARAMETERS = ("metric", "range", "operation", "model")
# The event path's outcomes, each a series of events per second.
EVENT_OUTCOMES = ("received", "dropped", "overwritten", "invalid", "no_lane")


class Metric(NamedTuple):
    """How one metric is read from the ``series`` table: the column, how a bucket combines
    its rows, the weight column of a weighted mean, and the factor applied to the result."""

    column: str
    unit: str
    combine: str  # "rate", "mean" (weighted by ``weight``) or "max"
    weight: str = ""
    scale: float = 1.0


METRICS: dict[str, Metric | None] = {
    "rate": Metric("count", "events/s", "rate"),
    "error_pct": Metric("error_rate", "%", "mean", "count", 100.0),
    "p50_ms": Metric("latency_p50_ms", "ms", "max"),
    "p95_ms": Metric("latency_p95_ms", "ms", "max"),
    "p99_ms": Metric("latency_p99_ms", "ms", "max"),
    "ttft_p50_ms": Metric("ttft_p50_ms", "ms", "max"),
    "ttft_p99_ms": Metric("ttft_p99_ms", "ms", "max"),
    "quality": Metric("quality_mean", "score", "mean", "quality_count"),
    "cache_hit_pct": Metric("cache_hit_rate", "%", "mean", "cache_lookups", 100.0),
    "events": None,  # from the totals of the snapshots table, one series per outcome
}
SERIES_METRICS: dict[str, Metric] = {name: m for name, m in METRICS.items() if m is not None}
EVENTS_UNIT = "events/s"
# The SQL below is built from these column names only (every value is a bound parameter).
assert {m.column for m in METRICS.values() if m} | {m.weight for m in METRICS.values() if m and
        m.weight} <= {c.name for c in COLUMNS}
assert set(EVENT_OUTCOMES) <= set(EVENT_COLUMNS)


class ApiError(Exception):
    """A request the API does not answer with data: its HTTP status and one-line reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


class BadRequest(ApiError):
    """A parameter the API does not accept (400)."""

    def __init__(self, reason: str) -> None:
        super().__init__(400, reason)


class SeriesQuery(NamedTuple):
    metric: str
    range: str
    operation: str | None
    model: str | None


class Buckets(NamedTuple):
    """The range cut into ``size`` buckets of ``step`` seconds from ``start``."""

    start: float
    step: float
    size: int

    @property
    def end(self) -> float:
        return self.start + self.size * self.step

    def times(self) -> list[float]:
        return [round(self.start + i * self.step, 3) for i in range(self.size)]


def _choices(name: str, choices: Sequence[str]) -> str:
    return f"{name} must be one of {', '.join(choices)}"


def _decoded(raw: str, what: str) -> str:
    """A query component, percent-decoded as UTF-8 and bounded; BadRequest naming ``what``."""
    data = unquote_to_bytes(raw.replace("+", " "))
    if len(data) > MAX_VALUE_BYTES:
        raise BadRequest(f"{what} is longer than {MAX_VALUE_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(f"{what} is not valid UTF-8 text") from None
    if not text.isprintable():
        raise BadRequest(f"{what} holds control characters")
    return text


def parse_query(query: str) -> SeriesQuery:
    """The parameters of one request (the URL's query string); BadRequest with the reason."""
    given: dict[str, str] = {}
    for part in query.split("&"):
        if not part:
            continue
        raw_name, _, raw_value = part.partition("=")
        name = _decoded(raw_name, "a parameter name")
        if name not in PARAMETERS:
            raise BadRequest(f"unknown parameter {name!r}; "
                             f"the parameters are {', '.join(PARAMETERS)}")
        if name in given:
            raise BadRequest(f"parameter {name} given twice")
        given[name] = _decoded(raw_value, f"parameter {name}")
    metric, range_ = given.get("metric"), given.get("range")
    if metric not in METRICS:
        found = "is missing" if metric is None else f"{metric!r} is not known"
        raise BadRequest(f"metric {found}; {_choices('metric', list(METRICS))}")
    if range_ not in RANGES:
        found = "is missing" if range_ is None else f"{range_!r} is not known"
        raise BadRequest(f"range {found}; {_choices('range', list(RANGES))}")
    return SeriesQuery(metric, range_, given.get("operation"), given.get("model"))


def buckets_for(range_seconds: float, snapshot_interval: float, now: float) -> Buckets:
    """At most MAX_POINTS buckets, none shorter than a snapshot interval, aligned to
    multiples of the step (successive answers share their buckets), the last holding now."""
    step = max(range_seconds / MAX_POINTS, snapshot_interval)
    size = min(MAX_POINTS, math.ceil(range_seconds / step - 1e-9))
    end = (math.floor(now / step) + 1) * step
    return Buckets(end - size * step, step, size)


# -- the queries -------------------------------------------------------------------------------
_BUCKET = "CAST((s.unix - :start) / :step AS INTEGER)"
_IN_RANGE = "s.unix >= :start AND s.unix < :end"


def _filters(query: SeriesQuery) -> tuple[str, dict[str, str]]:
    clauses, values = [], {}
    if query.operation is not None:
        clauses.append(" AND r.operation = :operation")
        values["operation"] = query.operation
    if query.model is not None:
        clauses.append(" AND r.model = :model")
        values["model"] = query.model
    return "".join(clauses), values


def _busiest(conn: sqlite3.Connection, query: SeriesQuery, where: dict[str, object]
             ) -> list[tuple[str, str]]:
    """The (operation, model) pairs with the most events in the range, at most one more than
    MAX_SERIES (that one says there are more)."""
    filters, values = _filters(query)
    sql = (f"SELECT r.operation, r.model FROM snapshots s JOIN series r ON r.snapshot_id = s.id "  # noqa: S608
           f"WHERE {_IN_RANGE}{filters} GROUP BY r.operation, r.model "
           f"ORDER BY SUM(r.count) DESC, r.operation, r.model LIMIT {MAX_SERIES + 1}")
    return [(op, model) for op, model in conn.execute(sql, {**where, **values})]


def _bucket_seconds(conn: sqlite3.Connection, where: dict[str, object]) -> dict[int, float]:
    """Per bucket, the seconds its snapshots cover (the denominator of a rate)."""
    sql = (f"SELECT {_BUCKET}, SUM(s.interval_seconds) FROM snapshots s "  # noqa: S608
           f"WHERE {_IN_RANGE} GROUP BY 1")
    return dict(conn.execute(sql, where).fetchall())


def _aggregate(metric: Metric) -> str:
    column = f"r.{metric.column}"
    if metric.combine == "max":
        return f"MAX({column})"
    if metric.combine == "rate":
        return f"SUM({column})"
    weight = f"r.{metric.weight}"
    # Rows without a value (or weight) count for nothing; all of them: NULL (0/0 is NULL).
    return (f"SUM({column} * {weight}) / "
            f"SUM(CASE WHEN {column} IS NOT NULL THEN {weight} END)")


class SeriesTable(NamedTuple):
    """Every metric of the busiest series over one range's buckets, read in one pass: per
    (operation, model), per metric, per bucket index, the combined value (a rate's is its
    event count); ``seconds``: per bucket, the seconds its snapshots cover."""

    values: dict[tuple[str, str], dict[str, dict[int, float | None]]]
    seconds: dict[int, float]
    truncated: bool


def _series_table(conn: sqlite3.Connection, query: SeriesQuery, where: dict[str, object]
                  ) -> SeriesTable:
    chosen = _busiest(conn, query, where)
    truncated = len(chosen) > MAX_SERIES
    chosen = chosen[:MAX_SERIES]
    values: dict[tuple[str, str], dict[str, dict[int, float | None]]] = {
        pair: {name: {} for name in SERIES_METRICS} for pair in chosen}
    if not chosen:
        return SeriesTable(values, {}, False)
    pairs = ", ".join(f"(:o{i}, :m{i})" for i in range(len(chosen)))
    names = {f"{key}{i}": value for i, pair in enumerate(chosen)
             for key, value in zip("om", pair, strict=True)}
    aggregates = ", ".join(_aggregate(metric) for metric in SERIES_METRICS.values())
    sql = (f"SELECT r.operation, r.model, {_BUCKET}, {aggregates} "  # noqa: S608
           f"FROM snapshots s JOIN series r ON r.snapshot_id = s.id "
           f"WHERE {_IN_RANGE} AND (r.operation, r.model) IN (VALUES {pairs}) "
           f"GROUP BY r.operation, r.model, 3")
    for operation, model, bucket, *combined in conn.execute(sql, {**where, **names}):
        by_metric = values[(operation, model)]
        for name, value in zip(SERIES_METRICS, combined, strict=True):
            by_metric[name][bucket] = value
    return SeriesTable(values, _bucket_seconds(conn, where), truncated)


def _series_points(table: SeriesTable, name: str, metric: Metric, buckets: Buckets
                   ) -> list[dict]:
    result = []
    for (operation, model), by_metric in table.values.items():
        by_bucket = by_metric[name]
        if metric.combine == "rate":  # no row in a bucket with snapshots: idle, 0 events/s
            by_bucket = {b: (by_bucket.get(b) or 0) / s
                         for b, s in table.seconds.items() if s > 0}
        result.append({"operation": operation, "model": model,
                       "points": _points(buckets, by_bucket, metric.scale)})
    return result


def _event_points(conn: sqlite3.Connection, buckets: Buckets, where: dict[str, object]
                  ) -> list[dict]:
    """Events per second per outcome: each snapshot's increase of the total over the one
    before it, divided by the seconds it covers, summed per bucket. A decrease (a state
    started afresh) or a total the row lacks counts for nothing."""
    diffs = ", ".join(f"{name} - LAG({name}) OVER w AS {name}" for name in EVENT_OUTCOMES)
    sums = ", ".join(f"SUM(CASE WHEN {name} >= 0 THEN {name} END), "
                     f"SUM(CASE WHEN {name} >= 0 THEN interval_seconds END)"
                     for name in EVENT_OUTCOMES)
    # From the last snapshot before the range: the first one in it needs its predecessor.
    sql = (f"SELECT {_BUCKET.replace('s.unix', 'unix')}, {sums} FROM ("  # noqa: S608
           f"SELECT unix, interval_seconds, {diffs} FROM snapshots "
           "WHERE unix >= COALESCE((SELECT MAX(unix) FROM snapshots WHERE unix < :start), "
           ":start) AND unix < :end WINDOW w AS (ORDER BY unix, id)"
           ") WHERE unix >= :start GROUP BY 1")
    rates: dict[str, dict[int, float | None]] = {name: {} for name in EVENT_OUTCOMES}
    for bucket, *pairs in conn.execute(sql, where):
        for i, name in enumerate(EVENT_OUTCOMES):
            events, seconds = pairs[2 * i], pairs[2 * i + 1]
            rates[name][bucket] = events / seconds if events is not None and seconds else None
    return [{"outcome": name, "points": _points(buckets, rates[name], 1.0)}
            for name in EVENT_OUTCOMES]


def _points(buckets: Buckets, by_bucket: dict[int, float | None], scale: float
            ) -> list[list[float | None]]:
    points: list[list[float | None]] = []
    for index, unix in enumerate(buckets.times()):
        value = by_bucket.get(index)
        points.append([unix, None if value is None else round(value * scale, DIGITS)])
    return points


# -- the endpoint ------------------------------------------------------------------------------
class SeriesApi:
    """Answer ``/api/series`` from the history in ``state_dir`` (None: no history for this
    endpoint). ``snapshot_interval`` is the shortest bucket; ``clock`` gives Unix time."""

    def __init__(self, state_dir: str | None, snapshot_interval: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.state_dir = state_dir
        self.snapshot_interval = snapshot_interval
        self.clock = clock
        self._slots = threading.BoundedSemaphore(MAX_CONCURRENT)
        self._lock = threading.Lock()  # guards _cache
        # query -> (monotonic time it expires, the answer as JSON)
        self._cache: OrderedDict[SeriesQuery, tuple[float, bytes]] = OrderedDict()
        # (range, operation, model) -> (the newest snapshot id and the first bucket it was
        # read with, the table): valid until a snapshot is added or the buckets move on.
        self._tables: OrderedDict[tuple[str, str | None, str | None],
                                  tuple[tuple[int, float], SeriesTable]] = OrderedDict()

    def __call__(self, query_string: str, deadline: float) -> bytes:
        """The answer to one request (the URL's query string) as JSON, by ``deadline``
        (monotonic); ApiError for a bad parameter (400), or when it cannot be answered in
        time (503)."""
        query = parse_query(query_string)
        if (cached := self._cached(query)) is not None:
            return cached
        if not self._slots.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise ApiError(503, f"busy: {MAX_CONCURRENT} series queries are running; try "
                                "again in a moment")
        try:
            document = self.answer(query, deadline)
        finally:
            self._slots.release()
        body = json.dumps(document, separators=(",", ":")).encode() + b"\n"
        lifetime = float(document["step_seconds"]) * CACHE_SHARE_OF_STEP  # type: ignore[arg-type]
        if lifetime >= self.snapshot_interval:
            with self._lock:
                self._cache[query] = (time.monotonic() + lifetime, body)
                while len(self._cache) > CACHE_ENTRIES:
                    self._cache.popitem(last=False)
        return body

    def _cached(self, query: SeriesQuery) -> bytes | None:
        with self._lock:
            entry = self._cache.get(query)
            if entry is None or entry[0] < time.monotonic():
                return None
            return entry[1]

    def _table(self, conn: sqlite3.Connection, query: SeriesQuery, buckets: Buckets,
               where: dict[str, object]) -> SeriesTable:
        """The table of every metric for ``query``'s range and filters: the one kept, while
        no snapshot was added since and its buckets are the same, else read anew."""
        key = (query.range, query.operation, query.model)
        newest = conn.execute("SELECT MAX(id) FROM snapshots").fetchone()[0]
        stamp = (-1 if newest is None else int(newest), buckets.start)
        with self._lock:
            kept = self._tables.get(key)
        if kept is not None and kept[0] == stamp:
            return kept[1]
        table = _series_table(conn, query, where)
        with self._lock:
            self._tables[key] = (stamp, table)
            self._tables.move_to_end(key)
            while len(self._tables) > TABLE_ENTRIES:
                self._tables.popitem(last=False)
        return table

    def answer(self, query: SeriesQuery, deadline: float = math.inf) -> dict[str, object]:
        """The answer's document (see docs/http.md)."""
        metric = METRICS[query.metric]
        buckets = buckets_for(RANGES[query.range], self.snapshot_interval, self.clock())
        document: dict[str, object] = {
            "metric": query.metric, "unit": metric.unit if metric else EVENTS_UNIT,
            "range": query.range, "from_unix": buckets.start, "to_unix": buckets.end,
            "step_seconds": buckets.step, "series": [], "truncated": False, "history": "ok",
        }
        if self.state_dir is None:
            document["history"] = "no history database for this endpoint"
            return document
        where: dict[str, object] = {"start": buckets.start, "end": buckets.end,
                                    "step": buckets.step}
        try:
            with reading(self.state_dir, timeout=max(0.0, deadline - time.monotonic())
                         ) as conn:
                if conn is None:
                    document["history"] = (f"no history yet: ai-analyticsd writes "
                                           f"{history_path(self.state_dir)} at its first "
                                           "snapshot")
                    return document
                conn.set_progress_handler(lambda: time.monotonic() > deadline, PROGRESS_STEPS)
                if metric is None:
                    document["series"] = _event_points(conn, buckets, where)
                else:
                    table = self._table(conn, query, buckets, where)
                    document["series"] = _series_points(table, query.metric, metric, buckets)
                    document["truncated"] = table.truncated
        except StateError as exc:
            if time.monotonic() > deadline:  # the progress handler interrupted the query
                raise ApiError(503, "the history query did not finish within the request's "
                                    "time; try a shorter range") from None
            document["history"] = f"history unreadable: {exc}"
        return document


__all__ = ["MAX_POINTS", "MAX_SERIES", "METRICS", "RANGES", "ApiError", "BadRequest",
           "SeriesApi", "parse_query"]
