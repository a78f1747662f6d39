"""ai-analyticsd schedules its full garbage collections itself (daemon/gc_tuning.py); the
drain gate lets the snapshot thread's steps fall between passes."""

from __future__ import annotations

import json
import threading
import time

from ai_analytics.daemon.ingest.gate import DrainGate

from helpers import run_python


def test_full_collections_come_only_when_the_daemon_asks(namespace):
    """In a fresh interpreter (the collector is process-wide): after scheduling, no full
    collection starts by itself however many objects survive; cyclic garbage in the oldest
    generation waits for ``collect_between_passes``, which collects it; the young
    generations are collected as before; start-up objects are frozen."""
    result = run_python("""
        import gc, json, weakref
        from ai_analytics.daemon import gc_tuning

        before = gc.get_freeze_count()  # some interpreters freeze a few objects themselves
        gc_tuning.schedule_full_collections()
        frozen = gc.get_freeze_count() - before
        seen = []
        gc.callbacks.append(lambda phase, info: phase == "stop" and seen.append(
            info["generation"]))

        class Node:
            pass

        cycle = Node()
        cycle.self = cycle
        gone = weakref.ref(cycle)
        for _ in range(3):  # into the oldest generation
            gc.collect(1)
        del cycle
        keep = [[i] for i in range(300_000)]  # many survivors: many young collections
        before = gone() is not None
        gc_tuning.collect_between_passes()
        print(json.dumps({"frozen": frozen, "auto": sorted(set(seen[:-1])),
                          "last": seen[-1], "before": before, "after": gone() is not None}))
    """, namespace)
    report = json.loads(result.stdout)
    assert report["frozen"] > 1000
    assert report["auto"] == [0, 1]  # only the young generations by themselves
    assert report["last"] == 2
    assert (report["before"], report["after"]) == (True, False)


def test_without_scheduling_the_collection_is_left_alone(namespace):
    """An embedded daemon's process (the worker's): nothing frozen, thresholds untouched,
    ``collect_between_passes`` collects nothing."""
    result = run_python("""
        import gc, json
        threshold, frozen = gc.get_threshold(), gc.get_freeze_count()
        from ai_analytics.daemon import gc_tuning

        seen = []
        gc.callbacks.append(lambda phase, info: seen.append(phase))
        gc_tuning.collect_between_passes()
        print(json.dumps([gc.get_freeze_count() == frozen, gc.get_threshold() == threshold,
                          seen]))
    """, namespace)
    assert json.loads(result.stdout) == [True, True, []]


def test_the_gate_holds_steps_while_a_pass_runs():
    gate = DrainGate(max_wait=30.0)
    inside, release = threading.Event(), threading.Event()
    events: list[str] = []

    def one_pass() -> None:
        with gate.passing():
            inside.set()
            release.wait(30)
            events.append("pass ended")

    loop = threading.Thread(target=one_pass)
    loop.start()
    inside.wait(30)
    stepper = threading.Thread(target=lambda: (gate.wait(), events.append("step")))
    stepper.start()
    time.sleep(0.05)  # time to run on, were it not held (a slower thread cannot fail this)
    assert events == []
    release.set()
    for thread in (loop, stepper):
        thread.join(30)
    assert events == ["pass ended", "step"]


def test_the_gate_waits_at_most_its_limit():
    """A loop that never ends its pass does not hold the snapshot thread for good."""
    gate = DrainGate(max_wait=0.2)
    with gate.passing():
        started = time.monotonic()
        gate.wait()
        assert time.monotonic() - started >= 0.2
    idle = DrainGate(max_wait=10.0)
    started = time.monotonic()
    idle.wait()  # no pass runs: at once, not after the limit
    assert time.monotonic() - started < 5.0
