"""How a request is named: the rules both middlewares share.

The operation is the method and the route template (``POST /v1/embed/{name}``), never the raw
path, so that the number of series stays bounded whatever paths clients send. Requests no
route matched share one name, methods outside the standard ones share ``OTHER``, and an
optional mapping renames templates (``{"POST /v1/chat/completions": "chat_completion"}``).

A 4xx answer is a success (the server did its job: the request was bad) recorded under the
operation's name with `` 4xx`` appended: its own row in the status view and its own series in
/metrics, so that fast rejections neither hide among nor drag down the real requests'
latencies. A 5xx answer, or an exception, fails the event under the operation's own name.
"""

from __future__ import annotations

from collections.abc import Mapping

from ai_analytics.client._emit import _check_name
from ai_analytics.client._layout import MAX_NAME_BYTES

UNMATCHED = "unmatched"
CLIENT_ERROR_SUFFIX = " 4xx"
# RFC 9110's methods plus PATCH: anything else a client sends is one name, not a new series.
STANDARD_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"})


class RouteNames:
    """Names requests by their method and route template, with an optional renaming
    (``{"POST /v1/chat/completions": "chat_completion"}``), checked here so that a bad entry
    raises when the middleware is made. Names already given are remembered: the same few
    routes come back on every request."""

    # Room for every route of any real app: past it (methods made up by clients are
    # folded to OTHER, but each raw spelling is a key), names are made afresh each time.
    REMEMBERED = 4096

    def __init__(self, names: Mapping[str, str] | None = None) -> None:
        self.renamed = _checked(names)
        self._given: dict[tuple[str, str | None], str] = {}

    def __call__(self, method: str, template: str | None) -> str:
        """The operation for a request: the renamed name, ``METHOD template``, or
        UNMATCHED when no route matched."""
        key = (method, template)
        name = self._given.get(key)
        if name is None:
            name = self._name(method, template)
            if len(self._given) < self.REMEMBERED:
                self._given[key] = name
        return name

    def _name(self, method: str, template: str | None) -> str:
        if template is None:
            return UNMATCHED
        method = method.upper()
        name = f"{method if method in STANDARD_METHODS else 'OTHER'} {template}"
        renamed = self.renamed.get(name)
        return renamed if renamed is not None else _fit(name)


def _checked(names: Mapping[str, str] | None) -> dict[str, str]:
    if names is None:
        return {}
    if not isinstance(names, Mapping):
        raise TypeError(f"names must be a mapping of route to operation name, "
                        f"got {type(names).__name__}")
    checked = {}
    for route, operation in names.items():
        if not isinstance(route, str):
            raise TypeError(f"names: a route must be a str, got {type(route).__name__}")
        _check_name(operation, "operation")
        room = MAX_NAME_BYTES - len(CLIENT_ERROR_SUFFIX)
        if len(operation.encode("utf-8")) > room:
            raise ValueError(f"names: {operation[:40]!r}… is longer than {room} bytes in "
                             f"UTF-8, which leaves no room for {CLIENT_ERROR_SUFFIX.strip()!r}")
        checked[route] = operation
    return checked


def operation_for_status(name: str, status: int) -> str:
    """The operation to record an answer with ``status`` under."""
    return name + CLIENT_ERROR_SUFFIX if 400 <= status < 500 else name


def _fit(name: str) -> str:
    """A template longer than a name may be is cut (on a character boundary), leaving room
    for the 4xx suffix; non-printable characters (a template is the app's own text, but
    a framework may pass a raw path through) become '?'."""
    if not name.isprintable():
        name = "".join(c if c.isprintable() else "?" for c in name)
    room = MAX_NAME_BYTES - len(CLIENT_ERROR_SUFFIX)
    raw = name.encode("utf-8")
    if len(raw) <= room:
        return name
    return raw[: room - len("…".encode())].decode("utf-8", "ignore") + "…"
