"""The operator's view in this process: ``ai-analytics status`` (tables, --json, --watch,
exit codes) and ``ai-analytics lanes`` through click's CliRunner, on crafted documents and
with the namespace lock held here as a running daemon holds it."""

from __future__ import annotations

import contextlib
import copy
import fcntl
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ai_analytics.cli import main as cli
from ai_analytics.cli import status
from ai_analytics.cli import tables as fmt
from ai_analytics.cli.tables import Column, table
from ai_analytics.core.document import ModelProcess, SnapshotDocument, WindowStats
from ai_analytics.core.exits import CliExit
from ai_analytics.core.state import write_state

import documents
from helpers import (
    SHM_DIR,
    STATUS_TITLES,
    invoke,
    read_config,
    row,
    section,
)

NOW = 1_800_000_000.0
LONG_MODEL = "llama-3-8b-instruct-with-a-very-long-name-indeed"
WINDOW_NAMES = ("10s", "1m", "5m", "since_start")


# -- a crafted document with every section, from the factory (tests/documents.py) -------------

def stats(count: int, errors: int, rate: float, p50: float | None, p95: float | None,
          p99: float | None, quality: float | None) -> WindowStats:
    """One window of a series, with the numbers whose formatting the tests know."""
    return documents.window_stats(
        count, errors, throughput_per_s=rate, latency_ms=documents.distribution(p50, p99, p95),
        quality=None if quality is None else documents.quality_stats(count, quality))


def full_document(namespace: str = "prod") -> SnapshotDocument:
    """A snapshot as docs/snapshot.md describes it, plus findings and recommendations, with
    two GPUs (one reporting nothing) and numbers whose formatting the tests know."""
    lane = f"{namespace}.lane.2908.0"
    dead = f"{namespace}.lane.3001.0"
    chat = documents.series("chat_completion", LONG_MODEL,
                            every=stats(1234, 62, 20.567, 12.34, 812.0, 1234.5, 0.912))
    chat["count"] = 123456  # all time, before this daemon started too
    embedding = documents.series(
        "embedding", "bge-small", every=stats(50, 1, 0.1, 0.5, 1.0, 1.1, None),
        **{"10s": stats(0, 0, 0.0, None, None, None, None),
           "1m": stats(7, 0, 0.117, 0.42, 0.9, 0.95, None),
           "5m": stats(50, 1, 0.1667, 0.5, 1.0, 1.1, None)})
    worker: ModelProcess = {"pid": 2908, "rss_bytes": 2_147_483_648, "gpu_memory_mb": 15360.0}
    document = documents.snapshot(
        namespace, NOW - 2.5,
        lanes=[documents.lane(lane, pid=2908, fill=0.9375, pending=7680, tail=122320,
                              received=122317, dropped=4321, invalid=3, thread_id=2911,
                              uid=1000),
               documents.lane(dead, pid=3001, state="dead", pending=0, tail=50, received=50,
                              thread_id=3001, uid=1000)],
        operations=[chat, embedding],
        models=[documents.model("bge-small", count=7, errors=0, mean_ms=0.5),
                documents.model(LONG_MODEL, count=1234, errors=62, mean_ms=1500.0,
                                processes=[worker])],
        caches=[documents.cache("kv-cache", size=98765, reporting_lanes=3,
                                evictions_total=4567, evictions_per_s=(1.5, 2.5, 0.5))],
        findings=[
            documents.finding("queue_congestion", "lane", lane, "warning",
                              "Lane 2908.0 is 94% full (threshold 80%): its producer emits "
                              "faster than the daemon drains it.", NOW - 125, 0.8,
                              {"fill": 0.9375}),
            documents.finding("event_loss", "namespace", namespace, "critical",
                              "3.4% of events were lost in the last minute.", NOW - 60, 0.05,
                              {"ratio": 0.034}),
            documents.finding("producer_died", "lane", dead, "info",
                              "Worker 3001 died with events still pending.", NOW - 5),
        ],
        recommendations=[
            documents.recommendation(
                "queue_size", "lane", lane,
                "Raise max_queue_size from 8192 to 16384: about 9000 events/s arrive per live "
                "lane and the daemon may wait 1 s between drains.",
                f"queue_congestion:lane:{lane}", "max_queue_size", 16384),
            documents.recommendation("caching", "model", "bge-small",
                                     "Cache the embeddings: the hit rate is 12%."),
        ])
    document["daemon"] = documents.daemon(pid=4242, started_unix=NOW - 7322.5,
                                          uptime_seconds=7320.0, cpu_percent=1.5,
                                          rss_bytes=61_000_000)
    document["events"] = documents.events(received=123506, dropped=4321, invalid=3,
                                          pending=7680)
    document["lanes_summary"] = documents.lanes_summary(live=1, dead=1, reclaimed=4,
                                                        rejected_segments=2)
    document["cardinality"] = documents.cardinality(operations=2, models=2, series=2)
    document["event_path"] = documents.event_path(
        max_fill=0.9375, drain_lag_seconds=1.234, records_per_batch=812.5,
        rates_per_s={"received": {"10s": 1.0, "1m": 2058.4, "5m": 3.0},
                     "dropped": {"10s": 0.0, "1m": 72.0, "5m": 0.0},
                     "overwritten": {"10s": 0.0, "1m": 0.0, "5m": 0.0},
                     "invalid": {"10s": 0.0, "1m": 0.05, "5m": 0.0},
                     "no_lane": {"10s": 0.0, "1m": 0.0, "5m": 0.0}})
    document["drain"] = documents.drain(batches=10, records=8125, last_batch=800)
    document["resources"] = documents.resources(
        documents.system(cpu_percent=12.5, memory_total_bytes=25_200_000_000,
                         memory_used_bytes=2_040_000_000,
                         memory_available_bytes=23_160_000_000, memory_percent=8.1),
        cpu_percent=1.5, rss_bytes=61_000_000,
        processes=[{"pid": 2908, "rss_bytes": 2_147_483_648, "gpu_memory_mb": 15360.0}],
        gpu_section=documents.gpu(devices=[
            documents.gpu_device(0, 97.0, memory_used_mb=15360.0, temperature_c=71,
                                 power_w=612.4),
            documents.gpu_device(1, None, memory_used_mb=None, memory_total_mb=None,
                                 temperature_c=None, power_w=None)]))
    return document


def healthy(document: SnapshotDocument) -> SnapshotDocument:
    """The same document with nothing wrong: no findings, no recommendations."""
    document = copy.deepcopy(document)
    document["findings"], document["recommendations"] = [], []
    return document


# -- rendering ---------------------------------------------------------------------------------

def test_render_shows_every_section_with_numbers_for_humans() -> None:
    """Every section of a full document appears under its title, with the key numbers as a
    human reads them (1,234; 12.3 ms; 1.2 s; percentages), GPU rows, lanes, caches, findings
    most severe first and recommendations with their config key and suggested value."""
    text = status.render_text(full_document(), width=200, now=NOW)
    for title in STATUS_TITLES:
        assert f"\n{title}" in text, title
    assert text.startswith("ai-analyticsd running · namespace prod · pid 4242 · version 0.1.0 "
                           "· up 2h 02m · snapshot 2.5 s old")
    assert "OPERATIONS (last 1m)" in text and "MODELS (last 1m)" in text
    assert row(text, "chat_completion")[2:] == ["1,234", "20.6", "5.0%", "12.3", "ms", "812",
                                                 "ms", "1.2", "s", "0.912"]
    assert row(text, "embedding")[2:] == ["7", "0.12", "0.0%", "0.42", "ms", "0.90", "ms",
                                          "0.95", "ms", "-"]
    models = section(text, "MODELS")
    assert row(models, "bge-small")[1:] == ["7", "0.0%", "0.50", "ms", "0", "-", "-"]
    assert next(line for line in models.splitlines() if "1,234" in line).split()[1:] == \
        ["1,234", "5.0%", "1.5", "s", "1", "2,048", "15,360"]
    resources = section(text, "RESOURCES")
    assert "system: CPU 12.5% · memory 8.1% (2.0 of 25.2 GB used)" in resources
    assert "daemon: CPU 1.5% · RSS 58.2 MB" in resources
    assert "workers: 1 process · RSS 2,048 MB in all" in resources
    assert row(resources, "0")[1:] == ["NVIDIA", "H200", "97.0%", "15,360", "/", "143,771",
                                       "10.7%", "71", "°C", "612", "W"]
    assert row(resources, "1")[1:] == ["NVIDIA", "H200", "-", "-", "/", "-", "-", "-", "-"]
    path = section(text, "EVENT PATH")
    assert ("events: received 123,506 · dropped 4,321 · overwritten 0 · invalid 3 · lost on "
            "restart 0 · no lane 0 · pending 7,680") in path
    assert "rates (last 1m): received 2,058/s · dropped 72.0/s" in path
    assert "1 live, 0 retired, 1 dead, 4 reclaimed, 0 waiting, 2 rejected segments" in path
    assert "max fill 93.8% · drain lag 1.2 s · 812 records/batch" in path
    assert row(path, "2908.0")[1:] == ["2908", "live", "drop", "93.8%", "7,680", "4,321", "0",
                                       "3"]
    assert row(section(text, "CACHES"), "kv-cache")[1:] == ["98,765", "3", "4,567", "2.5"]
    findings = section(text, "FINDINGS")
    assert findings.splitlines()[0] == "FINDINGS (1 critical, 1 warning, 1 info)"
    severities = [line.split()[0] for line in findings.splitlines()[2:]]
    assert severities == ["CRITICAL", "WARNING", "INFO"]
    flat = [" ".join(line.split()) for line in findings.splitlines()]
    assert "CRITICAL event_loss namespace prod 1m 00s 3.4% of events were lost in the last " \
        "minute." in flat
    assert any(line.startswith("WARNING queue_congestion lane 2908.0 2m 05s Lane 2908.0 is 94% "
                               "full") for line in flat)
    assert "INFO producer_died lane 3001.0 5 s Worker 3001 died with events still pending." \
        in flat
    recommendations = section(text, "RECOMMENDATIONS")
    assert recommendations.splitlines()[0] == "RECOMMENDATIONS (2)"
    assert "max_queue_size → 16384" in recommendations
    assert "Cache the embeddings: the hit rate is 12%." in recommendations


@pytest.mark.parametrize("width", [80, 100, 120])
def test_render_fits_the_terminal_and_truncates_long_names(width: int) -> None:
    """At 80, 100 and 120 columns no line is wider than the terminal: long names are cut with
    "…" (a 48-character model name never shows whole, room or not) and long messages are
    wrapped, not cut."""
    text = status.render_text(full_document(), width=width, now=NOW)
    too_wide = [line for line in text.splitlines() if len(line) > width]
    assert too_wide == []
    assert LONG_MODEL not in text and LONG_MODEL[:20] in text and "…" in text
    findings = " ".join(section(text, "FINDINGS").split())
    assert "3.4% of events were lost in the last minute." in findings


def test_render_gpu_unavailable_and_empty_sections_say_so() -> None:
    """Without a GPU the resources say "GPU: unavailable — <reason>"; a section with nothing
    to show says so in one line; a daemon that does not report findings says that."""
    document = full_document()
    document["resources"]["gpu"] = {"available": False, "devices": [],
                                    "reason": "NVML library libnvidia-ml.so.1 not found"}
    document.update(operations=[], models=[], caches=[], lanes=[], findings=[],
                    recommendations=[])
    text = status.render_text(document, width=100, now=NOW)
    assert "  GPU: unavailable — NVML library libnvidia-ml.so.1 not found" in text
    for title, line in [("OPERATIONS", "no operations yet"), ("MODELS", "no models"),
                        ("CACHES", "no caches reported"), ("FINDINGS", "no findings"),
                        ("RECOMMENDATIONS", "no recommendations")]:
        assert section(text, title).splitlines()[1:] == [f"  {line}"], title
    assert section(text, "EVENT PATH").splitlines()[-1] == "  no lanes attached"
    del document["findings"], document["recommendations"]
    text = status.render_text(document, width=100, now=NOW)
    assert "no findings (this daemon does not report them)" in text
    assert "no recommendations (this daemon does not make them)" in text


def test_render_survives_partial_and_malformed_documents() -> None:
    """A document with missing keys or values of the wrong type (an older or newer daemon, a
    hand-edited file) renders with "-" where a value is missing instead of raising."""
    for document in [
        {},
        {"namespace": "x", "daemon": "nope", "operations": "garbage", "models": [1, None],
         "resources": {"gpu": "x", "system": None}, "findings": [None, {"severity": 3}],
         "recommendations": [{"config_key": "batch_size"}], "lanes": [{"fill": "x"}],
         "events": {"received": "many"}, "caches": [{"name": None}], "written_unix": "yesterday"},
    ]:
        text = status.render_text(document, width=100, now=NOW)
        for title in STATUS_TITLES:
            assert title in text
        assert "snapshot age unknown" in text
    assert status.exit_code(True, {"findings": "bad"}) == CliExit.OK


def test_window_choice_changes_the_tables() -> None:
    """The tables show the chosen window; by default the daemon's insight window where the
    document states it (daemon.insight_window, else the findings' window), else 1m; a series
    with no events in the window is counted, not listed."""
    document = full_document()
    del document["daemon"]["insight_window"]  # as a daemon that does not state it
    assert status.default_window(document) == "1m"
    document["findings"][0]["window"] = document["findings"][1]["window"] = "5m"
    document["findings"][2]["window"] = "5m"
    assert status.default_window(document) == "5m"
    document["daemon"]["insight_window"] = "10s"
    assert status.default_window(document) == "10s"
    quiet = healthy(full_document())
    del quiet["daemon"]["insight_window"]
    assert status.default_window(quiet) == "1m"
    text = status.render_text(document, width=100, now=NOW)
    assert "OPERATIONS (last 10s)" in text and "MODELS (last 10s)" in text
    assert "1 more series had no events in the last 10s" in text
    assert "rates (last 10s): received 1.0/s" in text
    since = status.render_text(document, window="since_start", width=100, now=NOW)
    assert "OPERATIONS (since the daemon started)" in since
    assert row(since, "embedding")[2] == "50"


@pytest.mark.parametrize(
    ("running", "severities", "expected"),
    [
        (True, None, 0), (True, [], 0), (True, ["info"], 0), (True, ["info", "warning"], 1),
        (True, ["critical"], 1), (False, [], 3), (False, ["critical"], 3),
    ],
)
def test_exit_code_from_findings(running: bool, severities: list[str] | None,
                                 expected: int) -> None:
    """0 healthy, 1 when any finding is a warning or critical, 3 when no daemon runs
    (whatever its last findings were); info findings do not fail the check."""
    document = healthy(full_document())
    if severities is None:
        del document["findings"]
    else:
        document["findings"] = [{"severity": s, "kind": "k"} for s in severities]
    assert status.exit_code(running, document) == expected


def test_number_formats_and_tables() -> None:
    """The human formats ("-" for missing, NaN or bool) and the table helper: widths fit,
    names are cut with "…", messages are wrapped, numbers align right."""
    assert [fmt.count(v) for v in (1234, 0, None, math.nan, True)] == \
        ["1,234", "0", "-", "-", "-"]
    assert [fmt.milliseconds(v) for v in (0.4249, 12.34, 171.6, 1234.5, 150_000, None)] == \
        ["0.42 ms", "12.3 ms", "172 ms", "1.2 s", "2.5 min", "-"]
    assert [fmt.duration(v) for v in (42.9, 303, 7320, 3 * 86400 + 4 * 3600, -1)] == \
        ["42 s", "5m 03s", "2h 02m", "3d 04h", "-"]
    assert [fmt.rate(v) for v in (0, 0.117, 20.567, 2058.4)] == ["0", "0.12", "20.6", "2,058"]
    assert fmt.percent(0.0502) == "5.0%" and fmt.mebibytes(61_000_000) == "58.2"
    assert fmt.truncate("abcdef", 4) == "abc…" and fmt.truncate("abc", 4) == "abc"
    lines = table([Column("name", shrink=4), Column("n", right=True), Column("msg", wrap=5)],
                  [["a-long-name", 1, "one two three"], [None, 12345, "x"]], width=26, indent=0)
    assert lines == [
        "name          n  msg",
        "a-long-…      1  one two",
        "                 three",
        "-         12345  x",
    ]


# -- status with the namespace lock held here, as a running daemon holds it ------------------

@contextlib.contextmanager
def holding_namespace_lock(namespace: str) -> Iterator[None]:
    """Hold the namespace lock the way ai-analyticsd does: status then sees a running daemon
    and reads whatever state.json the test wrote."""
    fd = os.open(os.path.join(SHM_DIR, f"{namespace}.daemon.lock"),
                 os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def test_status_with_an_unreadable_state_file_exits_4(
    namespace: str, make_config: Callable[..., Path], state_dir: Path
) -> None:
    """A state file that is not JSON, with the daemon running: the status is unknown (4, not
    the 1 of a finding), and one line names the file; no traceback."""
    path = make_config()
    state_dir.mkdir(exist_ok=True)
    (state_dir / "state.json").write_text("{not json")
    with holding_namespace_lock(namespace):
        result = invoke("status", "--config", str(path))
    assert result.exit_code == CliExit.UNREADABLE == 4, result.output
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and "state.json" in result.stderr
    assert "Traceback" not in result.stderr


def test_status_exit_codes_and_json_from_the_state_file(
    namespace: str, make_config: Callable[..., Path], state_dir: Path
) -> None:
    """With the namespace lock held, status reads state.json: a warning or critical finding
    exits 1 and shows it; info only exits 0; --json prints the document unchanged except
    daemon.running; once the lock is released the same state gives 3 and NOT running."""
    path = make_config()
    document = full_document(namespace)
    document["written_unix"] = time.time()
    document["daemon"]["running"] = False  # as a stopped daemon leaves it
    write_state(str(state_dir), document)
    with holding_namespace_lock(namespace):
        result = invoke("status", "--config", str(path))
        assert result.exit_code == 1, result.output
        assert result.stdout.startswith(f"ai-analyticsd running · namespace {namespace}")
        assert "FINDINGS (1 critical, 1 warning, 1 info)" in result.stdout
        port = read_config(path)["http_port"]
        assert result.stdout.rstrip().endswith(f"page: http://127.0.0.1:{port}/")
        as_json = invoke("status", "--config", str(path), "--json")
        assert as_json.exit_code == 1
        expected = copy.deepcopy(document)
        expected["daemon"]["running"] = True
        assert json.loads(as_json.stdout) == expected
        document["findings"] = [document["findings"][2]]  # info only
        write_state(str(state_dir), document)
        assert invoke("status", "--config", str(path)).exit_code == 0
    stopped = invoke("status", "--config", str(path))
    assert stopped.exit_code == 3
    assert "page:" not in stopped.stdout  # no daemon, no page
    head = " ".join(stopped.stdout.split("\n\n")[0].split())
    assert head.startswith(f"ai-analyticsd is NOT running for namespace {namespace}: showing "
                           "shared memory directly; last snapshot from ")
    assert "LAST SNAPSHOT" in stopped.stdout
    assert json.loads(invoke("status", "--config", str(path), "--json").stdout)["daemon"][
        "running"] is False


@pytest.mark.parametrize(("settings", "line"), [
    ({}, "page: http://127.0.0.1:9466/"),
    ({"http_host": "0.0.0.0", "http_port": 8080}, "page: http://127.0.0.1:8080/"),
    ({"http_host": "::"}, "page: http://[::1]:9466/"),
    ({"http_host": "10.1.2.3"}, "page: http://10.1.2.3:9466/"),
    ({"http_enabled": False}, "page: HTTP endpoint disabled (http_enabled: false)"),
])
def test_page_line_names_the_url_status_prints(settings: dict[str, object], line: str) -> None:
    """The page's URL from http_host and http_port; a daemon on every address is reached
    through loopback (where it serves the page whatever the switch says)."""
    from ai_analytics.core.config import config_from_mapping

    assert status.page_line(config_from_mapping(settings)) == line


# -- the command line --------------------------------------------------------------------------

def test_help_documents_the_exit_codes() -> None:
    """status --help and lanes --help list every exit status and what it means."""
    help_text = invoke("status", "--help").stdout
    for text in ("--watch SECONDS", "--window [10s|1m|5m|since_start]", "--json",
                 "0    the daemon runs and no finding", "1    the daemon runs and a finding",
                 "3    ai-analyticsd is not running", "130  --watch stopped with Ctrl-C"):
        assert text in help_text, text
    lanes_help = invoke("lanes", "--help").stdout
    assert "0    shown" in lanes_help and "3    nothing at all" in lanes_help


@pytest.mark.parametrize("seconds", ["0.1", "0", "-1", "nan", "inf", "soon"])
def test_watch_interval_is_validated(seconds: str, make_config: Callable[..., Path]) -> None:
    """--watch below 0.2 s, not finite or not a number is a usage error (exit 2) that names
    the option, before anything is shown."""
    result = invoke("status", "--config", str(make_config()), "--watch", seconds)
    assert result.exit_code == 2
    assert "Invalid value for '--watch'" in result.stderr
    assert result.stdout == ""


def test_watch_without_a_terminal_prints_frames_then_exits_130(
    namespace: str, make_config: Callable[..., Path], state_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Piped (no TTY), --watch prints one frame per interval separated by a blank line,
    without ANSI codes; Ctrl-C ends it with exit 130 and no "Aborted!"; with --json each
    frame is one JSON document on one line."""
    path = make_config()
    document = healthy(full_document(namespace))
    document["written_unix"] = time.time()
    write_state(str(state_dir), document)
    naps: list[float] = []

    def sleep(seconds: float) -> None:
        naps.append(seconds)
        if len(naps) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(cli.time, "sleep", sleep)
    with holding_namespace_lock(namespace):
        result = invoke("status", "--config", str(path), "--watch", "0.5")
        assert result.exit_code == 130
        assert naps == [0.5, 0.5, 0.5]
        assert result.stdout.count("ai-analyticsd running · namespace") == 3
        assert result.stdout.count("\n\nai-analyticsd running") == 2
        assert "\x1b[" not in result.stdout and "Aborted" not in result.output
        naps.clear()
        as_json = invoke("status", "--config", str(path), "--watch", "0.2", "--json")
    assert as_json.exit_code == 130
    frames = as_json.stdout.splitlines()
    assert len(frames) == 3 and all(json.loads(f)["namespace"] == namespace for f in frames)


def test_event_path_shows_each_sinks_circuit():
    """The operator sees each sink's breaker: an open one with its skipped writes."""
    from ai_analytics.cli.status import render_event_path

    document = documents.snapshot("ns", lanes=[])
    document["sinks"]["state"]["state"] = "open"
    document["sinks"]["state"]["skipped"] = 12
    text = render_event_path(document)
    assert "sink history: closed" in text
    assert "sink state: open (12 writes skipped)" in text
