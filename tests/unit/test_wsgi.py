"""The WSGI middleware around a real Flask app and plain WSGI apps, called as a server calls
them (on a fresh thread: a fresh lane), and drained by a Daemon in this process: how requests
are named, which succeed and which fail, the model, streamed bodies, and PEP 3333's close().
Django, whose settings are process-global, is tested under gunicorn (tests/e2e)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask, Response, abort, request
from werkzeug.test import EnvironBuilder

from ai_analytics import client
from ai_analytics.integrations.wsgi import ROUTE_KEY, AnalyticsMiddleware

from helpers import counts, drained

STEP = 0.03  # seconds between the chunks of a streamed body




def call(app: Any, method: str = "GET", path: str = "/", json: object = None,
         chunks: int | None = None) -> tuple[str, bytes]:
    """Serve one request as a WSGI server does: call, iterate (only ``chunks`` of the body,
    if given), close; the status and the body read. No event is current around it."""
    environ = EnvironBuilder(method=method, path=path, json=json).get_environ()
    statuses: list[str] = []

    def start_response(status: str, headers: list, exc_info: object = None) -> Any:
        statuses.append(status)
        return lambda data: None

    body = app(environ, start_response)
    assert client.current_event() is None  # the request's event stays inside the request
    read = []
    try:
        for chunk in body:
            assert client.current_event() is None
            read.append(chunk)
            if chunks is not None and len(read) == chunks:
                break
    finally:
        body.close()
    return statuses[-1], b"".join(read)


def flask_app(**options: Any) -> Flask:
    app = Flask(__name__)

    @app.post("/v1/embed/<name>")
    def embed(name: str) -> Any:
        payload = request.get_json()
        if "model" not in payload:
            abort(422)
        client.current_event().model = payload["model"]  # type: ignore[union-attr]
        return {"name": name}

    @app.get("/v1/items/<int:item_id>")
    def item(item_id: int) -> Any:
        if item_id == 0:
            abort(404)
        return {"id": item_id}

    @app.get("/v1/busy")
    def busy() -> Any:
        return "overloaded", 503

    @app.get("/v1/fail")
    def fail() -> Any:
        raise RuntimeError("the model crashed")

    @app.get("/v1/stream/<name>")
    def stream(name: str) -> Response:
        def tokens() -> Iterator[bytes]:
            event = client.current_event()  # current while the server pulls the body
            assert event is not None
            yield b""  # an empty chunk is not the first token
            time.sleep(STEP)
            for n in range(1, 4):
                yield b"token "
                event.tokens_out = n
                time.sleep(STEP)
            yield b"end"
        return Response(tokens())

    app.wsgi_app = AnalyticsMiddleware(app.wsgi_app, **options)  # type: ignore[method-assign]
    return app


def test_requests_are_named_by_method_and_route_template(make_daemon, on_thread):
    series = drained(make_daemon)
    app = flask_app(model="static")

    def serve() -> None:
        for name, model in (("a", "bge"), ("b", "bge"), ("c", "e5")):
            assert call(app, "POST", f"/v1/embed/{name}", {"model": model})[0] == "200 OK"
        for item_id in (1, 2, 3):
            call(app, "GET", f"/v1/items/{item_id}")

    on_thread(serve)
    got = series()
    assert counts(got) == {
        ("POST /v1/embed/<name>", "bge"): (2, 0),  # the model the view set
        ("POST /v1/embed/<name>", "e5"): (1, 0),
        ("GET /v1/items/<int:item_id>", "static"): (3, 0),  # the static model
    }
    # An answer in one piece has no first token: it would only blur the streams' TTFT.
    assert got[("GET /v1/items/<int:item_id>", "static")]["ttft_ms"]["count"] == 0


def test_a_mapping_renames_a_template_and_keeps_the_4xx_suffix(make_daemon, on_thread):
    series = drained(make_daemon)
    app = flask_app(names={"GET /v1/items/<int:item_id>": "get_item"})

    def serve() -> None:
        call(app, "GET", "/v1/items/7")
        assert call(app, "GET", "/v1/items/0")[0].startswith("404")

    on_thread(serve)
    assert counts(series()) == {("get_item", ""): (1, 0), ("get_item 4xx", ""): (1, 0)}


def test_unmatched_and_4xx_answers_succeed_under_their_own_names(make_daemon, on_thread):
    series = drained(make_daemon)
    app = flask_app(model="m")

    def serve() -> None:
        for path in ("/nothing/here", "/v1/embed/x/y", "/favicon.ico"):
            assert call(app, "GET", path)[0].startswith("404")
        assert call(app, "POST", "/v1/embed/x", {})[0].startswith("422")
        assert call(app, "DELETE", "/v1/busy")[0].startswith("405")  # no rule matched

    on_thread(serve)
    assert counts(series()) == {
        ("unmatched 4xx", "m"): (4, 0),
        ("POST /v1/embed/<name> 4xx", "m"): (1, 0),
    }


def test_5xx_answers_and_exceptions_fail_the_request(make_daemon, on_thread):
    series = drained(make_daemon)
    app = flask_app()

    def serve() -> None:
        assert call(app, "GET", "/v1/busy")[0].startswith("503")
        # Flask answers a view's exception with a 500 unless told to let it through.
        assert call(app, "GET", "/v1/fail")[0].startswith("500")

    on_thread(serve)
    assert counts(series()) == {("GET /v1/busy", ""): (1, 1), ("GET /v1/fail", ""): (1, 1)}


def test_an_exception_from_the_app_fails_the_event_and_goes_on_unchanged(make_daemon,
                                                                          on_thread):
    series = drained(make_daemon)
    boom = RuntimeError("boom")

    def app(environ: dict, start_response: Any) -> Any:
        environ[ROUTE_KEY] = "/v1/classify"  # as a framework adapter names the route
        raise boom

    flask = flask_app()
    flask.config["PROPAGATE_EXCEPTIONS"] = True

    def serve() -> None:
        with pytest.raises(RuntimeError) as caught:
            call(AnalyticsMiddleware(app), "POST", "/v1/classify")
        assert caught.value is boom
        with pytest.raises(RuntimeError, match="the model crashed"):
            call(flask, "GET", "/v1/fail")

    on_thread(serve)
    # Flask lets go of its request before the exception leaves it: no route to name it by.
    assert counts(series()) == {("POST /v1/classify", ""): (1, 1), ("unmatched", ""): (1, 1)}


def test_a_streamed_body_is_timed_to_its_last_chunk_with_its_first_token(make_daemon,
                                                                         on_thread):
    series = drained(make_daemon)
    app = flask_app(model="llm")

    def serve() -> bytes:
        return call(app, "GET", "/v1/stream/x")[1]

    assert on_thread(serve) == b"token token token end"
    stats = series()[("GET /v1/stream/<name>", "llm")]
    assert (stats["count"], stats["errors"]) == (1, 0)
    assert stats["ttft_ms"]["count"] == 1
    assert stats["ttft_ms"]["min"] >= STEP * 1000  # the empty chunk did not count
    assert stats["latency_ms"]["min"] >= 4 * STEP * 1000  # every step up to the last chunk
    assert stats["ttft_ms"]["max"] < stats["latency_ms"]["max"]
    assert stats["tokens"]["out_total"] == 3  # set by the generator: its event was current


class Chunks:
    """A body that counts how often it is closed."""

    def __init__(self, *chunks: bytes, fail_at: int | None = None) -> None:
        self.chunks = chunks
        self.fail_at = fail_at
        self.closed = 0

    def __iter__(self) -> Iterator[bytes]:
        for index, chunk in enumerate(self.chunks):
            if index == self.fail_at:
                raise OSError("the stream broke")
            yield chunk

    def close(self) -> None:
        self.closed += 1


def plain_app(body: Chunks, status: str = "200 OK") -> AnalyticsMiddleware:
    def app(environ: dict, start_response: Any) -> Any:
        write = start_response(status, [("Content-Type", "text/plain")])
        write(b"")  # the legacy write(): an empty one is not the first token
        return body

    return AnalyticsMiddleware(app, route=lambda environ: environ["PATH_INFO"])


def test_the_inner_body_is_closed_once_and_the_event_recorded_once(make_daemon, on_thread):
    series = drained(make_daemon)
    whole, partial, broken = Chunks(b"a", b"b"), Chunks(b"a", b"b", b"c"), Chunks(
        b"a", b"b", fail_at=1)

    def serve() -> None:
        app = plain_app(whole)
        environ = EnvironBuilder(path="/whole").get_environ()
        body = app(environ, lambda status, headers, exc_info=None: lambda data: None)
        assert list(body) == [b"a", b"b"]
        body.close()  # type: ignore[attr-defined]
        body.close()  # type: ignore[attr-defined]  # a second close does nothing
        call(plain_app(partial), path="/partial", chunks=1)  # the client went away
        with pytest.raises(OSError, match="the stream broke"):
            call(plain_app(broken), path="/broken")

    on_thread(serve)
    assert (whole.closed, partial.closed, broken.closed) == (1, 1, 1)
    assert counts(series()) == {("GET /whole", ""): (1, 0), ("GET /partial", ""): (1, 0),
                                ("GET /broken", ""): (1, 1)}


def test_a_failing_route_finder_is_logged_and_the_request_goes_on(make_daemon, on_thread,
                                                                   caplog):
    series = drained(make_daemon)

    def route(environ: dict) -> str:
        raise KeyError("no route here")

    def app(environ: dict, start_response: Any) -> Any:
        start_response("200 OK", [])
        return [b"fine"]

    caplog.set_level(logging.WARNING, "ai_analytics.integrations")
    answer = on_thread(call, AnalyticsMiddleware(app, route=route), "GET", "/x")
    assert answer == ("200 OK", b"fine")
    assert "recording a request failed" in caplog.text
    assert counts(series()) == {("unmatched", ""): (1, 0)}


@pytest.mark.parametrize(("options", "error", "message"), [
    ({"names": {"GET /x": ""}}, ValueError, "operation must not be empty"),
    ({"names": {"GET /x": 7}}, TypeError, "operation must be"),
    ({"names": [("GET /x", "x")]}, TypeError, "names must be a mapping"),
    ({"names": {"GET /x": "x" * 125}}, ValueError, "no room for '4xx'"),
    ({"model": "bad\nname"}, ValueError, "model contains control"),
])
def test_bad_options_raise_at_construction(options: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        AnalyticsMiddleware(lambda environ, start_response: [], **options)
