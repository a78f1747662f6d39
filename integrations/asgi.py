"""The ASGI middleware: every HTTP request of an ASGI 3 app becomes one ``client.timed`` event.

    app.add_middleware(AnalyticsMiddleware)                 # FastAPI, Starlette
    app = AnalyticsMiddleware(app, model="llama-3-8b", route=find_template)  # any ASGI 3 app

It speaks the protocol only and imports no framework. The event starts when the request
arrives and is current (``client.current_event()``) for the app's whole call, so an endpoint
can set its model or tokens; it is recorded when the app hands over the last body chunk, named
after the route the router left in the scope (see ``route_template``) and the status. Work the
app does after that (background tasks) is not timed and cannot fail it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from ai_analytics.client._emit import _check_name, prepare
from ai_analytics.client._ratelog import worth_logging
from ai_analytics.client._timed import Event

from ._naming import UNMATCHED, RouteNames, operation_for_status

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
# Given the scope after the app ran and the root_path the request arrived with: the template.
RouteFinder = Callable[[Scope, str], "str | None"]

log = logging.getLogger("ai_analytics.integrations")


class _Unfinished(Exception):
    """The app returned without completing its answer: recorded as a failure."""


def route_template(scope: Scope, root_path: str) -> str | None:
    """The route template the router picked for this request, or None where none matched.

    Starlette's router (FastAPI's too) stores the route it matched in ``scope["route"]``, whose
    ``path_format`` is the template (``/items/{item_id}``). A mount adds the prefix it matched
    to ``scope["root_path"]``; the part added since the request arrived is put in front.
    FastAPI's lazily included routers leave the route with its router-local path and keep the
    full one in the route context FastAPI records for that same route (checked by identity, so
    a context left over from another router is never used). A mount whose app has no router
    of its own (static files) is named by its prefix and ``/{path}``.
    """
    prefix = str(scope.get("root_path", ""))
    prefix = prefix[len(root_path):] if prefix.startswith(root_path) else ""
    route = scope.get("route")
    if route is None:
        # FastAPI's router leaves no route for a mount: the mount's prefix stands for it.
        return f"{prefix}/{{path}}" if prefix else None
    template = getattr(route, "path_format", None)
    state = scope.get("fastapi")
    if isinstance(state, dict):
        context = state.get("effective_route_context")
        if context is not None and getattr(context, "original_route", None) is route:
            template = getattr(context, "path_format", template)
    if not isinstance(template, str):
        return None
    own = getattr(route, "path", None)
    if isinstance(own, str) and template == f"{own}/{{path}}":
        # A mount answered itself (static files, an app without a router): its prefix is in
        # root_path already, and its template repeats it.
        prefix = prefix.removesuffix(own)
    return prefix + template


class AnalyticsMiddleware:
    """Record each HTTP request as one event; pass websockets through; ``client.prepare()``
    at lifespan startup.

    ``model``: the model of every event unless the endpoint sets ``event.model``; ``names``:
    renames operations (``{"POST /v1/chat/completions": "chat_completion"}``); ``route``: finds
    the template for apps without Starlette's router (``route(scope, root_path)``: the scope
    after the app ran, the root_path the request arrived with; None for no match). A bad
    ``model`` or ``names`` raises here, at startup.
    """

    def __init__(self, app: ASGIApp, *, model: str = "",
                 names: Mapping[str, str] | None = None,
                 route: RouteFinder | None = None) -> None:
        self.app = app
        self.model = _check_name(model, "model")
        self.names = RouteNames(names)
        self.route = route_template if route is None else route
        self._failures = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._request(scope, receive, send)
        elif kind == "lifespan":
            await self.app(scope, self._preparing(receive), send)
        else:
            await self.app(scope, receive, send)

    def _preparing(self, receive: Receive) -> Receive:
        # The server reads lifespan messages on its event loop's thread: the thread whose
        # lane every request's event goes to. Making it here spares the first request.
        async def receive_and_prepare() -> Message:
            message = await receive()
            if message.get("type") == "lifespan.startup":
                try:
                    prepare()
                except Exception:
                    self._failed("could not prepare this thread's lane")
            return message

        return receive_and_prepare

    async def _request(self, scope: Scope, receive: Receive, send: Send) -> None:
        event = Event(UNMATCHED, self.model)
        root_path = str(scope.get("root_path", ""))
        status = 0
        ended = gone = False

        def end(error: BaseException | None) -> None:
            # Name the event now that the router has run, and record it, once; never raise.
            nonlocal ended
            if ended:
                return
            ended = True
            if gone:
                # The client went away: recorded as it stands, as a consumer's closing of a
                # timed stream is. The request counts, and the model is not blamed for the
                # client's choice (the app sees the end of its stream as an error).
                error = None
            try:
                name = self.names(str(scope.get("method", "")), self.route(scope, root_path))
                if error is None:
                    name = operation_for_status(name, status)
                    if status >= 500:
                        event.success = False
                event.operation = name
                event.finish(error)
            except Exception:
                self._failed("could not record a request")

        async def receive_watching() -> Message:
            nonlocal gone
            message = await receive()
            if message.get("type") == "http.disconnect" and not ended:
                gone = True
            return message

        async def send_watching(message: Message) -> None:
            nonlocal status, gone
            kind = message.get("type")
            last = False
            if kind == "http.response.start":
                status = int(message.get("status", 0))
            elif kind == "http.response.body" and not ended:
                last = not message.get("more_body", False)
                # A first token only where the answer comes in pieces: a one-piece answer's
                # "first token" is the whole answer, and would only blur the streams' TTFT.
                if not last and message.get("body"):
                    event.first_token()
            try:
                await send(message)
            except OSError:  # the server could not write it: the client is gone
                gone = True
                raise
            if last:
                end(None)

        with event:  # current during the app's call; recorded before leaving it, by end()
            try:
                await self.app(scope, receive_watching, send_watching)
            except BaseException as error:
                end(error)
                raise
            # Returned without finishing its answer: the client went away (Starlette stops a
            # stream on http.disconnect: gone), or the app broke the protocol, which the
            # server answers with a 500 or a cut connection: a failure.
            end(_Unfinished())

    def _failed(self, what: str) -> None:
        # The middleware must never break a request: a fault of ours is logged (the first,
        # then every 100th) and the request goes on.
        self._failures += 1
        if worth_logging(self._failures):
            log.exception("ai_analytics ASGI middleware: %s (%d so far)", what, self._failures)
