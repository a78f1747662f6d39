"""WSGI middleware: every request becomes one ``client.timed`` event.

    app.wsgi_app = AnalyticsMiddleware(app.wsgi_app, model="bge-small")      # Flask
    application = AnalyticsMiddleware(get_wsgi_application())                 # Django

The event starts when the server calls the app and ends when the answer's body is exhausted
or closed by the server, so a streamed body is timed to its last chunk, and ``ttft_ms`` marks
its first non-empty chunk (when more follow). It is named by ``_naming``'s rules once the app
has routed the request; the route template is found, duck-typed, in the WSGI environ (see
``find_route``).

The middleware never breaks a request: a failure of its own (recording, naming) is logged
and the answer goes on unchanged.
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING

# The client's modules, not its package: the package's lazy attributes reach the embedded
# daemon, which the import contracts keep out of the middlewares.
from ai_analytics.client._emit import _check_name
from ai_analytics.client._ratelog import worth_logging
from ai_analytics.client._timed import Event, timed

from ._naming import UNMATCHED, RouteNames, operation_for_status

if TYPE_CHECKING:
    from _typeshed import OptExcInfo
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

# The environ key through which a framework adapter, or the app itself, names the route
# template of a request (``integrations.django.RouteMiddleware`` sets it).
ROUTE_KEY = "ai_analytics.route"

RouteFinder = Callable[["WSGIEnvironment"], "str | None"]
log = logging.getLogger("ai_analytics.integrations")


def find_route(environ: WSGIEnvironment) -> str | None:
    """The route template of the request, once the app has routed it; None if unmatched.

    ``environ[ROUTE_KEY]`` if set; otherwise the werkzeug request Flask leaves in
    ``environ["werkzeug.request"]`` while it handles the request, and its ``url_rule.rule``
    (``/v1/embed/<name>``; None when no rule matched). Flask lets go of that request before
    its WSGI callable returns, which is why the middleware looks when the app calls
    ``start_response``.
    """
    route = environ.get(ROUTE_KEY)
    if isinstance(route, str):
        return route
    rule = getattr(getattr(environ.get("werkzeug.request"), "url_rule", None), "rule", None)
    return rule if isinstance(rule, str) else None


class AnalyticsMiddleware:
    """Wrap a WSGI app so that each request it serves is recorded as one event.

    ``model``: the model recorded unless the endpoint sets one
    (``client.current_event().model = ...``); ``names``: renames route templates, keyed by
    ``"METHOD template"``; ``route``: finds a request's template in its environ for a
    framework ``find_route`` does not know (return None when no route matched).
    """

    def __init__(self, app: WSGIApplication, *, model: str = "",
                 names: Mapping[str, str] | None = None,
                 route: RouteFinder | None = None) -> None:
        self.app = app
        self.model = _check_name(model, "model")
        self.names = RouteNames(names)
        self.route = find_route if route is None else route
        self._failures = 0

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse
                 ) -> Iterable[bytes]:
        # The event is current in a context of the request's own: inside the app, and again
        # while the server pulls each chunk of the body (a generator view runs then), but
        # never in the server's code between requests. No token to reset, on any path.
        exchange = _Exchange(self, environ, start_response, contextvars.copy_context())
        inner, iterator = exchange.context.run(exchange.call)
        return _Body(exchange, inner, iterator)

    def _failed(self) -> None:
        """One of the middleware's own steps failed: log it (not every time) and go on."""
        self._failures += 1
        if worth_logging(self._failures):
            log.warning("ai_analytics: recording a request failed (%d so far); the requests "
                        "themselves are not affected", self._failures, exc_info=True)


class _Exchange:
    """One request: its event, the status the app answered with and the route it found."""

    __slots__ = ("_ended", "_start_response", "context", "environ", "event", "middleware",
                 "route", "status")

    def __init__(self, middleware: AnalyticsMiddleware, environ: WSGIEnvironment,
                 start_response: StartResponse, context: contextvars.Context) -> None:
        self.middleware = middleware
        self.environ = environ
        self.context = context
        self._start_response = start_response
        self.status: str | None = None
        self.route: str | None = None
        self._ended = False

    def call(self) -> tuple[Iterable[bytes], Iterator[bytes]]:
        """Run the app (in ``context``); an exception ends the event and goes on unchanged."""
        self.event: Event = timed(UNMATCHED, model=self.middleware.model).start()
        try:
            inner = self.middleware.app(self.environ, self.start_response)
            return inner, iter(inner)
        except BaseException as error:
            self.end(error)
            raise

    def start_response(self, status: str, headers: list[tuple[str, str]],
                       exc_info: OptExcInfo | None = None) -> Callable[[bytes], object]:
        self.status = status
        self.route = self._find_route()
        write = self._start_response(status, headers, exc_info)

        def first_token_write(data: bytes) -> object:  # the legacy write(): a chunk too
            if data:
                self.event.first_token()
            return write(data)

        return first_token_write

    def _find_route(self) -> str | None:
        try:
            return self.middleware.route(self.environ)
        except Exception:
            self.middleware._failed()
            return None

    def end(self, error: BaseException | None) -> None:
        """Name the event and record it, once: as ``error`` says it ended, or as it stands."""
        if self._ended:
            return
        self._ended = True
        # The app routed the request before it started its answer; with no answer started
        # (it raised first), whatever it left in the environ is all there is.
        route = self.route if self.status is not None else self._find_route()
        try:
            name = self.middleware.names(self.environ.get("REQUEST_METHOD", ""), route)
            code = _status_code(self.status)
            if code >= 500:
                self.event.success = False
            self.event.operation = operation_for_status(name, code)
            self.event.finish(error)
        except Exception:
            self.middleware._failed()


def _status_code(status: str | None) -> int:
    """The code of a WSGI status line (``"404 NOT FOUND"``); 0 when there is none."""
    try:
        return int(status[:3]) if status else 0
    except ValueError:
        return 0


class _Body:
    """The app's body, passed through to the server chunk by chunk: the first non-empty
    chunk of an answer in several pieces marks the first token; exhaustion, an exception or
    the server's ``close()`` ends the event. The app's own ``close()`` is called once, as
    PEP 3333 asks."""

    __slots__ = ("_closed", "_exchange", "_first_at", "_inner", "_iterator")

    def __init__(self, exchange: _Exchange, inner: Iterable[bytes],
                 iterator: Iterator[bytes]) -> None:
        self._exchange = exchange
        self._inner = inner
        self._iterator = iterator
        self._closed = False
        self._first_at = 0  # when the first non-empty chunk went out; -1 once marked

    def __iter__(self) -> _Body:
        return self

    def __next__(self) -> bytes:
        exchange = self._exchange
        try:
            chunk = exchange.context.run(next, self._iterator)
        except StopIteration:
            exchange.end(None)
            raise
        except BaseException as error:
            exchange.end(error)
            raise
        if chunk:
            if self._first_at == 0:
                self._first_at = time.monotonic_ns()
            elif self._first_at > 0:
                # A second non-empty chunk: the answer comes in pieces, and its first token
                # went out with the first one. An answer in one piece gets no first token (it
                # is the whole answer, and would only blur the streams' TTFT).
                exchange.event.first_token(self._first_at)
                self._first_at = -1
        return chunk

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        exchange = self._exchange
        close = getattr(self._inner, "close", None)
        try:
            if close is not None:
                exchange.context.run(close)
        except BaseException as error:
            exchange.end(error)
            raise
        exchange.end(None)

