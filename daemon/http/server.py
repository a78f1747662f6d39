"""The daemon's HTTP endpoint: ``GET /status`` (the latest snapshot as JSON), ``GET /healthz``,
``GET /metrics`` (Prometheus text format) when a ``metrics`` callback is given, the live page
(``GET /`` and ``GET /ui/<name>``, page_files.py) and ``GET /api/series`` when a ``series``
callback is given (series_api.py). docs/http.md describes each.

Loopback by default (``http_host: 127.0.0.1``); nothing listens beyond it unless configured,
and a non-loopback address is logged as a warning at start. A connection that arrived on a
local address other than loopback (a daemon bound to 0.0.0.0 or a pod's address so that
Prometheus can scrape it) gets ``/metrics`` and ``/healthz`` only, unless
``pages_beyond_loopback`` (the setting ``http_pages_beyond_loopback``) says otherwise: the
page, the API and ``/status`` tell more about the node than its metrics do. Decided by the
accepted socket's own address, not the client's, so ``kubectl port-forward`` (which arrives
on the pod's loopback) still gets the page.

Why not ``http.server.ThreadingHTTPServer`` as it comes: it starts one thread per connection
without a cap; its ``shutdown()`` waits without a timeout; its ``server_close()`` joins every
handler thread without a timeout (``block_on_close``); its ``server_bind()`` does a reverse DNS
lookup (``getfqdn``); and its per-read socket timeout lets a client that sends one byte every
few seconds keep a thread for as long as it likes. So the stdlib does the HTTP (request-line and
header parsing, ``BaseHTTPRequestHandler`` with its 400/414/431/501 answers) and this module
does the rest, where every wait and every resource can be bounded:

- one accept thread; it takes a connection slot *before* it accepts, so with every slot busy
  new connections wait in the kernel's listen backlog, costing no thread and no memory here;
- one daemon thread per accepted connection, at most ``max_connections`` of them;
- one deadline per connection (``request_timeout``) for reading the request and writing the
  answer, and a byte budget for the request head (``MAX_HEAD_BYTES``): a silent or trickling
  client is cut at the deadline, whatever it sends;
- HTTP/1.0, one request per connection: no idle keep-alive connections holding slots;
- ``stop(timeout)`` closes the listener, shuts down every open connection (which wakes the
  threads blocked on them) and joins within the timeout.

Nothing is written to stderr per request: http.server's request log goes to the
``ai_analytics.daemon.http`` logger at debug level.
"""

from __future__ import annotations

import contextlib
import errno
import io
import ipaddress
import json
import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import urlsplit

from ai_analytics.client._ratelog import worth_logging
from ai_analytics.core.document import SnapshotDocument
from ai_analytics.core.errors import BindError, host_port
from ai_analytics.core.state import document_json
from ai_analytics.daemon.http.ahead import AheadPlan
from ai_analytics.daemon.http.answers import METRICS, STATUS, Answers, accepts_gzip
from ai_analytics.daemon.http.page_files import INDEX, PAGE_DIR, PageFile, load_page
from ai_analytics.daemon.http.series_api import ApiError

log = logging.getLogger("ai_analytics.daemon.http")

REQUEST_TIMEOUT_SECONDS = 10.0  # connect → answer written, whatever the client does
MAX_CONNECTIONS = 32  # connections served at once; more wait in the listen backlog
LISTEN_BACKLOG = 128
MAX_HEAD_BYTES = 32 * 1024  # request line + headers; beyond: 414 (request line) or 431
MAX_DISCARD_BYTES = 64 * 1024  # a request body we read and drop so the answer is not reset
LINGER_SECONDS = 1.0  # after an error answer: how long unread input is drained before close
LINGER_BYTES = 256 * 1024
POLL_SECONDS = 0.1  # how often the accept thread looks at the stop flag
MIN_WRITE_SECONDS = 0.05  # the least time given to write an answer once it is ready

ALLOW = "GET, HEAD"
JSON_TYPE = "application/json"
TEXT_TYPE = "text/plain; charset=utf-8"
# Prometheus text exposition format 0.0.4: what prometheus_client's generate_latest writes.
METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# On every answer: the page may load scripts, styles and data from this origin only, and
# nothing inline (docs/http.md).
SECURITY_HEADERS = (
    ("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; "
     "img-src 'self' data:; connect-src 'self'; font-src 'self'; base-uri 'none'; "
     "form-action 'none'; frame-ancestors 'none'"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
)
# Data changes with every snapshot; the page's files with the daemon's version.
NO_STORE, NO_CACHE = "no-store", "no-cache"
# /status and /metrics come in two forms, by the request's Accept-Encoding (answers.py).
VARY = ("Vary", "Accept-Encoding")
GZIPPED = ("Content-Encoding", "gzip")
FORMS = ((STATUS, False), (STATUS, True), (METRICS, False), (METRICS, True))
UI_PREFIX = "/ui/"
SERIES_PATH = "/api/series"
# Served on every local address; everything else on loopback only, unless configured.
EVERYWHERE = ("/metrics", "/healthz")
PAGES_SETTING = "http_pages_beyond_loopback"

Snapshot = Callable[[], SnapshotDocument | None]
Health = Callable[[], tuple[bool, str]]
# A document -> its /metrics text (metrics.render).
Metrics = Callable[[SnapshotDocument], bytes]
# (the URL's query string, the request's monotonic deadline) -> the answer as JSON
Series = Callable[[str, float], bytes]


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1, or an IPv4 loopback address mapped into IPv6 (a dual-stack socket
    bound to ::)."""
    address = ipaddress.ip_address(host.split("%")[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def bind_error(host: str, port: int, exc: OSError) -> BindError:
    """Turn the OSError of resolving, binding or listening into a BindError that says what
    to change."""
    if isinstance(exc, socket.gaierror):
        return BindError(host, port, f"host {host!r} does not resolve ({exc.strerror}); set "
                         "http_host (127.0.0.1 keeps it local)")
    code = exc.errno
    if code == errno.EADDRINUSE:
        reason = (f"port {port} on {host} is already in use (another ai-analyticsd?); set "
                  "http_port to a free port, or http_enabled: false")
    elif code == errno.EADDRNOTAVAIL:
        reason = (f"{host} is not an address of this machine; set http_host (127.0.0.1 keeps "
                  "it local)")
    elif code in (errno.EACCES, errno.EPERM):
        why = " (ports below 1024 need root or CAP_NET_BIND_SERVICE)" if port < 1024 else ""
        reason = f"permission denied for port {port}{why}; set http_port (default 9466)"
    elif code == errno.EAFNOSUPPORT:
        reason = f"this machine cannot listen on {host} (address family not supported)"
    else:
        reason = exc.strerror or str(exc)
    return BindError(host, port, reason, code)


class _RequestTooLarge(Exception):
    """The client sent more than the byte budget of its request."""


class _RequestReader(io.RawIOBase):
    """A connection's read side bounded in time (one deadline for the whole request, not a
    timeout per read) and in bytes (``left``)."""

    def __init__(self, sock: socket.socket, deadline: float, limit: int) -> None:
        self._sock = sock
        self._deadline = deadline
        self.left = limit

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self.left <= 0:
            raise _RequestTooLarge
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("request not received in time")
        self._sock.settimeout(remaining)
        received = self._sock.recv_into(buffer, min(len(buffer), self.left))
        self.left -= received
        return received


class _Handler(BaseHTTPRequestHandler):
    """One request on one connection (HTTP/1.0: the connection closes after the answer)."""

    protocol_version = "HTTP/1.0"
    # http.server's default, HTTP/0.9, answers a bad request line with a bare body and no
    # status line; every answer here has a status line and headers.
    default_request_version = "HTTP/1.0"
    server: StatusServer  # type: ignore[assignment]

    def setup(self) -> None:
        self.deadline = time.monotonic() + self.server.request_timeout
        self.linger = False  # True when input may be left unread: drain it before closing
        # What http.server sets while parsing; set here so that an error answer to a request
        # cut short (too large, see handle_one_request) finds them.
        self.raw_requestline = b""
        self.requestline = self.command = self.request_version = ""
        super().setup()
        self.rfile.close()  # replaced by the bounded reader
        self.reader = _RequestReader(self.connection, self.deadline, MAX_HEAD_BYTES)
        self.rfile = io.BufferedReader(self.reader)

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except _RequestTooLarge:
            if not self.raw_requestline:  # still reading the request line
                self.send_error(414, f"request line longer than {MAX_HEAD_BYTES} bytes")
            else:
                self.send_error(431, f"request head larger than {MAX_HEAD_BYTES} bytes")

    # -- routes ----------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._discard_body()
        url = urlsplit(self.path)
        path = url.path
        if self._refused(path):
            return
        if path == "/status":
            self._status()
        elif path == "/healthz":
            self._health()
        elif path == "/metrics" and self.server.metrics is not None:
            self._metrics()
        elif path == "/":
            self._page(path, INDEX)
        elif path.startswith(UI_PREFIX):
            self._page(path, path[len(UI_PREFIX):])
        elif path == SERIES_PATH and self.server.series is not None:
            self._series(url.query)
        else:
            self._not_found(path)

    do_HEAD = do_GET  # _respond leaves the body out for HEAD

    def _not_allowed(self) -> None:
        self._discard_body()
        path = urlsplit(self.path).path
        if self._refused(path):
            return
        if not self.server.serves(path):
            self._not_found(path)
            return
        self._respond(405, _error_body(405, f"method {self.command} not allowed on {path}; "
                                       f"use {ALLOW}"), JSON_TYPE, [("Allow", ALLOW)])

    # Methods HTTP defines that these resources do not allow: 405 with Allow. A method that
    # HTTP does not define gets http.server's 501 (RFC 9110 §9.1), in JSON with Allow too.
    do_POST = do_PUT = do_DELETE = do_PATCH = _not_allowed
    do_OPTIONS = do_TRACE = do_CONNECT = _not_allowed

    def _status(self) -> None:
        gzip = self._gzip_accepted()
        try:
            body = self.server.body(STATUS, gzip)
        except Exception as exc:
            self.server.callback_failed("snapshot")
            self._respond(500, _error_body(500, f"snapshot failed: {exc!r}"), JSON_TYPE)
            return
        if body is None:
            self._respond(503, _error_body(503, "no snapshot yet: the daemon has not finished "
                                           "its first loop; try again in a moment"), JSON_TYPE)
        else:
            self._respond(200, body, JSON_TYPE, [VARY, GZIPPED] if gzip else [VARY])

    def _health(self) -> None:
        try:
            healthy, reason = self.server.health()
        except Exception as exc:
            self.server.callback_failed("health")
            healthy, reason = False, f"health check failed: {exc!r}"
        if healthy:
            self._respond(200, b"ok\n", TEXT_TYPE)
        else:
            self._respond(503, f"{reason or 'unhealthy'}\n".encode(), TEXT_TYPE)

    def _metrics(self) -> None:
        gzip = self._gzip_accepted()
        try:
            body = self.server.body(METRICS, gzip)
        except Exception as exc:
            self.server.callback_failed("metrics")
            self._respond(500, f"metrics failed: {exc!r}\n".encode(), TEXT_TYPE)
            return
        if body is None:  # no snapshot yet: no samples
            gzip, body = False, b""
        self._respond(200, body, METRICS_TYPE, [VARY, GZIPPED] if gzip else [VARY])

    def _gzip_accepted(self) -> bool:
        return accepts_gzip(self.headers.get_all("Accept-Encoding") or ())

    def _page(self, path: str, name: str) -> None:
        page_file = self.server.page.get(name)
        if page_file is None:  # not in the allow-list, whatever the name holds
            self._not_found(path)
            return
        self._respond(200, page_file.body, page_file.content_type, cache=NO_CACHE)

    def _series(self, query: str) -> None:
        assert self.server.series is not None
        try:
            body = self.server.series(query, self.deadline)
        except ApiError as exc:
            self._respond(exc.status, _error_body(exc.status, str(exc)), JSON_TYPE)
            return
        except Exception as exc:
            self.server.callback_failed("series")
            self._respond(500, _error_body(500, f"series failed: {exc!r}"), JSON_TYPE)
            return
        self._respond(200, body, JSON_TYPE)

    def _refused(self, path: str) -> bool:
        """The safety rule (module docstring): answer 404 for what this connection's local
        address may not see; True when answered."""
        local = self.connection.getsockname()[0]
        if self.server.pages_beyond_loopback or path in EVERYWHERE or is_loopback(local):
            return False
        if not self.server.serves(path):
            self._not_found(path, EVERYWHERE)
            return True
        self._respond(404, _error_body(
            404, f"{path} is served on loopback only, and this connection arrived on {local}; "
                 f"set {PAGES_SETTING}: true to serve the page, /api/ and /status there "
                 f"(here: {' and '.join(EVERYWHERE)})"), JSON_TYPE)
        return True

    def _not_found(self, path: str, paths: Iterable[str] | None = None) -> None:
        shown = " or ".join(paths or self.server.paths())
        self._respond(404, _error_body(404, f"no such path: {path}; try {shown}"), JSON_TYPE)

    # -- answers ---------------------------------------------------------------------------
    def send_error(self, code: int, message: str | None = None, explain: str | None = None
                   ) -> None:
        """http.server's error answers (400, 414, 431, 501, ...) in JSON like ours."""
        self.linger = True  # the request may not have been read to its end
        text = message or self.responses.get(code, ("error",))[0]
        if explain:
            text = f"{text}: {explain}"
        headers = [("Allow", ALLOW)] if code in (405, 501) else []
        self._respond(code, _error_body(code, text), JSON_TYPE, headers)

    def _respond(self, code: int, body: bytes, content_type: str,
                 headers: Iterable[tuple[str, str]] = (), cache: str = NO_STORE) -> None:
        self.connection.settimeout(max(self.deadline - time.monotonic(), MIN_WRITE_SECONDS))
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", cache)
        for name, value in (*SECURITY_HEADERS, *headers):
            self.send_header(name, value)
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _discard_body(self) -> None:
        """Read a small request body we do not use: closing a socket with unread input sends
        a reset, which can destroy our answer before the client reads it."""
        try:
            length = int(self.headers.get("Content-Length", 0))
        except ValueError:
            length = -1
        if length == 0:
            return
        if not 0 < length <= MAX_DISCARD_BYTES or "Transfer-Encoding" in self.headers:
            self.linger = True
            return
        self.reader.left += length
        try:
            self.rfile.read(length)
        except (_RequestTooLarge, OSError):
            self.linger = True

    def version_string(self) -> str:
        return "ai-analyticsd"

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s %s", self.address_string(), format % args)


def _error_body(code: int, message: str) -> bytes:
    return json.dumps({"status": code, "error": message}).encode() + b"\n"


class StatusServer:
    """Serve ``/status``, ``/healthz`` and the page (and ``/metrics`` when ``metrics`` is
    given, ``/api/series`` when ``series`` is) from a daemon thread, with bounded threads,
    time and memory; see the module docstring.

    ``snapshot`` returns the latest snapshot document or None; ``health`` returns
    (healthy, reason). These run on the server's threads and must return at once: reading a
    reference the daemon publishes is the intended use. ``metrics`` turns a document into
    its Prometheus text (``metrics.render``); without it there is no ``/metrics``.

    ``/status`` and ``/metrics`` are rendered once per document and served as cached bytes
    (``answers.Answers``), identity or gzip by the request's Accept-Encoding. Whoever makes
    the documents calls ``publish(document)`` with each: it renders, on the caller's thread,
    the forms requests asked for lately, and from the first call on the server serves the
    published document. Until then, the first request for a document ``snapshot()``
    returns (compared by identity) renders what it asks for, and later requests for that
    document are served the cached bytes. ``series``
    (``series_api.SeriesApi``) reads the history database on the server's thread, bounded
    by the request's deadline. ``page_dir``: the page's files, read at ``start``.
    ``pages_beyond_loopback``: serve everything on every local address (module docstring).
    """

    def __init__(self, host: str, port: int, snapshot: Snapshot, health: Health, *,
                 request_timeout: float = REQUEST_TIMEOUT_SECONDS,
                 max_connections: int = MAX_CONNECTIONS, metrics: Metrics | None = None,
                 series: Series | None = None, pages_beyond_loopback: bool = False,
                 page_dir: Path = PAGE_DIR) -> None:
        if max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, got {max_connections}")
        self.host = host
        self.port = port
        self.snapshot = snapshot
        self.health = health
        self.metrics = metrics
        self.series = series
        self.pages_beyond_loopback = pages_beyond_loopback
        self.page_dir = page_dir
        self.page: dict[str, PageFile] = {}
        self.request_timeout = request_timeout
        self.max_connections = max_connections
        self._slots = threading.BoundedSemaphore(max_connections)
        self._stopping = threading.Event()
        self._lock = threading.Lock()  # guards _connections
        self._connections: dict[socket.socket, threading.Thread] = {}
        self._socket: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._address: tuple[str, int] = (host, port)
        # Each replaced whole (a reader sees one document's answers or the next one's):
        # _published by publish(), _pulled by a request when nothing was published.
        self._published: Answers | None = None
        self._pulled: Answers | None = None
        self._tally_lock = threading.Lock()
        self.renders: dict[str, int] = {}  # bodies made, by name: "status", "metrics.gzip", ...
        self._ahead = AheadPlan(FORMS)  # which forms publish() makes ahead
        self._failures = {"snapshot": 0, "health": 0, "metrics": 0, "series": 0}

    def paths(self) -> tuple[str, ...]:
        """The paths this server answers (the page's files as one, ``/ui/…``)."""
        return ("/", "/status", "/healthz", *(("/metrics",) if self.metrics else ()),
                *((SERIES_PATH,) if self.series else ()), f"{UI_PREFIX}…")

    def serves(self, path: str) -> bool:
        """Whether ``path`` is one this server answers (on a loopback connection)."""
        if path.startswith(UI_PREFIX):
            return path[len(UI_PREFIX):] in self.page
        return path == "/" or path in self.paths()

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) it listens on once started (the real port when 0 was asked for)."""
        return self._address

    # -- start and stop --------------------------------------------------------------------
    def start(self) -> None:
        """Bind, listen and serve in a daemon thread; BindError if it cannot listen."""
        if self._thread is not None or self._stopping.is_set():
            raise RuntimeError("a StatusServer starts once; make a new one after stop()")
        self.page = load_page(self.page_dir)
        sock = self._listen()
        self._socket = sock
        self._address = sock.getsockname()[:2]
        self._thread = threading.Thread(target=self._accept_loop, name="ai-analytics-http",
                                        daemon=True)
        self._thread.start()
        where = host_port(*self._address)
        if is_loopback(self._address[0]):
            log.info("HTTP endpoint on http://%s (%s)", where, ", ".join(self.paths()))
        else:
            log.warning("HTTP endpoint on http://%s is reachable from other machines; "
                        "set http_host: 127.0.0.1 to keep it local (%s)", where,
                        "everything is served there" if self.pages_beyond_loopback else
                        f"beyond loopback only {' and '.join(EVERYWHERE)} are served")

    def _listen(self) -> socket.socket:
        try:
            family, kind, proto, _, sockaddr = socket.getaddrinfo(
                self.host, self.port, 0, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)[0]
        except OSError as exc:
            raise bind_error(self.host, self.port, exc) from None
        sock: socket.socket | None = None
        try:
            sock = socket.socket(family, kind, proto)
            # A restart must not wait for the last run's connections in TIME_WAIT; on Linux
            # this does not let two listeners share a port.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(sockaddr)
            sock.listen(LISTEN_BACKLOG)
            sock.setblocking(False)  # accept never blocks, even if the client left already
        except OSError as exc:
            if sock is not None:
                sock.close()
            raise bind_error(self.host, self.port, exc) from None
        return sock

    def stop(self, timeout: float) -> bool:
        """Stop listening, cut open connections, and join the threads within ``timeout``.

        Returns True when every thread has ended; threads still busy (a callback that does
        not return) are left behind as daemon threads and logged.
        """
        deadline = time.monotonic() + timeout
        self._stopping.set()
        if self._thread is not None:  # it sees the flag within two polls
            self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._socket is not None:
            self._socket.close()
        with self._lock:
            connections = dict(self._connections)
            for conn in connections:  # wakes a thread blocked reading or writing it
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        for thread in connections.values():
            thread.join(max(0.0, deadline - time.monotonic()))
        busy = [t for t in (self._thread, *connections.values()) if t and t.is_alive()]
        if busy:
            log.warning("HTTP endpoint: %d thread(s) still busy after %.1f s, left behind",
                        len(busy), timeout)
        return not busy

    # -- connections -----------------------------------------------------------------------
    def _accept_loop(self) -> None:
        assert self._socket is not None
        listener = self._socket
        errors = 0
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(listener, selectors.EVENT_READ)
                while not self._stopping.is_set():
                    # A slot first: with all busy, new connections wait in the listen backlog.
                    if not self._slots.acquire(timeout=POLL_SECONDS):
                        continue
                    handed_over = False
                    try:
                        if selector.select(POLL_SECONDS):
                            conn, peer = listener.accept()
                            self._start_connection(conn, peer)
                            handed_over = True
                    except (BlockingIOError, InterruptedError):
                        pass  # the client left between select and accept
                    except (OSError, RuntimeError) as exc:  # EMFILE, no thread left, ...
                        if self._stopping.is_set():
                            break
                        errors += 1
                        if worth_logging(errors):
                            log.warning("HTTP endpoint cannot take a connection: %s "
                                        "(failure %d; it keeps trying)", exc, errors)
                        self._stopping.wait(POLL_SECONDS)
                    finally:
                        if not handed_over:
                            self._slots.release()
        except Exception:
            log.exception("HTTP endpoint stopped serving: %s are down",
                          " and ".join(self.paths()))

    def _start_connection(self, conn: socket.socket, peer: tuple[str, int]) -> None:
        thread = threading.Thread(target=self._serve_connection, args=(conn, peer),
                                  name="ai-analytics-http-conn", daemon=True)
        with self._lock:
            self._connections[conn] = thread
        try:
            thread.start()
        except BaseException:
            with self._lock:
                del self._connections[conn]
            conn.close()
            raise

    def _serve_connection(self, conn: socket.socket, peer: tuple[str, int]) -> None:
        try:
            handler = _Handler(conn, peer, self)  # type: ignore[arg-type]
            if handler.linger:
                _linger(conn)
        except Exception as exc:  # the client went away, timed out, or reset: normal
            log.debug("HTTP connection from %s ended: %r", peer[0], exc)
        finally:
            # Out of the table before closing: stop() only shuts down sockets still open.
            with self._lock:
                self._connections.pop(conn, None)
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_WR)
            conn.close()
            self._slots.release()

    # -- what the handlers call ------------------------------------------------------------
    def publish(self, document: SnapshotDocument, status_body: bytes | None = None) -> None:
        """Serve ``document`` from now on (``snapshot`` is no longer read for ``/status`` and
        ``/metrics``). Each form (its ``/status`` JSON or ``/metrics`` text, identity or gzip)
        that the next request for it will find on this document (``ahead.AheadPlan``) is
        made here, on the caller's thread, before the swap, so that regular scrapers and
        pollers never wait for a rendering; a form nobody asked for lately, or asked at an
        unforeseen moment, is made at the first request for it.

        ``status_body``: the document's ``document_json``, when the caller has encoded it
        already (the daemon does, for its state file).

        ``document`` must not be changed afterwards (nor anything inside it). A rendering
        that raises is logged (rate-limited) and answered 500 until the next document; the
        exception does not reach the caller."""
        answers = self._answers_for(document, status_body)
        ahead = self._ahead.published(time.monotonic())
        for name, exc in answers.prepare(ahead):
            self.callback_failed("snapshot" if name == STATUS else "metrics", exc)
        self._published = answers

    def body(self, name: str, gzip: bool) -> bytes | None:
        """The ``/status`` (``STATUS``) or ``/metrics`` (``METRICS``) body of the document
        served now, gzipped or not; None when there is no document yet. Raises what the
        rendering raised."""
        answers = self._published
        if answers is None:
            document = self.snapshot()
            if document is None:
                return None
            answers = self._pulled
            if answers is None or answers.document is not document:
                answers = self._answers_for(document)
                self._pulled = answers
        self._ahead.asked((name, gzip), time.monotonic())
        return answers.bodies[name].get(gzip)

    def _answers_for(self, document: SnapshotDocument, status_body: bytes | None = None
                     ) -> Answers:
        metrics = self.metrics
        return Answers(document, (lambda: status_body) if status_body is not None
                       else lambda: document_json(document),
                       (lambda: metrics(document)) if metrics is not None else lambda: b"",
                       self._made)

    def _made(self, name: str) -> None:
        with self._tally_lock:
            self.renders[name] = self.renders.get(name, 0) + 1

    def callback_failed(self, name: str, exc: BaseException | None = None) -> None:
        """Log a raising callback (rate-limited: ``worth_logging``), with traceback: the one
        being handled, or ``exc``."""
        self._failures[name] += 1
        failures = self._failures[name]
        if worth_logging(failures):
            log.error("HTTP endpoint: the %s callback failed (failure %d)", name, failures,
                      exc_info=exc or True)


def _linger(conn: socket.socket) -> None:
    """Half-close, then read and drop what the client still sends (bounded in bytes and
    time), so that closing does not reset the connection before the client reads the
    answer."""
    conn.shutdown(socket.SHUT_WR)
    deadline = time.monotonic() + LINGER_SECONDS
    left = LINGER_BYTES
    while left > 0:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        conn.settimeout(remaining)
        data = conn.recv(min(left, 65536))
        if not data:
            return
        left -= len(data)


__all__ = ["StatusServer", "bind_error"]
