"""Which forms a new document is rendered in ahead (``ahead.AheadPlan``), with explicit times:
every request of a regular scraper finds its form made, and a form asked more rarely than
documents come is made only for the documents its requests land on."""

from __future__ import annotations

from ai_analytics.daemon.http.ahead import AHEAD_SECONDS, AheadPlan

METRICS, STATUS = ("metrics", True), ("status", False)


def run(plan: AheadPlan, publish_every: float, requests: dict[tuple[str, bool], float],
        seconds: float, offset: float = 2.0) -> tuple[dict, dict]:
    """Publish every ``publish_every`` s and request each form every ``requests[form]`` s
    (the first at ``offset``), in time order, for ``seconds``. Returns, per form, how many
    documents it was made ahead for and how many of its requests found it made."""
    events = [(t * publish_every, "publish", None)
              for t in range(int(seconds / publish_every) + 1)]
    for form, every in requests.items():
        events += [(offset + k * every, "request", form)
                   for k in range(int((seconds - offset) / every) + 1)]
    made_for: dict = {form: 0 for form in requests}
    found: dict = {form: 0 for form in requests}
    current: set = set()
    for at, kind, form in sorted(events, key=lambda e: (e[0], e[1] == "request")):
        if kind == "publish":
            current = set(plan.published(at))
            for made in current:
                made_for[made] += 1
        else:
            found[form] += form in current
            plan.asked(form, at)
    return made_for, found


def test_a_scraper_slower_than_the_documents_gets_one_rendering_per_scrape():
    """Prometheus every 15 s, a document every 5 s: after the two scrapes that show its
    rhythm, every scrape finds its form made, and it is made once per scrape."""
    made_for, found = run(AheadPlan([METRICS, STATUS]), 5.0, {METRICS: 15.0}, 300.0)
    scrapes = int((300.0 - 2.0) / 15.0) + 1
    assert found[METRICS] >= scrapes - 2
    # Once per scrape, and for the documents before its rhythm is known: not for all 61.
    assert made_for[METRICS] <= scrapes + 2


def test_a_poller_as_fast_as_the_documents_gets_every_document():
    """/status polled every 2 s by the live page, a document every 5 s: made for every
    document, and every poll finds it but the two before the first document after one."""
    made_for, found = run(AheadPlan([METRICS, STATUS]), 5.0, {STATUS: 2.0}, 120.0)
    assert made_for[STATUS] >= 120 / 5 - 1
    assert found[STATUS] >= int(118 / 2) + 1 - 2  # all but the two before the first document


def test_two_scrapers_taking_turns_count_as_the_faster_rhythm():
    """Two Prometheus servers scraping every 15 s, 3 s apart: the shorter gap rules, and
    every scrape of either finds its form."""
    plan = AheadPlan([METRICS])
    times = sorted([2.0 + 15 * k for k in range(20)] + [5.0 + 15 * k for k in range(20)])
    found = missed = 0
    current: set = set()
    publishes = [5.0 * k for k in range(62)]
    for at, kind in sorted([(t, "p") for t in publishes] + [(t, "r") for t in times],
                           key=lambda e: (e[0], e[1] == "r")):
        if kind == "p":
            current = set(plan.published(at))
        else:
            found += METRICS in current
            missed += METRICS not in current
            plan.asked(METRICS, at)
    assert missed <= 3


def test_a_form_asked_once_is_made_for_every_document_until_it_goes_quiet():
    plan = AheadPlan([METRICS, STATUS])
    assert plan.published(0.0) == []  # nobody asked yet
    plan.asked(STATUS, 1.0)
    assert plan.published(5.0) == [STATUS] and plan.published(10.0) == [STATUS]
    assert plan.published(1.0 + AHEAD_SECONDS + 1) == []


def test_requests_of_one_poll_do_not_measure_a_period():
    """A retry 0.1 s after a scrape does not make the scrape's period 0.1 s."""
    plan = AheadPlan([METRICS])
    for at in (2.0, 2.1, 17.0, 17.1):
        plan.asked(METRICS, at)
    plan.published(20.0)
    assert plan.published(25.0) == []  # next scrape expected at 32: not on this document
    assert plan.published(30.0) == [METRICS]  # it lands on this one
