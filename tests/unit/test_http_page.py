"""The live page's backend in this process: the page's files (``GET /``, ``/ui/<name>``), the
security headers on every answer, and ``GET /api/series`` against a history written with
known rows (docs/http.md). The rule for addresses beyond loopback needs a second local
address: tests/e2e/test_http_exposure.py."""

from __future__ import annotations

import json
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from ai_analytics.core.history import HistoryStore, history_path
from ai_analytics.daemon.http import series_api
from ai_analytics.daemon.http.series_api import (
    MAX_POINTS,
    MAX_SERIES,
    METRICS,
    ApiError,
    SeriesApi,
)
from ai_analytics.daemon.http.server import SECURITY_HEADERS

import documents
from helpers import EVENTS, fetch

# A multiple of every step below but 7d's (2520 s), so the buckets are easy to name.
NOW = 1_800_000_000.0
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; "
       "frame-ancestors 'none'")


def assert_security_headers(headers) -> None:
    assert headers["Content-Security-Policy"] == CSP
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"


# -- the page's files ------------------------------------------------------------------------
@pytest.fixture
def page_dir(tmp_path: Path) -> Path:
    """A page folder like the real one, plus what must not be served: a hidden file, a
    Python file, and a symlink to a file outside the folder."""
    page = tmp_path / "page"
    (page / "vendor" / "uplot").mkdir(parents=True)
    (page / "index.html").write_text("<!doctype html><title>t</title>")
    (page / "app.js").write_text("'use strict';")
    (page / "app.css").write_text("body {}")
    (page / "vendor" / "uplot" / "uPlot.iife.min.js").write_text("var uPlot;")
    (page / "vendor" / "uplot" / "LICENSE").write_text("MIT")
    (page / ".secret").write_text("no")
    (page / "tool.py").write_text("no")
    (tmp_path / "outside.txt").write_text("outside")
    (page / "link.txt").symlink_to(tmp_path / "outside.txt")
    return page


@pytest.mark.parametrize(("path", "content_type", "body"), [
    ("/", "text/html; charset=utf-8", b"<!doctype html><title>t</title>"),
    ("/ui/index.html", "text/html; charset=utf-8", b"<!doctype html><title>t</title>"),
    ("/ui/app.js", "text/javascript; charset=utf-8", b"'use strict';"),
    ("/ui/app.css", "text/css; charset=utf-8", b"body {}"),
    ("/ui/vendor/uplot/uPlot.iife.min.js", "text/javascript; charset=utf-8", b"var uPlot;"),
    ("/ui/vendor/uplot/LICENSE", "text/plain; charset=utf-8", b"MIT"),
])
def test_page_files_are_served_with_their_type_and_headers(serve, page_dir, path,
                                                           content_type, body):
    server = serve(page_dir=page_dir)
    status, headers, received = fetch(server, path=path)
    assert (status, headers["Content-Type"], received) == (200, content_type, body)
    assert headers["Cache-Control"] == "no-cache"  # they change with the daemon's version
    assert_security_headers(headers)
    head_status, head_headers, head_body = fetch(server, "HEAD", path)
    assert (head_status, head_body) == (200, b"")
    assert head_headers["Content-Length"] == str(len(body))


@pytest.mark.parametrize("path", [
    "/ui/x", "/ui/", "/ui", "/ui/.secret", "/ui/tool.py", "/ui/link.txt", "/ui/../server.py",
    "/ui/vendor/../index.html", "/ui/%2e%2e/server.py", "/ui//index.html",
    "/ui/vendor/uplot", "/ui/../../../../etc/passwd", "/index.html",
])
def test_names_outside_the_allow_list_are_404(serve, page_dir, path):
    """Only the names found at start are served: no traversal, no hidden or unknown file, no
    symlink out of the folder."""
    status, headers, body = fetch(serve(page_dir=page_dir), path=path)
    assert status == 404, path
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body)["error"].startswith("no such path: ")
    assert_security_headers(headers)


def test_a_file_added_after_start_is_not_served(serve, page_dir):
    server = serve(page_dir=page_dir)
    (page_dir / "late.js").write_text("late")
    assert fetch(server, path="/ui/late.js")[0] == 404


def test_no_page_folder_answers_404(serve, tmp_path):
    status, _, body = fetch(serve(page_dir=tmp_path / "missing"), path="/")
    assert status == 404 and b"no such path: /" in body


def test_the_installed_page_has_an_index(serve):
    """The package's own folder (package data) holds the page's index."""
    status, headers, _ = fetch(serve(), path="/")
    assert (status, headers["Content-Type"]) == (200, "text/html; charset=utf-8")


def test_every_answer_carries_the_security_headers(serve):
    """Data (no-store), errors, /metrics and http.server's own error answers alike."""
    server = serve(metrics=lambda: b"x 1\n")
    answers = [fetch(server, path=path) for path in ("/status", "/healthz", "/metrics",
                                                     "/nope", "/api/series")]
    answers.append(fetch(server, "POST", "/status", body=b"x"))
    for status, headers, _ in answers:
        assert_security_headers(headers)
        assert headers["Cache-Control"] == "no-store", status
    assert SECURITY_HEADERS[0] == ("Content-Security-Policy", CSP)


# -- /api/series -----------------------------------------------------------------------------
def stats(count: int, errors: int, p99: float, quality: tuple[int, float] | None = None,
          cache: tuple[int, int] = (0, 0), ttft_p99: float | None = None):
    """One series' interval: ``count`` events, ``errors`` of them failed, p99 (p50 half of
    it), quality (count, mean), cache (lookups, hits), TTFT p99 (p50 half of it)."""
    return documents.window_stats(
        count, errors, throughput_per_s=count / 5.0,
        latency_ms=documents.distribution(p99 / 2, p99, p99),
        quality=documents.quality_stats(*quality) if quality else None,
        lookups=cache[0], hits=cache[1],
        ttft_ms=documents.counted(count, ttft_p99 / 2, ttft_p99) if ttft_p99 else None)


def row(operation: str, model: str, **kwargs) -> dict[str, object]:
    return {"operation": operation, "model": model, "stats": stats(**kwargs)}


def events(received: int, dropped: int = 0, no_lane: int | None = 0) -> dict[str, object]:
    return {**EVENTS, "received": received, "dropped": dropped, "overwritten": 0,
            "invalid": 0, "no_lane": no_lane}


@pytest.fixture
def history(state_dir: Path) -> HistoryStore:
    store = HistoryStore(str(state_dir), 1e9, 256.0)
    yield store
    store.close()


@pytest.fixture
def known_history(history: HistoryStore) -> HistoryStore:
    """Two 5-s snapshots in one 15-s bucket of the 1h range (each its own bucket of the 5m
    range), and one more an hour and a half back (in 24h only):

    - chat/llama: 10 events, 1 error, p99 100 ms, quality 4 x 0.5, cache 8 lookups 2 hits,
      TTFT p99 40 ms; then 30 events, no error, p99 300 ms, quality 12 x 0.9, no lookups,
      no TTFT.
    - embed/bge: 5 events in the first snapshot only.
    """
    history.append(NOW - 5400.0, 5.0, events(0), [row("chat", "llama", count=2, errors=0,
                                                       p99=50.0)])
    history.append(NOW - 100.0, 5.0, events(100, 1), [
        row("chat", "llama", count=10, errors=1, p99=100.0, quality=(4, 0.5), cache=(8, 2),
            ttft_p99=40.0),
        row("embed", "bge", count=5, errors=0, p99=20.0)])
    history.append(NOW - 95.0, 5.0, events(140, 1), [
        row("chat", "llama", count=30, errors=0, p99=300.0, quality=(12, 0.9))])
    return history


@pytest.fixture
def api(state_dir: Path) -> SeriesApi:
    return SeriesApi(str(state_dir), 5.0, clock=lambda: NOW)


def get(server, query: str) -> tuple[int, dict]:
    status, headers, body = fetch(server, path=f"/api/series?{query}")
    assert headers["Content-Type"] == "application/json"
    assert headers["Cache-Control"] == "no-store"
    return status, json.loads(body)


def values(answer: dict, **names: str) -> dict[float, float]:
    """The non-null points of the one series named by ``names``, by time."""
    (series,) = [s for s in answer["series"] if all(s.get(k) == v for k, v in names.items())]
    return {t: v for t, v in series["points"] if v is not None}


# The two snapshots' bucket in the 1h range: 15-s buckets from NOW + 15 - 3600.
BUCKET_1H = NOW - 105.0


@pytest.mark.parametrize(("metric", "unit", "in_5m", "in_1h"), [
    # events/s: the bucket's events over the seconds its snapshots cover
    ("rate", "events/s", {NOW - 100: 2.0, NOW - 95: 6.0}, 4.0),
    # weighted by events: (0.1 x 10 + 0 x 30) / 40
    ("error_pct", "%", {NOW - 100: 10.0, NOW - 95: 0.0}, 2.5),
    # percentiles: the bucket's maximum
    ("p50_ms", "ms", {NOW - 100: 50.0, NOW - 95: 150.0}, 150.0),
    ("p95_ms", "ms", {NOW - 100: 100.0, NOW - 95: 300.0}, 300.0),
    ("p99_ms", "ms", {NOW - 100: 100.0, NOW - 95: 300.0}, 300.0),
    ("ttft_p50_ms", "ms", {NOW - 100: 20.0}, 20.0),
    ("ttft_p99_ms", "ms", {NOW - 100: 40.0}, 40.0),
    # weighted by the scored events: (0.5 x 4 + 0.9 x 12) / 16
    ("quality", "score", {NOW - 100: 0.5, NOW - 95: 0.9}, 0.8),
    # weighted by lookups: the second snapshot had none
    ("cache_hit_pct", "%", {NOW - 100: 25.0}, 25.0),
])
def test_each_metric_in_its_buckets(serve, api, known_history, metric, unit, in_5m, in_1h):
    server = serve(series=api)
    status, answer = get(server, f"metric={metric}&range=5m&operation=chat&model=llama")
    assert status == 200, answer
    assert (answer["metric"], answer["unit"], answer["range"]) == (metric, unit, "5m")
    assert (answer["history"], answer["truncated"]) == ("ok", False)
    assert values(answer) == in_5m
    status, answer = get(server, f"metric={metric}&range=1h&operation=chat&model=llama")
    assert values(answer) == {BUCKET_1H: in_1h}


def test_rate_is_zero_where_the_series_was_idle_and_null_where_nothing_ran(serve, api,
                                                                           known_history):
    """embed/bge had no row in the second snapshot: 0 events/s there, not a gap; a bucket
    without any snapshot (the daemon not running) is a gap."""
    _, answer = get(serve(series=api), "metric=rate&range=5m&model=bge")
    (series,) = answer["series"]
    by_time = dict(map(tuple, series["points"]))
    assert (by_time[NOW - 100], by_time[NOW - 95], by_time[NOW - 90]) == (1.0, 0.0, None)


@pytest.mark.parametrize(("range_", "step", "points"), [
    ("5m", 5.0, 60), ("1h", 15.0, 240), ("24h", 360.0, 240), ("7d", 2520.0, 240),
])
def test_ranges_cut_into_at_most_240_aligned_buckets(serve, api, known_history, range_, step,
                                                     points):
    status, answer = get(serve(series=api), f"metric=p99_ms&range={range_}")
    assert status == 200
    assert answer["step_seconds"] == step
    assert answer["to_unix"] > NOW >= answer["to_unix"] - step  # the last bucket holds now
    assert answer["to_unix"] - answer["from_unix"] == pytest.approx(points * step)
    assert answer["to_unix"] % step == 0
    for series in answer["series"]:
        times = [t for t, _ in series["points"]]
        assert len(times) == points <= MAX_POINTS
        assert times == sorted(times) and times[0] == answer["from_unix"]
    busiest = [(s["operation"], s["model"]) for s in answer["series"]]
    assert busiest == [("chat", "llama"), ("embed", "bge")]


def test_24h_reaches_the_older_snapshot(serve, api, known_history):
    _, answer = get(serve(series=api), "metric=p99_ms&range=24h&model=llama")
    assert len(values(answer)) == 2  # the one 1.5 h back, and the recent bucket
    assert max(values(answer).values()) == 300.0


def test_the_snapshot_interval_is_the_shortest_step(serve, state_dir, known_history):
    """A 30-s snapshot interval: 5m gets 10 buckets of 30 s, not 60 buckets of 5 s."""
    server = serve(series=SeriesApi(str(state_dir), 30.0, clock=lambda: NOW))
    _, answer = get(server, "metric=rate&range=5m")
    assert answer["step_seconds"] == 30.0
    assert len(answer["series"][0]["points"]) == 10


def test_events_are_per_outcome_rates_from_the_totals(serve, api, history):
    """Each snapshot's increase of a total over the one before it (even one before the
    range), per second it covers; a decrease (a fresh state) and a missing total are gaps."""
    history.append(NOW - 400.0, 5.0, events(50), [])  # before the 5m range: the base
    history.append(NOW - 100.0, 5.0, events(100, 5, no_lane=None), [])
    history.append(NOW - 95.0, 5.0, events(130, 5, no_lane=4), [])
    history.append(NOW - 90.0, 5.0, events(10, 0, no_lane=6), [])  # started afresh
    status, answer = get(serve(series=api), "metric=events&range=5m")
    assert status == 200 and answer["unit"] == "events/s"
    assert [s["outcome"] for s in answer["series"]] == ["received", "dropped", "overwritten",
                                                        "invalid", "no_lane"]
    assert all("operation" not in s for s in answer["series"])
    assert values(answer, outcome="received") == {NOW - 100: 10.0, NOW - 95: 6.0}
    assert values(answer, outcome="dropped") == {NOW - 100: 1.0, NOW - 95: 0.0}
    assert values(answer, outcome="no_lane") == {NOW - 90: 0.4}


def test_at_most_50_series_the_busiest(serve, api, history):
    """60 series: the 50 with the most events in the range, busiest first, truncated."""
    rows = [row("op", f"m{i:02d}", count=i + 1, errors=0, p99=1.0) for i in range(60)]
    history.append(NOW - 10.0, 5.0, events(0), rows)
    _, answer = get(serve(series=api), "metric=p99_ms&range=1h")
    assert answer["truncated"] is True
    assert len(answer["series"]) == MAX_SERIES == 50
    assert [s["model"] for s in answer["series"]] == [f"m{i:02d}" for i in range(59, 9, -1)]
    _, filtered = get(serve(series=api), "metric=p99_ms&range=1h&model=m03")
    assert (filtered["truncated"], [s["model"] for s in filtered["series"]]) == (False, ["m03"])


@pytest.mark.parametrize(("query", "expected"), [
    ("operation=chat", {("chat", "llama")}),
    ("model=bge", {("embed", "bge")}),
    ("operation=chat&model=bge", set()),
    ("operation=embed&model=bge", {("embed", "bge")}),
    ("", {("chat", "llama"), ("embed", "bge")}),
    ("operation=cha", set()),  # exact, not a prefix
])
def test_operation_and_model_filter_exactly(serve, api, known_history, query, expected):
    _, answer = get(serve(series=api), f"metric=rate&range=1h&{query}")
    assert {(s["operation"], s["model"]) for s in answer["series"]} == expected


def test_names_are_data_whatever_they_hold(serve, api, history):
    """A hostile model name comes back as the same characters, and filters exactly."""
    name = "<img src=x onerror=alert(1)>"
    history.append(NOW - 10.0, 5.0, events(0), [row("chat", name, count=1, errors=0, p99=1.0)])
    _, answer = get(serve(series=api), "metric=rate&range=5m&model=%3Cimg%20src%3Dx%20"
                                       "onerror%3Dalert(1)%3E")
    assert [s["model"] for s in answer["series"]] == [name]


@pytest.mark.parametrize(("query", "reason"), [
    ("range=1h", "metric is missing; metric must be one of rate, error_pct, p50_ms"),
    ("metric=p98_ms&range=1h", "metric 'p98_ms' is not known; metric must be one of rate"),
    ("metric=&range=1h", "metric '' is not known"),
    ("metric=rate", "range is missing; range must be one of 5m, 1h, 24h, 7d"),
    ("metric=rate&range=2h", "range '2h' is not known; range must be one of 5m, 1h, 24h, 7d"),
    ("metric=rate&range=1h&limit=5", "unknown parameter 'limit'; the parameters are metric, "
                                     "range, operation, model"),
    ("metric=rate&range=1h&range=5m", "parameter range given twice"),
    ("metric=rate&range=1h&model=a&model=a", "parameter model given twice"),
    (f"metric=rate&range=1h&model={'m' * 128}", "parameter model is longer than 127 bytes"),
    (f"metric=rate&range=1h&{'p' * 128}=1", "a parameter name is longer than 127 bytes"),
    ("metric=rate&range=1h&model=%ff%fe", "parameter model is not valid UTF-8 text"),
    ("metric=rate&range=1h&operation=a%0Ab", "parameter operation holds control characters"),
])
def test_bad_parameters_get_400_with_one_line_naming_them(serve, api, known_history, query,
                                                          reason):
    status, answer = get(serve(series=api), query)
    assert status == 400
    assert answer["status"] == 400
    assert answer["error"].startswith(reason), answer["error"]
    assert "\n" not in answer["error"]


def test_the_longest_accepted_value_is_127_bytes(serve, api, known_history):
    status, answer = get(serve(series=api), f"metric=rate&range=1h&model={quote('é' * 63)}x")
    assert (status, answer["series"]) == (200, [])


def test_no_history_yet_answers_an_empty_list_with_the_reason(serve, api, state_dir):
    status, answer = get(serve(series=api), "metric=rate&range=1h")
    assert status == 200
    assert answer["series"] == [] and answer["truncated"] is False
    assert answer["history"] == (f"no history yet: ai-analyticsd writes "
                                 f"{history_path(str(state_dir))} at its first snapshot")


def test_an_unreadable_history_answers_an_empty_list_with_the_reason(serve, api, state_dir):
    state_dir.mkdir()
    Path(history_path(str(state_dir))).write_bytes(b"this is not a database" * 100)
    status, answer = get(serve(series=api), "metric=events&range=5m")
    assert status == 200 and answer["series"] == []
    assert answer["history"].startswith("history unreadable: cannot ")
    assert history_path(str(state_dir)) in answer["history"]


def test_without_a_history_for_the_endpoint(serve):
    _, answer = get(serve(series=SeriesApi(None, 5.0)), "metric=rate&range=5m")
    assert (answer["series"], answer["history"]) == ([], "no history database for this "
                                                          "endpoint")


def test_only_get_and_head(serve, api, known_history):
    server = serve(series=api)
    status, headers, _ = fetch(server, "POST", "/api/series?metric=rate&range=5m", body=b"")
    assert (status, headers["Allow"]) == (405, "GET, HEAD")
    assert fetch(server, "HEAD", "/api/series?metric=rate&range=5m")[:3:2] == (200, b"")


def test_a_query_past_its_deadline_is_interrupted(api, known_history, monkeypatch):
    """The query stops at the request's deadline (503), and leaves its slot free. (The
    deadline is checked every PROGRESS_STEPS steps of SQLite: here every step, for a history
    this small.)"""
    monkeypatch.setattr(series_api, "PROGRESS_STEPS", 1)
    with pytest.raises(ApiError) as info:
        api("metric=p99_ms&range=7d", time.monotonic() - 1.0)
    assert info.value.status == 503
    assert "did not finish" in str(info.value)
    answer = json.loads(api("metric=p99_ms&range=7d", time.monotonic() + 10.0))
    assert answer["history"] == "ok"


def test_long_ranges_reuse_an_answer_for_a_share_of_their_step(api, known_history):
    """7d (2520-s buckets) answers again from its cache for 105 s; 5m is always read anew."""
    def answer(range_: str) -> dict:
        return json.loads(api(f"metric=rate&range={range_}&model=new", time.monotonic() + 10))

    assert answer("7d")["series"] == answer("5m")["series"] == []
    known_history.append(NOW - 1.0, 5.0, events(0), [row("op", "new", count=5, errors=0,
                                                         p99=1.0)])
    assert answer("7d")["series"] == []
    assert [s["model"] for s in answer("5m")["series"]] == ["new"]


def test_a_snapshot_added_reaches_every_metric_at_once(api, known_history):
    """The metrics of a range are read together and kept until the next snapshot: one added
    since shows in the next answer of any metric, not only of the one asked before it."""
    def models(metric: str) -> list[str]:
        answer = json.loads(api(f"metric={metric}&range=5m", time.monotonic() + 10))
        return sorted(s["model"] for s in answer["series"])

    before = models("p99_ms")
    known_history.append(NOW - 1.0, 5.0, events(0), [row("op", "new", count=5, errors=0,
                                                         p99=1.0)])
    assert models("rate") == sorted([*before, "new"])
    assert models("p99_ms") == sorted([*before, "new"])


def test_every_metric_answers_on_an_empty_history(serve, api, history):
    server = serve(series=api)
    for metric in METRICS:
        status, answer = get(server, f"metric={metric}&range=7d")
        assert status == 200 and answer["history"] == "ok", metric
