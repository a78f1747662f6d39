"""The answers of ``/status`` and ``/metrics`` for one snapshot document, rendered once.

A snapshot document is replaced whole at every snapshot and never changed once published, so
everything ``/status`` and ``/metrics`` can say about it is fixed when it is published: its
JSON, its Prometheus text, and their gzip forms. ``Answers`` holds those bodies for one
document. Each body is made at most once, on whichever thread asks first (the daemon's
snapshot thread through ``StatusServer.publish``, or the first request for a document nobody
published), and every later request is served the same bytes; a request that arrives while
another thread is making that body waits for it rather than making it again.

A body whose rendering raised is not kept: the next request tries again (and gets the same
error for the same document), so a fault shows in every answer while it lasts, as a 500.

Accept-Encoding (RFC 9110 §12.5.3) is read by ``accepts_gzip``: gzip is served when the
request names ``gzip`` (or ``x-gzip``, or ``*`` without naming gzip) with a weight above 0;
anything else, a malformed value included, gets the identity form, which every client reads.
"""

from __future__ import annotations

import re
import threading
import zlib
from collections.abc import Callable, Iterable

# zlib level 1 makes the /metrics text of 1,024 series (2.5-7.6 MB) 23 times smaller and the
# /status JSON (~3 MB) 50 times, in 4-12 ms; level 6 saves 10-15 % more bytes of /metrics at
# three times the time (bench/HTTP.md).
GZIP_LEVEL = 1
GZIP_WBITS = 31  # zlib's gzip framing: header and trailer, mtime 0 (the same bytes each time)

STATUS, METRICS = "status", "metrics"
QVALUE = re.compile(r"0(\.[0-9]{0,3})?|1(\.0{0,3})?", re.ASCII)


def gzip_bytes(body: bytes) -> bytes:
    """``body`` in gzip framing (RFC 1952), at ``GZIP_LEVEL``."""
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, GZIP_WBITS)
    return compressor.compress(body) + compressor.flush()


def _qvalue(params: list[str]) -> float | None:
    """The weight of one Accept-Encoding element from its parameters: 1 when absent; None
    when it is not a qvalue (``0``-``1`` with at most three decimals)."""
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            value = value.strip()
            return float(value) if QVALUE.fullmatch(value) else None
    return 1.0


def accepts_gzip(values: Iterable[str]) -> bool:
    """Whether the Accept-Encoding header values ``values`` (every occurrence of the header)
    let the answer be gzip: ``gzip`` or ``x-gzip`` with a weight above 0, or, where neither
    is named, ``*`` with a weight above 0. A malformed element counts for nothing."""
    named: float | None = None
    wildcard: float | None = None
    for value in values:
        for element in value.split(","):
            coding, *params = element.split(";")
            coding = coding.strip().lower()
            if not coding:
                continue
            weight = _qvalue(params)
            if weight is None:
                continue
            if coding in ("gzip", "x-gzip"):
                named = weight if named is None else max(named, weight)
            elif coding == "*":
                wildcard = weight if wildcard is None else max(wildcard, weight)
    if named is not None:
        return named > 0
    return wildcard is not None and wildcard > 0


class Body:
    """One resource's body for one document: made by ``render`` at the first ask, gzipped at
    the first ask for gzip, both kept. ``made`` is told each making: ``name``, or ``name``
    with ``.gzip``."""

    __slots__ = ("_gzip", "_identity", "_lock", "_made", "_render", "name")

    def __init__(self, name: str, render: Callable[[], bytes],
                 made: Callable[[str], None]) -> None:
        self.name = name
        self._render = render
        self._made = made
        self._lock = threading.Lock()
        self._identity: bytes | None = None
        self._gzip: bytes | None = None

    def identity(self) -> bytes:
        body = self._identity
        if body is None:
            with self._lock:
                body = self._identity
                if body is None:
                    body = self._render()
                    self._made(self.name)
                    self._identity = body
        return body

    def gzipped(self) -> bytes:
        body = self._gzip
        if body is None:
            identity = self.identity()
            with self._lock:
                body = self._gzip
                if body is None:
                    body = gzip_bytes(identity)
                    self._made(f"{self.name}.gzip")
                    self._gzip = body
        return body

    def get(self, gzip: bool) -> bytes:
        return self.gzipped() if gzip else self.identity()


class Answers:
    """The ``/status`` and ``/metrics`` bodies of one document (``document``: compared by
    identity, never by content). ``render_status`` and ``render_metrics`` turn the document
    into bytes; ``made`` is told each body made (``Body``)."""

    __slots__ = ("bodies", "document")

    def __init__(self, document: object, render_status: Callable[[], bytes],
                 render_metrics: Callable[[], bytes], made: Callable[[str], None]) -> None:
        self.document = document
        self.bodies = {STATUS: Body(STATUS, render_status, made),
                       METRICS: Body(METRICS, render_metrics, made)}

    def prepare(self, forms: Iterable[tuple[str, bool]]) -> list[tuple[str, BaseException]]:
        """Make these forms now: (body name, gzip or not) pairs; return the (name, error) of
        each body that failed (it is tried again at the next ask)."""
        failed: list[tuple[str, BaseException]] = []
        for name, gzip in forms:
            try:
                self.bodies[name].get(gzip)
            except Exception as exc:
                if not any(name == done for done, _ in failed):
                    failed.append((name, exc))
        return failed


__all__ = ["METRICS", "STATUS", "Answers", "Body", "accepts_gzip", "gzip_bytes"]
