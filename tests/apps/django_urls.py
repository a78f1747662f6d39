"""The test Django site's routes and views: path converters, a streamed answer, a 4xx, a 500."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator

from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.urls import path

from ai_analytics import client


def embed(request: HttpRequest, name: str) -> JsonResponse:
    client.current_event().model = json.loads(request.body)["model"]  # type: ignore[union-attr]
    return JsonResponse({"name": name, "pid": os.getpid()})


def slow(request: HttpRequest, ms: int) -> JsonResponse:
    time.sleep(ms / 1000)
    return JsonResponse({"pid": os.getpid()})


def stream(request: HttpRequest, name: str) -> StreamingHttpResponse:
    def tokens() -> Iterator[bytes]:
        for _ in range(3):
            time.sleep(0.02)
            yield b"token\n"

    return StreamingHttpResponse(tokens(), content_type="text/plain")


def bad(request: HttpRequest) -> HttpResponse:
    return HttpResponse("bad request", status=400)


def fail(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("the model crashed")


urlpatterns = [
    path("v1/embed/<str:name>", embed),
    path("v1/slow/<int:ms>", slow),
    path("v1/chat/<str:name>/stream", stream),
    path("v1/bad", bad),
    path("v1/fail", fail),
]
