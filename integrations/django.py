"""A Django middleware that tells the WSGI middleware which route a request matched.

Django keeps the route template on the request (``request.resolver_match.route``), which a
WSGI middleware never sees; this one copies it into the WSGI environ under
``wsgi.ROUTE_KEY`` once the URL is resolved. Add it to ``MIDDLEWARE``:

    MIDDLEWARE = ["ai_analytics.integrations.django.RouteMiddleware", ...]

It imports nothing of Django's: Django calls it as any middleware (``get_response`` at
construction, ``process_view`` after resolving the URL, before the view).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .wsgi import ROUTE_KEY


class RouteMiddleware:
    """Copy the matched route (``v1/embed/<str:name>``, as ``/v1/embed/<str:name>``) into
    the request's WSGI environ; a request no URL pattern matched never reaches it."""

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response

    def __call__(self, request: Any) -> Any:
        return self.get_response(request)

    def process_view(self, request: Any, view_func: object, view_args: object,
                     view_kwargs: object) -> None:
        route = getattr(getattr(request, "resolver_match", None), "route", None)
        environ = getattr(request, "META", None)  # the WSGI environ itself under WSGI
        if isinstance(route, str) and isinstance(environ, dict):
            # Django's routes have no leading slash; the other frameworks' templates do.
            environ[ROUTE_KEY] = "/" + route
