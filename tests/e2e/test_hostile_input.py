"""Hostile and malformed input outside the ring itself, against a real daemon: names written
into a name table by someone else (and how they come out in /status, /metrics and the
terminal views), HTTP requests, and what it listens on. That no code runs what it reads is
the linter's job (e2e/test_lint.py). The trust model these check is docs/security.md.
"""

from __future__ import annotations

import time

import psutil
from prometheus_client.parser import text_string_to_metric_families

from ai_analytics.client import _layout as L
from ai_analytics.client._lane import Lane, LaneGeometry

from helpers import fetch, free_port, invoke, raw_exchange, wait_for, write_names

# C0 and C1 controls, DEL: what must never reach a terminal or a text format from a name.
CONTROLS = {chr(c) for c in (*range(0x20), *range(0x7F, 0xA0))}


# -- names written into a name table by someone else -----------------------------------------
QUOTED = 'q"uo\\te{x="1"},le=\\n'  # printable: kept, and must be escaped in every format
REFUSED = ["esc\x1b[2Jcleared", "new\nline", "rtl\u202eevil", b"\xff\xfe not utf-8", b""]


def no_controls(text: str) -> bool:
    return not (set(text) - {"\n"}) & CONTROLS


def test_hostile_names_stay_out_of_every_output(daemon_factory, namespace, make_config):
    """A writer puts control characters, an escape sequence, a bidi override and bytes that
    are not UTF-8 into its name table: records that use them are invalid, the daemon runs
    on, and /status, /metrics, `status` and `lanes` carry no control character; a name with
    quotes and backslashes comes out of /metrics escaped, and parses back exactly."""
    port = free_port()
    config = make_config(http_port=port)
    lane = Lane(namespace, LaneGeometry(64, 8, False))
    try:
        write_names(lane, ["ok", QUOTED, *REFUSED])
        uses = [(1, 2), (2, 0), *((3 + i, 0) for i in range(len(REFUSED))), (1, 3 + 1)]
        for seq, (op_id, model_id) in enumerate(uses):
            L.RECORD_BASIC.pack_into(lane.buf, lane.base + seq * L.RECORD_SIZE, seq,
                                     time.monotonic_ns(), 1.0, 0.5, op_id, model_id, 1,
                                     L.CACHE_ABSENT)
        lane.q[L.Q_HEAD] = len(uses)
        daemon = daemon_factory(config)
        state = daemon.state_after(lambda s: s["events"]["received"] + s["events"]["invalid"]
                                   == len(uses), what="the hostile lane drained")
        assert (state["events"]["received"], state["events"]["invalid"]) == (2, len(REFUSED) + 1)
        assert {(r["operation"], r["model"]) for r in state["operations"]} == {
            ("ok", QUOTED), (QUOTED, "")}
        status, _, body = fetch(port, path="/metrics")
        assert status == 200 and no_controls(body.decode())
        labels = [sample.labels for family in text_string_to_metric_families(body.decode())
                  for sample in family.samples if sample.name == "ai_analytics_requests_total"]
        assert {(s["operation"], s["model"]) for s in labels} == {("ok", QUOTED), (QUOTED, "")}
        status, _, body = fetch(port, path="/status")
        assert status == 200 and no_controls(body.decode("ascii"))  # JSON escapes the rest
        for command in (["status"], ["status", "--json"], ["lanes"], ["lanes", "--json"]):
            out = invoke(*command, "--config", str(config)).output
            assert no_controls(out), (command, out)
            assert "ok" in out
        assert daemon.proc.poll() is None
        assert daemon.stop() == 0
    finally:
        lane.retire()


# -- HTTP against the real daemon ------------------------------------------------------------
def test_real_daemon_answers_bad_requests_and_serves_on(daemon_factory):
    """Methods other than GET/HEAD on /metrics, unknown paths, a huge header and a request
    that is not HTTP get their status codes; /metrics still answers afterwards."""
    port = free_port()
    daemon = daemon_factory(http_port=port)
    wait_for(lambda: fetch(port, path="/metrics")[0] == 200, what="the first snapshot")
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        status, headers, _ = fetch(port, method, "/metrics", body=b"x=1")
        assert (status, headers["Allow"]) == (405, "GET, HEAD"), method
    for path in ("/index.html", "/metrics/", "/../../etc/passwd", "/status%00",
                 "/%2e%2e/state.json", "/ui/../../etc/passwd", "/ui/%2e%2e/server.py"):
        assert fetch(port, path=path)[0] == 404, path
    assert fetch(port, path="/metrics", headers={"X-Big": "a" * 100_000})[0] == 431
    for garbage in (b"\x16\x03\x01\x00\xff TLS hello\r\n\r\n", b"GET\r\n\r\n"):
        assert raw_exchange(port, garbage).startswith(b"HTTP/1.0 400 "), garbage
    assert fetch(port, path="/metrics")[0] == 200
    assert daemon.proc.poll() is None and daemon.stop() == 0


def test_default_config_listens_on_loopback_only(daemon_factory):
    """With the default http_host, every listening socket of the daemon is on loopback."""
    daemon = daemon_factory()
    process = psutil.Process(daemon.proc.pid)
    listening = wait_for(lambda: [c for c in process.net_connections(kind="inet")
                                  if c.status == psutil.CONN_LISTEN], what="the listener")
    assert {c.laddr.ip for c in listening} <= {"127.0.0.1", "::1"}, listening
    assert daemon.stop() == 0
