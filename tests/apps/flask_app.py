"""A Flask app behind the WSGI middleware, served by gunicorn in tests/e2e/test_wsgi_servers.py
(``--chdir tests/apps flask_app:app``). Each answer carries the serving worker's pid."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

from flask import Flask, Response, abort, request

from ai_analytics import client
from ai_analytics.integrations.wsgi import AnalyticsMiddleware

app = Flask(__name__)


@app.post("/v1/embed/<name>")
def embed(name: str) -> dict:
    client.current_event().model = request.get_json()["model"]  # type: ignore[union-attr]
    return {"name": name, "pid": os.getpid()}


@app.get("/v1/slow/<int:ms>")
def slow(ms: int) -> dict:
    time.sleep(ms / 1000)  # holds a sync worker, or (patched) switches greenlets
    return {"pid": os.getpid()}


@app.get("/v1/chat/<name>/stream")
def stream(name: str) -> Response:
    def tokens() -> Iterator[bytes]:
        for _ in range(3):
            time.sleep(0.02)
            yield b"token\n"

    return Response(tokens(), mimetype="text/plain")


@app.get("/v1/bad")
def bad() -> None:
    abort(400)


@app.get("/v1/fail")
def fail() -> None:
    raise RuntimeError("the model crashed")


app.wsgi_app = AnalyticsMiddleware(  # type: ignore[method-assign]
    app.wsgi_app, model="flask-app", names={"GET /v1/chat/<name>/stream": "chat_stream"})
