"""Which forms of /status and /metrics a new document is rendered in before anyone asks.

A form (a body, identity or gzip) that requests asked for lately is rendered when the
document is published, on the publisher's thread, so that a regular scraper never waits for
a rendering. Rendering costs CPU on the daemon's snapshot thread, which shares the
interpreter with the drain (the /metrics text of 1,024 series is 15-40 ms of Python): a form
whose requests come more rarely than documents (Prometheus scraping every 15 s or every
minute, snapshots every 5 s) is rendered only for the documents its requests will land on.

The next request for a form is expected one period after the last, the period being the
shorter of the last two gaps between its requests (so that two scrapers taking turns, or an
irregular poller, count as the faster rhythm). A document published now serves the requests
until the next one, expected one publishing gap later; the form is made ahead when its next
request falls before then. A form whose rhythm is not known yet (fewer than two requests) is
made ahead for every document; a request that comes unforeseen makes its form itself, as
the first request after a quiet spell does.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable
from typing import Generic, TypeVar

# How long after a request last asked for a form it is still made ahead: longer than any
# sane scrape or poll interval, while a body nobody asks for costs nothing.
AHEAD_SECONDS = 600.0
# Requests for one form closer together than this are one poll (a pair of scrapers, a
# retry): they do not measure its period.
SAME_POLL_SECONDS = 0.5
# A request may come this much earlier than its period predicts and still find its form made.
EARLY_SECONDS = 1.0

F = TypeVar("F", bound=Hashable)


class AheadPlan(Generic[F]):
    """When requests asked for each form and how often, and how often documents come.
    ``asked`` is called from any request's thread and ``published`` from the publisher's:
    each reads and replaces whole values, so a race costs at most one unneeded or one
    on-request rendering."""

    def __init__(self, forms: Iterable[F]) -> None:
        self._asked = dict.fromkeys(forms, -math.inf)  # every key there from the start
        self._gaps = dict.fromkeys(self._asked, (math.inf, math.inf))
        self._published = -math.inf
        self._publish_gap = math.inf

    def asked(self, form: F, now: float) -> None:
        """A request asked for ``form`` at ``now`` (monotonic seconds)."""
        gap = now - self._asked[form]
        if gap >= SAME_POLL_SECONDS and gap != math.inf:
            self._gaps[form] = (self._gaps[form][1], gap)
        self._asked[form] = now

    def published(self, now: float) -> list[F]:
        """A document is published at ``now``: the forms to make for it ahead."""
        if self._published != -math.inf:
            self._publish_gap = now - self._published
        self._published = now
        until = now + self._publish_gap + EARLY_SECONDS
        return [form for form, asked in list(self._asked.items())
                if now - asked <= AHEAD_SECONDS and self._due(form, asked, until)]

    def _due(self, form: F, asked: float, until: float) -> bool:
        """Whether the next request for ``form`` is expected before ``until`` (or its rhythm
        is not known yet)."""
        period = min(self._gaps[form])
        return period == math.inf or asked + period < until


__all__ = ["AHEAD_SECONDS", "AheadPlan"]
