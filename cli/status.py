"""What ``ai-analytics status`` shows: the daemon's last snapshot as terminal tables, or,
when no daemon runs, the namespace's shared memory read directly.

Kept apart from the CLI so every part can be called and tested without a terminal:
``status_output`` returns what the command prints and its exit status; the ``render_*``
functions turn a snapshot document (docs/snapshot.md) into text. Rendering never trusts the
document's shape: it reads through the tolerant readers of ``ai_analytics.core.document``, and
a missing key or a value of the wrong type shows as "-", so a snapshot from an older or newer
daemon still renders.
"""

from __future__ import annotations

import dataclasses
import json
import textwrap
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import cast

from ai_analytics.cli import tables as fmt
from ai_analytics.cli.shm_view import LaneView, ShmView, read_namespace
from ai_analytics.cli.tables import DEFAULT_WIDTH, Column, table
from ai_analytics.client._segments import parse_lane_name
from ai_analytics.core.config import Config
from ai_analytics.core.document import SnapshotDocument, lookup, mapping, sequence
from ai_analytics.core.errors import StateError, host_port
from ai_analytics.core.exits import CliExit
from ai_analytics.core.namespace_lock import daemon_running
from ai_analytics.core.outcomes import SETTLED
from ai_analytics.core.state import read_state, state_path

WINDOWS = ("10s", "1m", "5m", "since_start")
DEFAULT_WINDOW = "1m"
SEVERITIES = ("critical", "warning", "info")
ALERTING = frozenset({"critical", "warning"})
NAME_MAX = 32  # operation, model and cache names are cut to this many characters
MAX_ROWS = 20  # per table; the rest is counted in one line (--json has everything)
INDENT = "  "


# -- reading ---------------------------------------------------------------------------------

def exit_code(running: bool, document: SnapshotDocument | None) -> int:
    """3 when no daemon runs; else 1 when any finding is a warning or critical; else 0."""
    if not running:
        return CliExit.NOT_RUNNING
    if any(mapping(f).get("severity") in ALERTING for f in sequence(lookup(document, "findings"))):
        return CliExit.FINDINGS
    return CliExit.OK


@dataclasses.dataclass(frozen=True)
class StatusOutput:
    """What one ``ai-analytics status`` prints, and its exit status."""

    stdout: str
    stderr: str
    exit_code: int


def status_output(config: Config, window: str | None = None, as_json: bool = False,
                  width: int = DEFAULT_WIDTH, now: float | None = None,
                  json_indent: int | None = 2) -> StatusOutput:
    """Everything ``ai-analytics status`` decides, without a terminal."""
    running = daemon_running(config.namespace, config.segment_dir)
    problem: str | None = None
    try:
        document = read_state(config.state_dir)
    except StateError as exc:
        document, problem = None, str(exc)
    if document is not None:
        # As a plain dict: a damaged file may lack "daemon", or hold something else there.
        daemon = cast(dict[str, object], document).setdefault("daemon", {})
        if isinstance(daemon, dict):
            daemon["running"] = running
    no_state = (f"ai-analytics: no state in {config.state_dir}: ai-analyticsd has not run with "
                f"this config (namespace {config.namespace!r})")
    if running:
        if problem is not None:
            return StatusOutput("", f"ai-analytics: {problem}", CliExit.UNREADABLE)
        if document is None:
            return StatusOutput("", f"ai-analytics: ai-analyticsd runs for namespace "
                                    f"{config.namespace!r} but has written no state in "
                                    f"{config.state_dir} yet", CliExit.UNREADABLE)
        code = exit_code(True, document)
        if as_json:
            return StatusOutput(json.dumps(document, indent=json_indent), "", code)
        text = render_text(document, window, width, now)
        return StatusOutput(f"{text}\n\n{page_line(config)}", "", code)
    if as_json:
        if document is None:
            return StatusOutput("", f"ai-analytics: {problem}" if problem
                                else no_state + " and is not running", CliExit.NOT_RUNNING)
        return StatusOutput(json.dumps(document, indent=json_indent), "", CliExit.NOT_RUNNING)
    view = read_namespace(config.namespace, config.segment_dir)
    if document is None and problem is None and view.empty:
        return StatusOutput("", no_state + " and is not running", CliExit.NOT_RUNNING)
    text = render_not_running(view, document, config.state_dir, problem, width, now)
    return StatusOutput(text, "", CliExit.NOT_RUNNING)


def page_url(config: Config) -> str | None:
    """The live page's URL on this node (None when http_enabled is false): a daemon bound to
    every address (0.0.0.0, ::) is reached through loopback, the one address where it serves
    the page whatever http_pages_beyond_loopback says."""
    if not config.http_enabled:
        return None
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(config.http_host, config.http_host)  # noqa: S104
    return f"http://{host_port(host, config.http_port)}/"


def page_line(config: Config) -> str:
    """What status and the demo print about the live page."""
    url = page_url(config)
    return f"page: {url}" if url else "page: HTTP endpoint disabled (http_enabled: false)"


# -- the document's values, tolerated --------------------------------------------------------

def _text(value: object) -> str:
    return fmt.MISSING if value is None or value == "" else str(value)


def default_window(document: SnapshotDocument) -> str:
    """The daemon's insight window where the document states it (``daemon.insight_window``,
    else the window of its findings), else 1m."""
    candidates = [lookup(document, "daemon", "insight_window"),
                  lookup(document, "daemon", "settings", "insight_window"),
                  *(mapping(f).get("window") for f in sequence(document.get("findings")))]
    return next((str(c) for c in candidates if c in WINDOWS), DEFAULT_WINDOW)


def _window_title(window: str) -> str:
    return "since the daemon started" if window == "since_start" else f"last {window}"


def _section(title: str, lines: Sequence[str]) -> str:
    return "\n".join([title, *lines])


def _note(text: str) -> str:
    return INDENT + text


def _wrapped_note(text: str, width: int) -> list[str]:
    """A note of prose, wrapped to the width (each line indented like a note)."""
    return [_note(line) for line in textwrap.wrap(text, max(20, width - len(INDENT)))]


def _more(shown: int, total: int, what: str) -> list[str]:
    hidden = total - shown
    return [_note(f"… and {hidden:,} more {what} (--json shows all)")] if hidden > 0 else []


def _joined(parts: Sequence[str], width: int, sep: str = " · ") -> list[str]:
    """``parts`` joined by ``sep``, broken into lines of at most ``width`` where possible."""
    lines: list[str] = []
    current = ""
    for part in parts:
        candidate = f"{current}{sep}{part}" if current else part
        if current and len(candidate) > width:
            lines.append(current)
            current = part
        else:
            current = candidate
    return [*lines, current] if current else lines


# -- the view of a running daemon ------------------------------------------------------------

def render_text(document: SnapshotDocument, window: str | None = None,
                width: int = DEFAULT_WIDTH, now: float | None = None) -> str:
    """The whole operator view of one snapshot document, section after section."""
    now = time.time() if now is None else now
    window = window or default_window(document)
    return "\n\n".join([
        render_header(document, width, now),
        render_operations(document, window, width),
        render_models(document, window, width),
        render_resources(document, width),
        render_event_path(document, window, width),
        render_caches(document, window, width),
        render_findings(document, width, now),
        render_recommendations(document, width),
    ])


def render_header(document: SnapshotDocument, width: int = DEFAULT_WIDTH,
                  now: float | None = None) -> str:
    """One line (two if narrow): running or not, namespace, pid, uptime, snapshot age."""
    now = time.time() if now is None else now
    daemon = mapping(document.get("daemon"))
    written = document.get("written_unix")
    age = max(0.0, now - written) if isinstance(written, (int, float)) else None
    running = daemon.get("running") is True
    uptime = daemon.get("uptime_seconds")
    if running and isinstance(uptime, (int, float)) and age is not None:
        uptime = uptime + age  # the snapshot's uptime, brought up to now
    parts = [
        "ai-analyticsd running" if running else "ai-analyticsd NOT RUNNING (last snapshot shown)",
        f"namespace {_text(document.get('namespace'))}",
        f"pid {_text(daemon.get('pid'))}",
        f"version {_text(daemon.get('version'))}",
        f"up {fmt.duration(uptime)}" if running else
        f"ran {fmt.duration(daemon.get('uptime_seconds'))}",
        f"snapshot {fmt.seconds(age)} old" if age is not None else "snapshot age unknown",
    ]
    interval = daemon.get("snapshot_interval_seconds")
    stale_after = 3 * interval + 2 if isinstance(interval, (int, float)) else 30.0
    if running and age is not None and age > stale_after:
        parts.append(f"STALE: no snapshot since {fmt.local_time(written)}")
    elif not running:
        parts.append(f"written {fmt.local_time(written)}")
    return "\n".join(_joined(parts, width))


def render_operations(document: SnapshotDocument, window: str = DEFAULT_WINDOW,
                      width: int = DEFAULT_WIDTH) -> str:
    """Per (operation, model) series in ``window``: count, ops/s, err%, p50/p95/p99, quality."""
    operations = [mapping(row) for row in sequence(document.get("operations"))]
    title = f"OPERATIONS ({_window_title(window)})"
    active = [(row, mapping(lookup(row, "windows", window))) for row in operations]
    active = [(row, stats) for row, stats in active if _count(stats) > 0]
    if not active:
        what = "no operations yet" if not operations else \
            f"no events in the {_window_title(window)} ({len(operations):,} series known)"
        return _section(title, [_note(what)])
    active.sort(key=lambda item: (-_count(item[1]), str(item[0].get("operation")),
                                  str(item[0].get("model"))))
    columns = [Column("operation", shrink=10, max=NAME_MAX),
               Column("model", shrink=8, max=NAME_MAX), Column("count", right=True),
               Column("ops/s", right=True), Column("err%", right=True),
               Column("p50", right=True), Column("p95", right=True), Column("p99", right=True),
               Column("quality", right=True)]
    rows = []
    for row, stats in active[:MAX_ROWS]:
        latency = mapping(stats.get("latency_ms"))
        rows.append([
            _text(row.get("operation")), _text(row.get("model")), fmt.count(stats.get("count")),
            fmt.rate(stats.get("throughput_per_s")), fmt.percent(stats.get("error_rate")),
            fmt.milliseconds(latency.get("p50")), fmt.milliseconds(latency.get("p95")),
            fmt.milliseconds(latency.get("p99")),
            fmt.fixed(lookup(stats, "quality", "mean")),
        ])
    idle = len(operations) - len(active)
    lines = table(columns, rows, width) + _more(min(len(active), MAX_ROWS), len(active), "series")
    if idle:
        lines.append(_note(f"{idle:,} more series had no events in the {_window_title(window)}"))
    return _section(title, lines)


def render_models(document: SnapshotDocument, window: str = DEFAULT_WINDOW,
                  width: int = DEFAULT_WIDTH) -> str:
    """Per model in ``window``: count, err%, mean inference time; its workers' RSS and GPU."""
    models = [mapping(row) for row in sequence(document.get("models"))]
    title = f"MODELS ({_window_title(window)})"
    if not models:
        return _section(title, [_note("no models")])
    columns = [Column("model", shrink=10, max=NAME_MAX), Column("count", right=True),
               Column("err%", right=True), Column("mean", right=True),
               Column("workers", right=True), Column("RSS MB", right=True),
               Column("GPU MB", right=True)]
    rows = []
    hidden = 0
    for row in models[:MAX_ROWS]:
        stats = mapping(lookup(row, "windows", window))
        not_visible = row.get("processes_not_visible")
        not_visible = not_visible if isinstance(not_visible, int) else 0
        hidden += not_visible
        workers = fmt.count(len(sequence(row.get("processes"))))
        rows.append([
            _text(row.get("model")), fmt.count(stats.get("count")),
            fmt.percent(stats.get("error_rate")), fmt.milliseconds(stats.get("inference_ms_mean")),
            f"{workers}+{not_visible}?" if not_visible else workers,
            fmt.mebibytes(row.get("rss_bytes")), fmt.megabytes(row.get("gpu_memory_mb")),
        ])
    notes = [_note("+N?: N worker processes in PID namespaces this daemon cannot see; their "
                   "RSS and GPU memory are not counted (docs/containers.md: GPU and memory "
                   "per model)")] if hidden else []
    return _section(title, table(columns, rows, width) + notes
                    + _more(len(rows), len(models), "models"))


def _count(stats: Mapping[str, object]) -> int:
    """A window's event count; 0 where it is missing or not an integer."""
    count = stats.get("count")
    return count if isinstance(count, int) else 0


def _fill(lane: Mapping[str, object]) -> float:
    """A lane's fill; 0 where it is missing or not a float."""
    fill = lane.get("fill")
    return fill if isinstance(fill, float) else 0.0


def _stale(section: Mapping[str, object], age_key: str = "age_seconds",
           stale_key: str = "stale") -> str:
    if section.get(stale_key) is True:
        return f" (STALE: sampled {fmt.seconds(section.get(age_key))} ago)"
    return ""


def render_resources(document: SnapshotDocument, width: int = DEFAULT_WIDTH) -> str:
    """System CPU and memory, the daemon's own use, workers, and each GPU (or why none)."""
    resources = mapping(document.get("resources"))
    title = "RESOURCES"
    if not resources:
        return _section(title, [_note("no resource samples in this snapshot")])
    system = mapping(resources.get("system"))
    total = system.get("memory_total_bytes")
    used = system.get("memory_used_bytes")
    gigabytes = ""
    if isinstance(total, (int, float)) and isinstance(used, (int, float)):
        gigabytes = f" ({used / 1e9:.1f} of {total / 1e9:.1f} GB used)"
    daemon = mapping(resources.get("daemon"))
    processes = [mapping(p) for p in sequence(resources.get("processes"))]
    rss = [size for p in processes if isinstance(size := p.get("rss_bytes"), int)]
    plural = "" if len(processes) == 1 else "es"
    lines = [
        _note(f"system: CPU {fmt.percent_value(system.get('cpu_percent'))} · memory "
              f"{fmt.percent_value(system.get('memory_percent'))}{gigabytes}{_stale(system)}"),
        _note(f"daemon: CPU {fmt.percent_value(daemon.get('cpu_percent'))} · RSS "
              f"{fmt.mebibytes(daemon.get('rss_bytes'))} MB"),
        _note(f"workers: {len(processes):,} process{plural}"
              + (f" · RSS {fmt.mebibytes(sum(rss))} MB in all" if rss else "")
              + _stale(resources, "processes_age_seconds", "processes_stale")),
    ]
    gpu = mapping(resources.get("gpu"))
    devices = [mapping(d) for d in sequence(gpu.get("devices"))]
    if gpu.get("available") is True and devices:
        if gpu.get("stale") is True:
            lines.append(_note(f"GPU samples STALE: {fmt.seconds(gpu.get('age_seconds'))} old"))
        columns = [Column("GPU", right=True), Column("name", shrink=8), Column("util", right=True),
                   Column("memory MB", right=True), Column("mem%", right=True),
                   Column("temp", right=True), Column("power", right=True)]
        rows = []
        for device in devices:
            used_mb, total_mb = device.get("memory_used_mb"), device.get("memory_total_mb")
            share = (used_mb / total_mb if isinstance(used_mb, (int, float))
                     and isinstance(total_mb, (int, float)) and total_mb > 0 else None)
            temp, power = device.get("temperature_c"), device.get("power_w")
            rows.append([
                _text(device.get("index")), _text(device.get("name")),
                fmt.percent_value(device.get("utilization_percent")),
                f"{fmt.megabytes(used_mb)} / {fmt.megabytes(total_mb)}", fmt.percent(share),
                f"{fmt.fixed(temp, 0)} °C" if temp is not None else fmt.MISSING,
                f"{fmt.fixed(power, 0)} W" if power is not None else fmt.MISSING,
            ])
        lines += table(columns, rows, width)
    elif gpu.get("available") is True:
        lines.append(_note("GPU: available, no devices reported"))
    else:
        lines.append(_note(f"GPU: unavailable — {_text(gpu.get('reason'))}"))
    return _section(title, lines)


_OUTCOMES = (*SETTLED, "pending")  # what reached an end, then what still waits


def _outcomes(events: Mapping[str, object]) -> list[str]:
    parts = [f"{key.replace('_', ' ')} {fmt.count(events.get(key))}" for key in _OUTCOMES]
    return [f"events: {parts[0]}", *parts[1:]]


def render_event_path(document: SnapshotDocument, window: str = DEFAULT_WINDOW,
                      width: int = DEFAULT_WIDTH) -> str:
    """Events by outcome, outcome rates, lane counts, max fill, drain lag, and the lanes."""
    events = mapping(document.get("events"))
    path = mapping(document.get("event_path"))
    summary = mapping(document.get("lanes_summary"))
    prefix = f"{document.get('namespace')}.lane."
    inner = width - len(INDENT)
    lines = [_note(text) for text in _joined(_outcomes(events), inner)]
    rates = mapping(path.get("rates_per_s"))
    if window != "since_start" and rates:
        lines += [_note(text) for text in _joined(
            [f"rates ({_window_title(window)}): received "
             f"{fmt.rate(lookup(rates, 'received', window))}/s"]
            + [f"{key} {fmt.rate(lookup(rates, key, window))}/s"
               for key in ("dropped", "overwritten", "invalid")], inner)]
    per_batch = path.get("records_per_batch")
    lines += [_note(text) for text in _joined([
        "lanes: " + ", ".join(
            f"{fmt.count(summary.get(k))} {k.replace('_', ' ')}" for k in
            ("live", "retired", "dead", "reclaimed", "waiting", "rejected_segments")),
        # Rare, and each the sign of a problem: shown only when there is one.
        *[f"{fmt.count(summary.get(k))} {label}" for k, label in
          (("without_ring", "threads without a lane"), ("outdated", "outdated lanes"))
          if summary.get(k)],
        f"max fill {fmt.percent(path.get('max_fill'))}",
        f"drain lag {fmt.seconds(path.get('drain_lag_seconds'))}",
        f"{fmt.rate(per_batch)} records/batch",
    ], inner)]
    sinks = mapping(document.get("sinks"))
    if sinks:
        lines += [_note(text) for text in _joined([
            f"sink {name}: {_text(mapping(state).get('state'))}"
            + (f" ({fmt.count(mapping(state).get('skipped'))} writes skipped)"
               if mapping(state).get("skipped") else "")
            for name, state in sorted(sinks.items())], inner)]
    by_uid = mapping(document.get("events_by_uid"))
    if len(by_uid) > 1:  # whose events are whose, where several users write lanes
        lines += [_note(text) for text in _joined(
            ["events by lane owner:"] + [
                f"uid {_text(uid)} {fmt.count(_sum_counts(mapping(events)))}"
                + (f" ({fmt.count(mapping(events).get('no_lane'))} no lane)"
                   if mapping(events).get("no_lane") else "")
                for uid, events in by_uid.items()], inner)]
    lanes = [mapping(lane) for lane in sequence(document.get("lanes"))]
    if not lanes:
        lines.append(_note("no lanes attached"))
        return _section("EVENT PATH", lines)
    lanes.sort(key=lambda lane: -_fill(lane))
    columns = [Column("lane", shrink=10), Column("pid", right=True),
               Column("state"), Column("on_full"),
               Column("fill", right=True), Column("pending", right=True),
               Column("dropped", right=True), Column("overwritten", right=True),
               Column("invalid", right=True)]
    rows = []
    for lane in lanes[:MAX_ROWS]:
        head, tail = lane.get("head"), lane.get("tail")
        pending = head - tail if isinstance(head, int) and isinstance(tail, int) else None
        name = _text(lane.get("name"))
        rows.append([
            lane_label(name, prefix),
            _pid_cell(lane.get("pid"), lane.get("worker_pid"), lane.get("same_pid_namespace")),
            _text(lane.get("state")),
            _text(lane.get("on_full")) if lane.get("ring", True) else "no ring",
            fmt.percent(lane.get("fill")),
            fmt.count(pending), fmt.count(lane.get("dropped")),
            fmt.count(lane.get("overwritten")), fmt.count(lane.get("invalid")),
        ])
    lines += table(columns, rows, width) + _more(len(rows), len(lanes), "lanes")
    lines += _pid_legend((lane.get("same_pid_namespace") is not False for lane in lanes), width)
    return _section("EVENT PATH", lines)


def render_caches(document: SnapshotDocument, window: str = DEFAULT_WINDOW,
                  width: int = DEFAULT_WIDTH) -> str:
    """Per cache: size, reporting lanes, evictions in all and per second in ``window``."""
    caches = [mapping(c) for c in sequence(document.get("caches"))]
    if not caches:
        return _section("CACHES", [_note("no caches reported")])
    rate_window = window if window != "since_start" else "5m"
    columns = [Column("cache", shrink=10, max=NAME_MAX), Column("size", right=True),
               Column("lanes", right=True), Column("evictions", right=True),
               Column(f"evictions/s ({rate_window})", right=True)]
    rows = [[_text(c.get("name")), fmt.count(c.get("size")), fmt.count(c.get("reporting_lanes")),
             fmt.count(c.get("evictions_total")),
             fmt.rate(lookup(c, "evictions_per_s", rate_window))]
            for c in caches[:MAX_ROWS]]
    return _section("CACHES", table(columns, rows, width) + _more(len(rows), len(caches),
                                                                    "caches"))


def _subject(value: object, namespace: object = None) -> str:
    """"model llama-3-8b", "lane 2908.0" (a lane's name without its namespace prefix)."""
    subject = mapping(value)
    if not subject:
        return _text(value) if not isinstance(value, Mapping) else fmt.MISSING
    kind, name = subject.get("type"), subject.get("name")
    if kind == "lane" and isinstance(name, str):
        name = lane_label(name, f"{namespace}.lane.")
    return " ".join(_text(part) for part in (kind, name) if part is not None)


def render_findings(document: SnapshotDocument, width: int = DEFAULT_WIDTH,
                    now: float | None = None) -> str:
    """The daemon's findings, most severe first: severity, kind, subject, since, message."""
    now = time.time() if now is None else now
    if "findings" not in document:
        return _section("FINDINGS", [_note("no findings (this daemon does not report them)")])
    findings = [mapping(f) for f in sequence(document.get("findings"))]
    if not findings:
        return _section("FINDINGS", [_note("no findings")])
    order = {severity: rank for rank, severity in enumerate(SEVERITIES)}
    findings.sort(key=lambda f: (order.get(str(f.get("severity")), len(order)),
                                 str(f.get("kind")), _subject(f.get("subject"))))
    counts = [f"{n} {s}" for s in SEVERITIES
              if (n := sum(1 for f in findings if f.get("severity") == s))]
    columns = [Column("severity"), Column("kind", shrink=10), Column("subject", shrink=10),
               Column("for", right=True), Column("message", wrap=24)]
    rows = []
    for finding in findings:
        started = finding.get("started_unix")
        since = now - started if isinstance(started, (int, float)) else None
        rows.append([_text(finding.get("severity")).upper(), _text(finding.get("kind")),
                     _subject(finding.get("subject"), document.get("namespace")),
                     fmt.duration(since),
                     _text(finding.get("message"))])
    return _section(f"FINDINGS ({', '.join(counts) or len(findings)})",
                    table(columns, rows, width))


def render_recommendations(document: SnapshotDocument, width: int = DEFAULT_WIDTH) -> str:
    """What to change: the message, and the config key with its suggested value."""
    if "recommendations" not in document:
        return _section("RECOMMENDATIONS",
                        [_note("no recommendations (this daemon does not make them)")])
    items = [mapping(r) for r in sequence(document.get("recommendations"))]
    if not items:
        return _section("RECOMMENDATIONS", [_note("no recommendations")])
    columns = [Column("category", shrink=8), Column("recommendation", wrap=30),
               Column("config", wrap=16)]
    rows = []
    for item in items:
        key, value = item.get("config_key"), item.get("suggested_value")
        setting = fmt.MISSING if key is None else \
            str(key) if value is None else f"{key} → {json.dumps(value)}"
        rows.append([_text(item.get("category")), _text(item.get("message")), setting])
    return _section(f"RECOMMENDATIONS ({len(items)})", table(columns, rows, width))


# -- the view of shared memory, without a daemon ---------------------------------------------

def render_not_running(view: ShmView, document: SnapshotDocument | None, state_dir: str,
                       problem: str | None = None, width: int = DEFAULT_WIDTH,
                       now: float | None = None) -> str:
    """The daemon is down: say so first, then what its lanes hold, then its last snapshot."""
    now = time.time() if now is None else now
    if document is not None:
        written = document.get("written_unix")
        age = now - written if isinstance(written, (int, float)) else None
        last = f"last snapshot from {fmt.local_time(written)} ({fmt.duration(age)} ago)"
    elif problem is not None:
        last = f"last snapshot unreadable: {problem}"
    else:
        last = f"no snapshot in {state_path(state_dir)}"
    head = (f"ai-analyticsd is NOT running for namespace {view.namespace}: showing shared "
            f"memory directly; {last}")
    head = "\n".join(textwrap.wrap(head, width, break_long_words=False,
                                   break_on_hyphens=False))
    sections = [head, render_shm(view, width)]
    if document is not None:
        events = mapping(document.get("events"))
        sections.append(_section("LAST SNAPSHOT", [
            *[_note(text) for text in _joined(_outcomes(events), width - len(INDENT))],
            _note(f"{len(sequence(document.get('operations'))):,} series, "
                  f"{len(sequence(document.get('lanes'))):,} lanes attached, "
                  f"{len(sequence(document.get('findings'))):,} findings "
                  "(ai-analytics status --json prints it)"),
        ]))
    return "\n\n".join(sections)


LABEL_HEX_DIGITS = 6  # of a lane's 16-digit instance token, in tables (--json has it whole)


def lane_label(name: str, prefix: str) -> str:
    """A lane as tables name it: "<first 6 hex digits of its instance>.<serial>" (the lanes
    of one process share the instance, so the serial must stay visible)."""
    parsed = parse_lane_name(name, prefix)
    if parsed is None:
        return name.removeprefix(prefix)
    return f"{parsed[0][:LABEL_HEX_DIGITS]}.{parsed[1]}"


def _sum_counts(events: Mapping[str, object]) -> int:
    return sum(value for value in events.values() if isinstance(value, int))


def _pid_cell(pid: object, worker_pid: object, same_pid_namespace: object) -> str:
    """A lane's producer in a table cell: its pid here, or its own pid in its own PID
    namespace when this host's /proc cannot see it."""
    if pid is not None:
        return _text(pid) if same_pid_namespace is not False else f"{_text(pid)}*"
    return f"({_text(worker_pid)})"


def _lane_pid(lane: LaneView) -> str:
    return _pid_cell(lane.pid, lane.worker_pid, lane.same_pid_namespace)


def _pid_legend(same_namespace: Iterable[bool], width: int) -> list[str]:
    """The note under a lane table that shows workers of other PID namespaces."""
    if all(same_namespace):
        return []
    return _wrapped_note("pid: 123* is a worker in another PID namespace that is pid 123 "
                         "here; (1) is one not visible from here, pid 1 in its own PID "
                         "namespace", width)


def _control_line(view: ShmView) -> str:
    control = view.control
    if not control.present:
        return "control: none (new lanes use the defaults)"
    if control.error:
        return f"control: unreadable: {control.error}"
    daemon = "its daemon runs" if view.lock.held else "no daemon holds the namespace"
    return (f"control: capacity {fmt.count(control.capacity)} · on_full {control.on_full} · "
            f"names {fmt.count(control.names_capacity)} · written by pid "
            f"{control.daemon_pid} in its PID namespace, uid {control.owner_uid} ({daemon})")


def _lock_line(view: ShmView) -> str:
    lock = view.lock
    if not lock.present:
        return "lock: none (no daemon has run in this namespace since boot)"
    # The recorded pid is the daemon's in its own PID namespace; /proc/locks gives ours.
    recorded = (f"pid {lock.recorded_pid} in its PID namespace" if lock.recorded_pid
                else "no pid recorded")
    if lock.held:
        holder = f"pid {lock.holder_pid}" if lock.holder_pid else recorded
        return f"lock: held by ai-analyticsd {holder}"
    return f"lock: free (last daemon: {recorded})"


def render_shm(view: ShmView, width: int = DEFAULT_WIDTH) -> str:
    """Totals and one row per lane, read straight from shared memory."""
    totals = view.totals()
    lines = [_note(text) for text in _joined([
        f"lanes {totals['lanes']:,} ({totals['producers_alive']:,} producer "
        f"process{'' if totals['producers_alive'] == 1 else 'es'} alive, "
        f"{totals['retired']:,} retired)",
        f"events pending {totals['pending']:,}", f"dropped {totals['dropped']:,}",
        f"overwritten {totals['overwritten']:,}", f"invalid {totals['invalid']:,}",
    ], width - len(INDENT))]
    lines += [_note(_control_line(view)), _note(_lock_line(view))]
    if view.lanes:
        columns = [Column("lane", shrink=10), Column("pid", right=True), Column("uid", right=True),
                   Column("alive"), Column("retired"), Column("on_full"),
                   Column("capacity", right=True), Column("pending", right=True),
                   Column("fill", right=True), Column("dropped", right=True),
                   Column("names", shrink=8)]
        rows = [[lane_label(lane.name, f"{view.namespace}.lane."), _lane_pid(lane), lane.uid,
                 "yes" if lane.alive else "no", "yes" if lane.retired else "no",
                 lane.on_full if lane.ring else "no ring", fmt.count(lane.capacity),
                 fmt.count(lane.pending), fmt.percent(lane.fill), fmt.count(lane.dropped),
                 ", ".join(lane.names) or fmt.MISSING]
                for lane in view.lanes[:MAX_ROWS]]
        lines += table(columns, rows, width) + _more(len(rows), len(view.lanes), "lanes")
        lines += _pid_legend((lane.same_pid_namespace for lane in view.lanes), width)
    else:
        lines.append(_note("no lanes"))
    lines += [_note(f"{u.name}: unreadable: {u.reason}") for u in view.unreadable]
    return _section(f"SHARED MEMORY ({view.shm_dir})", lines)


def render_lanes(view: ShmView, width: int = DEFAULT_WIDTH) -> str:
    """``ai-analytics lanes``: every lane's header in two tables, control, lock, unreadable."""
    state = "running" if view.lock.held else "NOT running"
    lines = [f"namespace {view.namespace} in {view.shm_dir}: ai-analyticsd {state}",
             _control_line(view), _lock_line(view)]
    totals = view.totals()
    lines += _joined([f"lanes {totals['lanes']:,}", f"published {totals['published']:,}",
                      f"pending {totals['pending']:,}", f"dropped {totals['dropped']:,}",
                      f"overwritten {totals['overwritten']:,}", f"invalid {totals['invalid']:,}",
                      f"unreadable {totals['unreadable']:,}"], width)
    sections = ["\n".join(lines)]
    prefix = f"{view.namespace}.lane."
    if view.lanes:
        counters = [Column("lane", shrink=10), Column("pid", right=True),
                    Column("uid", right=True), Column("alive"), Column("retired"),
                    Column("on_full"), Column("capacity", right=True),
                    Column("pending", right=True), Column("fill", right=True),
                    Column("dropped", right=True), Column("overwritten", right=True),
                    Column("invalid", right=True)]
        rows = [[lane_label(lane.name, prefix), _lane_pid(lane), lane.uid,
                 "yes" if lane.alive else "no", "yes" if lane.retired else "no",
                 lane.on_full if lane.ring else "no ring",
                 fmt.count(lane.capacity), fmt.count(lane.pending), fmt.percent(lane.fill),
                 fmt.count(lane.dropped), fmt.count(lane.overwritten + lane.lapped),
                 fmt.count(lane.invalid)] for lane in view.lanes]
        lapped = sum(lane.lapped for lane in view.lanes)
        notes = [_note(f"overwritten includes {lapped:,} records lapped since the last drain")
                 ] if lapped else []
        notes += _pid_legend((lane.same_pid_namespace for lane in view.lanes), width)
        sections.append(_section(f"LANES ({len(view.lanes)})", table(counters, rows, width)
                                 + notes))
        positions = [Column("lane", shrink=10), Column("thread", right=True),
                     Column("head", right=True),
                     Column("tail", right=True), Column("names", right=True),
                     Column("consumer", right=True), Column("created (UTC)"),
                     Column("name table", shrink=10)]
        rows = [[lane_label(lane.name, prefix), lane.thread_id, fmt.count(lane.head),
                 fmt.count(lane.tail),
                 f"{lane.names_count}/{lane.names_capacity}", lane.consumer_pid or fmt.MISSING,
                 lane.created.replace("+00:00", "Z"), ", ".join(lane.names) or fmt.MISSING]
                for lane in view.lanes]
        sections.append(_section("POSITIONS", table(positions, rows, width)))
    else:
        sections.append(_section("LANES (0)", [_note("no lanes")]))
    if view.unreadable:
        sections.append(_section(f"UNREADABLE ({len(view.unreadable)})", [
            _note(f"{u.name}: unreadable: {u.reason}") for u in view.unreadable]))
    return "\n\n".join(sections)


def lanes_exit_code(view: ShmView) -> int:
    """0 when there is anything to show; 3 when the namespace has no segment at all and no
    daemon holds it (most likely the wrong namespace)."""
    return CliExit.NOT_RUNNING if view.empty and not view.lock.held else CliExit.OK


__all__ = [
    "DEFAULT_WINDOW", "WINDOWS",
    "StatusOutput", "default_window", "exit_code", "lanes_exit_code",
    "render_caches", "render_event_path", "render_findings", "render_header", "render_lanes",
    "render_models", "render_not_running", "render_operations", "render_recommendations",
    "render_resources", "render_shm", "render_text", "status_output",
]
