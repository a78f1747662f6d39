"""The loopback HTTP endpoint (/status, /healthz): real sockets on 127.0.0.1, real clients."""

from __future__ import annotations

import contextlib
import errno
import gzip
import json
import logging
import math
import select
import socket
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ai_analytics.core.errors import AnalyticsError, BindError
from ai_analytics.core.state import document_json as status_json
from ai_analytics.daemon.http.answers import accepts_gzip
from ai_analytics.daemon.http.server import (
    MAX_HEAD_BYTES,
    StatusServer,
    bind_error,
)

from helpers import SERVED_DOCUMENT, always_healthy, fetch, raw_exchange, taken_port, wait_for

CONN_THREAD = "ai-analytics-http-conn"


def connection_threads() -> int:
    return sum(1 for thread in threading.enumerate() if thread.name == CONN_THREAD)


# -- /status ---------------------------------------------------------------------------------
def test_status_serves_the_snapshot_as_json(serve):
    """GET /status answers 200, application/json, and the body is the callback's dict."""
    server = serve()
    status, headers, body = fetch(server)
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert int(headers["Content-Length"]) == len(body)
    assert json.loads(body) == SERVED_DOCUMENT


def test_status_with_urllib(serve):
    """A plain urllib client (what a user's script would use) reads the same document."""
    server = serve()
    host, port = server.address
    with urllib.request.urlopen(f"http://{host}:{port}/status", timeout=10) as response:
        assert response.status == 200
        assert json.loads(response.read()) == SERVED_DOCUMENT


def test_status_follows_the_latest_document(serve):
    """Each request serializes the document published now: replacing it changes the answer,
    and the query string is ignored."""
    holder: dict[str, dict] = {"doc": {"n": 1}}
    server = serve(snapshot=lambda: holder["doc"])
    assert json.loads(fetch(server)[2]) == {"n": 1}
    assert json.loads(fetch(server)[2]) == {"n": 1}
    holder["doc"] = {"n": 2}
    assert json.loads(fetch(server, path="/status?pretty=1")[2]) == {"n": 2}


def test_status_503_before_the_first_snapshot(serve):
    """No snapshot yet: 503 with a JSON error body that says so."""
    server = serve(snapshot=lambda: None)
    status, headers, body = fetch(server)
    assert status == 503
    assert headers["Content-Type"] == "application/json"
    error = json.loads(body)
    assert error["status"] == 503
    assert "no snapshot yet" in error["error"]


def test_status_500_when_the_document_cannot_be_serialized(serve):
    """A document json cannot write, or a raising callback, gives a 500 in JSON; the server
    goes on serving."""
    holder: dict[str, object] = {"doc": {"bad": object()}}
    server = serve(snapshot=lambda: holder["doc"])
    status, _, body = fetch(server)
    assert status == 500
    assert "snapshot failed" in json.loads(body)["error"]
    holder["doc"] = SERVED_DOCUMENT
    assert fetch(server)[0] == 200


def test_head_status_has_the_headers_and_no_body(serve):
    """HEAD /status: the GET's status and Content-Length, no body."""
    server = serve()
    get_length = int(fetch(server)[1]["Content-Length"])
    status, headers, body = fetch(server, "HEAD")
    assert status == 200
    assert int(headers["Content-Length"]) == get_length
    assert body == b""


# -- /healthz --------------------------------------------------------------------------------
def test_healthz_ok_when_healthy(serve):
    """Healthy: 200 with the body "ok"; HEAD gives 200 with no body."""
    server = serve()
    status, headers, body = fetch(server, path="/healthz")
    assert (status, body) == (200, b"ok\n")
    assert headers["Content-Type"].startswith("text/plain")
    assert fetch(server, "HEAD", "/healthz")[::2] == (200, b"")


def test_healthz_503_with_the_reason(serve):
    """Unhealthy: 503 whose body is the callback's reason; HEAD gives 503 with no body."""
    reason = "the loop has not completed an iteration for 4.2 s (limit 3.0 s)"
    server = serve(health=lambda: (False, reason))
    status, _, body = fetch(server, path="/healthz")
    assert status == 503
    assert body.decode().strip() == reason
    assert fetch(server, "HEAD", "/healthz")[::2] == (503, b"")


def test_healthz_503_when_the_callback_raises(serve):
    """A health callback that raises counts as unhealthy, not as a crash."""

    def broken() -> tuple[bool, str]:
        raise RuntimeError("boom")

    server = serve(health=broken)
    status, _, body = fetch(server, path="/healthz")
    assert status == 503
    assert b"health check failed" in body and b"boom" in body
    assert fetch(server)[0] == 200


# -- other paths and methods -----------------------------------------------------------------
def test_unknown_path_404_json(serve):
    """Any other path: 404 with a JSON body naming the path and the ones that exist."""
    server = serve()
    for path in ("/index.html", "/metrics", "/status/", "/nope?x=1"):
        status, headers, body = fetch(server, path=path)
        assert status == 404, path
        assert headers["Content-Type"] == "application/json"
        assert "/status" in json.loads(body)["error"]


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
@pytest.mark.parametrize("path", ["/status", "/healthz"])
def test_other_methods_405_with_allow(serve, method, path):
    """Methods other than GET and HEAD: 405 with Allow: GET, HEAD and a JSON body, also when
    the request carries a body."""
    server = serve()
    status, headers, body = fetch(server, method, path, body=b'{"x": 1}')
    assert status == 405
    assert headers["Allow"] == "GET, HEAD"
    assert method in json.loads(body)["error"]


def test_method_http_does_not_define_501(serve):
    """A method HTTP does not define gets 501 (RFC 9110), in JSON, with Allow."""
    server = serve()
    status, headers, body = fetch(server, "BREW")
    assert status == 501
    assert headers["Allow"] == "GET, HEAD"
    assert json.loads(body)["status"] == 501


def test_malformed_request_line_400(serve):
    """A request line that is not HTTP: 400 in JSON, and the server serves on."""
    server = serve()
    answer = raw_exchange(server, b"GARBAGE\r\n\r\n")
    assert answer.startswith(b"HTTP/1.0 400 ")
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["status"] == 400
    assert fetch(server)[0] == 200


# -- limits ----------------------------------------------------------------------------------
def test_huge_header_431_then_serves_on(serve):
    """Headers beyond the head budget: 431 that the client reads (no reset), and the server
    still answers the next request."""
    server = serve()
    status, _, body = fetch(server, headers={"X-Big": "a" * (3 * MAX_HEAD_BYTES)})
    assert status == 431
    assert json.loads(body)["status"] == 431
    assert fetch(server)[0] == 200


def test_too_many_headers_431(serve):
    """More headers than http.server accepts (100): 431."""
    server = serve()
    headers = {f"X-H{i}": "v" for i in range(150)}
    assert fetch(server, headers=headers)[0] == 431
    assert fetch(server)[0] == 200


def test_huge_request_line_414(serve):
    """A request line beyond the head budget: 414, and the server serves on."""
    server = serve()
    assert fetch(server, path="/status?" + "q" * (2 * MAX_HEAD_BYTES))[0] == 414
    assert fetch(server)[0] == 200


def test_idle_connection_does_not_block_other_requests(serve):
    """A client that connects and sends nothing (or half a request line) holds one slot,
    not the server: other requests are answered at once."""
    server = serve()
    with socket.create_connection(server.address) as idle, \
            socket.create_connection(server.address) as half:
        half.sendall(b"GET /sta")
        started = time.monotonic()
        assert fetch(server)[0] == 200
        assert time.monotonic() - started < 2.0
        assert idle.fileno() >= 0


def test_idle_connection_is_closed_at_the_request_timeout(serve):
    """A silent client is disconnected at request_timeout: it cannot keep a thread."""
    server = serve(request_timeout=0.3)
    with socket.create_connection(server.address, timeout=10) as idle:
        started = time.monotonic()
        assert idle.recv(1) == b""
        assert 0.2 < time.monotonic() - started < 5.0
    wait_for(lambda: connection_threads() == 0, what="the connection thread to end")


def test_trickling_client_is_cut_at_one_deadline(serve):
    """The timeout is one deadline for the whole request, not one per read: a client sending
    a byte every 50 ms is cut at request_timeout."""
    server = serve(request_timeout=0.5)
    with socket.create_connection(server.address, timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /status HTTP/1.0\r\n")
        closed = False
        while not closed and time.monotonic() - started < 5.0:
            try:
                sock.sendall(b"X")
            except OSError:
                closed = True
                break
            readable, _, _ = select.select([sock], [], [], 0.05)
            if readable:
                try:
                    closed = sock.recv(1) == b""
                except ConnectionResetError:
                    closed = True
        assert closed, "the server kept a trickling connection open past its deadline"
        assert time.monotonic() - started < 3.0


def test_connections_beyond_the_cap_wait_in_the_backlog(serve):
    """With max_connections busy, no thread is started for a new connection: it waits in the
    listen backlog and is answered as soon as a slot frees."""
    server = serve(max_connections=2)
    with contextlib.ExitStack() as stack:
        idle = [stack.enter_context(socket.create_connection(server.address)) for _ in range(2)]
        wait_for(lambda: connection_threads() == 2, what="two connections taken")
        flood = [stack.enter_context(socket.create_connection(server.address))
                 for _ in range(10)]
        waiting = socket.create_connection(server.address, timeout=0.5)
        stack.enter_context(waiting)
        waiting.sendall(b"GET /status HTTP/1.0\r\n\r\n")
        with pytest.raises(TimeoutError):
            waiting.recv(1)
        assert connection_threads() == 2
        for sock in [*idle, *flood]:
            sock.close()
        waiting.settimeout(10)
        answer = b""
        while chunk := waiting.recv(65536):
            answer += chunk
        assert answer.startswith(b"HTTP/1.0 200 ")


def test_many_concurrent_requests_all_answered(serve):
    """200 requests from 64 client threads (twice the default cap): every one gets a 200
    with the document."""
    server = serve()

    def one(_: int) -> tuple[int, bytes]:
        status, _, body = fetch(server)
        return status, body

    with ThreadPoolExecutor(max_workers=64) as pool:
        results = list(pool.map(one, range(200)))
    assert all(status == 200 for status, _ in results)
    assert all(json.loads(body) == SERVED_DOCUMENT for _, body in results)


def test_no_request_logging_on_stderr(serve, capfd, caplog):
    """Requests, errors and timeouts write nothing to stderr; the request log goes to the
    ai_analytics.daemon.http logger at debug level."""
    caplog.set_level(logging.DEBUG, logger="ai_analytics.daemon.http")
    server = serve(request_timeout=0.2)
    fetch(server)
    fetch(server, path="/nope")
    fetch(server, "POST")
    with socket.create_connection(server.address, timeout=10) as idle:
        assert idle.recv(1) == b""
    assert capfd.readouterr().err == ""
    messages = [r.getMessage() for r in caplog.records if r.name == "ai_analytics.daemon.http"]
    assert any('"GET /status HTTP/1.1" 200' in m for m in messages)
    assert all(r.levelno <= logging.INFO for r in caplog.records)


# -- bind ------------------------------------------------------------------------------------
def test_bind_error_when_the_port_is_taken(serve):
    """A port another socket listens on: BindError (an AnalyticsError and an OSError with
    errno EADDRINUSE) whose message names host:port and says what to change."""
    with taken_port() as port:
        server = StatusServer("127.0.0.1", port, lambda: SERVED_DOCUMENT, always_healthy)
        with pytest.raises(BindError) as info:
            server.start()
    error = info.value
    assert isinstance(error, AnalyticsError) and isinstance(error, OSError)
    assert error.errno == errno.EADDRINUSE
    assert (error.host, error.port) == ("127.0.0.1", port)
    assert f"127.0.0.1:{port}" in str(error)
    assert "already in use" in str(error) and "http_port" in str(error)
    assert server.stop(1.0)


def test_bind_error_when_the_address_is_not_local():
    """An address that is not this machine's (TEST-NET-1): BindError telling to set
    http_host."""
    if Path("/proc/sys/net/ipv4/ip_nonlocal_bind").read_text().strip() != "0":
        pytest.skip("this machine allows binding non-local addresses")
    server = StatusServer("192.0.2.1", 9466, lambda: SERVED_DOCUMENT, always_healthy)
    with pytest.raises(BindError) as info:
        server.start()
    assert info.value.errno == errno.EADDRNOTAVAIL
    assert "192.0.2.1:9466" in str(info.value) and "http_host" in str(info.value)


@pytest.mark.parametrize(
    ("exc", "words"),
    [
        (OSError(errno.EACCES, "Permission denied"), "permission denied for port 80"),
        (OSError(errno.EPERM, "Operation not permitted"), "CAP_NET_BIND_SERVICE"),
        (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), "does not resolve"),
        (OSError(errno.EMFILE, "Too many open files"), "Too many open files"),
    ],
)
def test_bind_error_messages(exc, words):
    """Every way binding fails reads as host:port plus a plain reason (a privileged port, a
    name that does not resolve, anything else: the system's words)."""
    error = bind_error("example.test", 80, exc)
    assert str(error).startswith("HTTP endpoint example.test:80: ")
    assert words in str(error)


def test_ipv6_loopback(serve):
    """http_host ::1 listens on IPv6 loopback; the address is (host, port) without brackets."""
    if not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    try:
        server = serve(host="::1")
    except BindError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    assert server.address[0] == "::1"
    assert fetch(server)[0] == 200


def test_non_loopback_bind_is_warned(serve, caplog):
    """Listening beyond loopback only happens when configured, and is logged as a warning."""
    caplog.set_level(logging.INFO, logger="ai_analytics.daemon.http")
    server = serve(host="0.0.0.0")
    assert server.address[0] == "0.0.0.0"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("reachable from other machines" in r.getMessage() for r in warnings)


# -- stop ------------------------------------------------------------------------------------
def test_stop_within_timeout_while_a_client_holds_an_idle_connection():
    """stop() cuts an idle connection and returns True well within its timeout (the default
    request timeout, 10 s, plays no part); afterwards the port refuses connections."""
    server = StatusServer("127.0.0.1", 0, lambda: SERVED_DOCUMENT, always_healthy)
    server.start()
    with socket.create_connection(server.address, timeout=10) as idle:
        wait_for(lambda: connection_threads() == 1, what="the idle connection taken")
        started = time.monotonic()
        assert server.stop(2.0)
        assert time.monotonic() - started < 2.0
        assert idle.recv(1) == b""
    assert connection_threads() == 0
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(server.address, timeout=2).close()


def test_stop_gives_up_on_a_stuck_callback_at_its_timeout():
    """A snapshot callback that does not return cannot hold stop() past its timeout: stop
    returns False (the thread is left behind as a daemon thread)."""
    entered, release = threading.Event(), threading.Event()

    def stuck() -> dict:
        entered.set()
        release.wait(30)
        return SERVED_DOCUMENT

    server = StatusServer("127.0.0.1", 0, stuck, always_healthy)
    server.start()
    try:
        with socket.create_connection(server.address, timeout=10) as client:
            client.sendall(b"GET /status HTTP/1.0\r\n\r\n")
            assert entered.wait(10), "the request never reached the callback"
            started = time.monotonic()
            assert server.stop(0.5) is False
            assert time.monotonic() - started < 1.5
    finally:
        release.set()
        wait_for(lambda: connection_threads() == 0, what="the stuck thread to end")


def test_start_and_stop_edges():
    """stop() before start() is harmless; start() twice is an error; address is the real
    port once started."""
    server = StatusServer("127.0.0.1", 0, lambda: SERVED_DOCUMENT, always_healthy)
    assert server.address == ("127.0.0.1", 0)
    assert server.stop(0.1)
    server = StatusServer("127.0.0.1", 0, lambda: SERVED_DOCUMENT, always_healthy)
    server.start()
    try:
        assert server.address[1] > 0
        with pytest.raises(RuntimeError):
            server.start()
    finally:
        assert server.stop(2.0)
        assert server.stop(0.1)


# -- rendered once per document, served as cached bytes, gzip by Accept-Encoding ---------------
GZIP = {"Accept-Encoding": "gzip"}


def big_document(received: int = 3) -> dict:
    """A document with enough text to compress: a few hundred series rows."""
    return {**SERVED_DOCUMENT, "events": {"received": received, "dropped": 0},
            "operations": [{"operation": f"op{i}", "model": "m", "count": i}
                           for i in range(300)]}


def text_of(document: dict | None) -> bytes:
    """A stand-in for metrics.render with the same signature: one line per series."""
    if document is None:
        return b""
    rows = document.get("operations", [])
    return b"".join(f'rows{{operation="{r["operation"]}"}} {r["count"]}\n'.encode()
                    for r in rows) + f"received {document['events']['received']}\n".encode()


@pytest.mark.parametrize("path", ["/status", "/metrics"])
def test_gzip_when_accepted_decodes_to_the_identity_body(serve, path):
    """Accept-Encoding: gzip (what Prometheus sends) gets Content-Encoding: gzip with the
    gzip form's own Content-Length, and it decodes to exactly the identity body; without
    the header the body is the identity form, unchanged. Both carry Vary: Accept-Encoding."""
    document = big_document()
    server = serve(snapshot=lambda: document, metrics=text_of)
    status, headers, plain = fetch(server, path=path)
    assert status == 200
    assert "Content-Encoding" not in headers
    assert headers["Vary"] == "Accept-Encoding"
    assert plain == (status_json(document) if path == "/status" else text_of(document))
    status, headers, packed = fetch(server, path=path, headers=GZIP)
    assert status == 200
    assert headers["Content-Encoding"] == "gzip"
    assert headers["Vary"] == "Accept-Encoding"
    assert int(headers["Content-Length"]) == len(packed) < len(plain) / 4
    assert gzip.decompress(packed) == plain
    assert headers["Content-Type"] == fetch(server, path=path)[1]["Content-Type"]


@pytest.mark.parametrize("path", ["/status", "/metrics"])
def test_head_gives_the_get_headers_of_the_same_form(serve, path):
    """HEAD: the headers GET would send for the same Accept-Encoding (its Content-Length,
    its Content-Encoding), and no body."""
    server = serve(snapshot=big_document, metrics=text_of)
    for headers in ({}, GZIP):
        _, got, body = fetch(server, path=path, headers=headers)
        status, head, nothing = fetch(server, "HEAD", path, headers=headers)
        assert (status, nothing) == (200, b"")
        assert head["Content-Length"] == got["Content-Length"] == str(len(body))
        assert head.get("Content-Encoding") == got.get("Content-Encoding")


def test_each_document_is_rendered_once_and_a_new_one_again(serve):
    """The same document (by identity) is rendered once however many requests ask, in
    either form; a new document object is rendered anew even when its content is equal."""
    holder = {"doc": big_document()}
    server = serve(snapshot=lambda: holder["doc"], metrics=text_of)
    for _ in range(3):
        for path in ("/status", "/metrics"):
            fetch(server, path=path)
            fetch(server, path=path, headers=GZIP)
    assert server.renders == {"status": 1, "metrics": 1, "status.gzip": 1, "metrics.gzip": 1}
    first = fetch(server, path="/metrics")[2]
    holder["doc"] = big_document()  # equal content, another object
    assert fetch(server, path="/metrics")[2] == first
    assert server.renders["metrics"] == 2
    holder["doc"] = big_document(received=4)
    assert fetch(server, path="/metrics")[2].endswith(b"received 4\n")
    assert json.loads(gzip.decompress(fetch(server, headers=GZIP)[2]))["events"]["received"] == 4
    assert server.renders == {"status": 2, "metrics": 3, "status.gzip": 2, "metrics.gzip": 1}


def test_concurrent_requests_for_a_new_document_render_it_once(serve):
    """Requests that arrive together for a document nobody rendered yet wait for one
    rendering rather than making their own."""
    document = big_document()
    server = serve(snapshot=lambda: document, metrics=text_of)
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: fetch(server, path="/metrics", headers=GZIP)[2],
                                range(16)))
    assert len(set(answers)) == 1
    assert server.renders == {"metrics": 1, "metrics.gzip": 1}


def test_publish_makes_ahead_what_requests_ask_for(serve):
    """After publish(document) the server serves that document and no longer reads the
    snapshot callback. Each form (/status or /metrics, identity or gzip) that requests asked
    for is made by the next publish, on the publisher's thread, so those requests only read
    bytes; a form nobody asked for is not made until a request asks."""
    server = serve(snapshot=lambda: {"never": "served"}, metrics=text_of)
    first = big_document(received=1)
    server.publish(first)
    assert server.renders == {}  # nobody asked for anything yet
    assert fetch(server)[2] == status_json(first)
    assert gzip.decompress(fetch(server, path="/metrics", headers=GZIP)[2]) == text_of(first)
    assert server.renders == {"status": 1, "metrics": 1, "metrics.gzip": 1}
    second = big_document(received=2)
    server.publish(second)
    made_ahead = {"status": 2, "metrics": 2, "metrics.gzip": 2}
    assert server.renders == made_ahead
    for _ in range(2):
        assert json.loads(fetch(server)[2])["events"]["received"] == 2
        assert gzip.decompress(fetch(server, path="/metrics", headers=GZIP)[2]) == \
            text_of(second)
    assert server.renders == made_ahead  # served, not rendered
    assert fetch(server, path="/metrics")[2] == text_of(second)  # made when asked
    assert server.renders == made_ahead  # the identity form was made for the gzip one
    assert json.loads(gzip.decompress(fetch(server, headers=GZIP)[2]))["events"] == \
        second["events"]
    assert server.renders == {**made_ahead, "status.gzip": 1}
    server.publish(big_document(received=3))
    assert server.renders == {"status": 3, "metrics": 3, "metrics.gzip": 3, "status.gzip": 2}


def test_a_failing_rendering_is_a_500_until_the_next_document(serve, caplog):
    """A metrics rendering that raises during publish does not reach the publisher: it is
    logged, /metrics answers 500 (tried again per request), /status is unaffected, and the
    next document is served normally."""

    def fragile(document: dict | None) -> bytes:
        if document and document.get("broken"):
            raise ValueError("cannot render this one")
        return text_of(document)

    server = serve(metrics=fragile)
    server.publish(big_document())
    assert fetch(server, path="/metrics")[0] == 200  # asked for: made ahead from now on
    with caplog.at_level(logging.ERROR, logger="ai_analytics.daemon.http"):
        server.publish({**big_document(), "broken": True})
    assert "the metrics callback failed" in caplog.text
    status, _, body = fetch(server, path="/metrics", headers=GZIP)
    assert status == 500 and b"cannot render this one" in body
    assert fetch(server)[0] == 200
    server.publish(big_document(received=5))
    assert fetch(server, path="/metrics")[2].endswith(b"received 5\n")


@pytest.mark.parametrize(("values", "gzipped"), [
    (["gzip"], True), (["GZip"], True), (["x-gzip"], True), (["gzip, deflate, br"], True),
    (["br;q=1.0, gzip;q=0.5"], True), (["gzip;q=0.001"], True), (["gzip ; Q=1"], True),
    (["*"], True), (["br", "gzip"], True), (["identity;q=0, gzip"], True),
    (["gzip;q=0"], False), (["gzip;q=0.000"], False), (["*;q=0"], False),
    (["gzip;q=0, *"], False), (["*, gzip;q=0"], False), (["deflate, br"], False), ([""], False),
    (["identity"], False), (["gzip;q=abc"], False), (["gzip;q=1.5"], False),
    (["gzip;q=0.0001"], False), (["gzip;q=-1"], False), ([",,;;,"], False), ([], False),
    (["gzip;q="], False), (["gzip;q=1.01"], False), (["gzipx"], False),
])
def test_accept_encoding_values(values, gzipped):
    """Accept-Encoding as RFC 9110 reads it: codings case-insensitive, weights 0 to 1 with at
    most three decimals, q=0 refuses, a named gzip overrides *, several headers combine;
    anything malformed counts for nothing (identity is always acceptable)."""
    assert accepts_gzip(values) is gzipped


@pytest.mark.parametrize("header", [
    b"Accept-Encoding: gzip;q=\xff\xfe", b"Accept-Encoding: " + b"gzip;q=0," * 500,
    b"Accept-Encoding:", b"Accept-Encoding: \xc3\xa9, gzip;q=nope",
])
def test_odd_accept_encoding_headers_get_the_identity_form(serve, header):
    """Bytes that are not ASCII, a long list, an empty value: a 200 with the identity body,
    never an error."""
    server = serve(snapshot=big_document, metrics=text_of)
    answer = raw_exchange(server, b"GET /metrics HTTP/1.0\r\n" + header + b"\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200 ")
    assert b"Content-Encoding" not in head
    assert body == text_of(big_document())


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(1 << 63), (1 << 63) - 1) | st.floats()
    | st.text(),
    lambda inner: st.lists(inner, max_size=12)
    | st.dictionaries(st.text() | st.integers(-(1 << 63), (1 << 63) - 1) | st.booleans()
                      | st.none(), inner, max_size=12),
    max_leaves=60)


def finite(value):
    """``value`` with NaN and infinities as None, which is how strict JSON writes them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list):
        return [finite(item) for item in value]
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    return value


def strict_loads(body: bytes):
    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")
    return json.loads(body, parse_constant=refuse)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_status_json_reads_back_as_json_dumps_wrote_it(value):
    """The /status body is one line of compact, strict JSON that reads back as what json.dumps
    writes reads back: any nesting, keys that are not strings, non-ASCII text; NaN and
    infinities as null."""
    body = status_json(value)
    assert body.endswith(b"\n") and body.count(b"\n") == 1
    assert strict_loads(body) == json.loads(json.dumps(finite(value)))


def test_status_json_writes_what_orjson_refuses():
    """Integers beyond 64 bits (a hostile lane's counters, summed) and text that is not valid
    Unicode are written as json writes them, not refused."""
    value = {"received": 1 << 70, "name": "lane-\udcff", 7: [-(1 << 65)]}
    assert json.loads(status_json(value)) == {"received": 1 << 70, "name": "lane-\udcff",
                                              "7": [-(1 << 65)]}


def test_status_json_of_a_real_document(document):
    """The same for a real daemon's document, which is written compact (no spaces; a float
    may take a few more digits than json writes, 0.00001 for 1e-05)."""
    body = status_json(document)
    assert strict_loads(body) == json.loads(json.dumps(finite(document)))
    compact = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
    assert len(compact) < len(body) < 1.02 * len(compact)
