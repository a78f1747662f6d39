"""The statistics engine with an injected clock: windows, roll-over, caps, exact values; and
the performance snapshot a Daemon in this process computes from them."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from ai_analytics.client import _layout as L
from ai_analytics.daemon.snapshot.forked import Forked
from ai_analytics.daemon.stats import histogram as H
from ai_analytics.daemon.stats.statistics import Statistics

from helpers import FakeClock, add_records, make_records


def window(stats: Statistics, name: str, operation: str = "op", model: str = "m") -> dict:
    for row in stats.operations():
        if (row["operation"], row["model"]) == (operation, model):
            return row["windows"][name]
    raise AssertionError(f"no series {operation}/{model}")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1000.0)


@pytest.fixture
def stats(clock: FakeClock) -> Statistics:
    return Statistics(256, 256, 1024, clock)


def test_exact_counts_means_and_extremes(stats):
    """Counts, errors, error rate, mean, min and max are exact, not bucketed."""
    latency = np.array([1.5, 2.5, 3.0, 1000.25])
    records = make_records(4, 1000, latency)
    records["success"] = [1, 0, 1, 1]
    add_records(stats, records)
    w = window(stats, "10s")
    assert (w["count"], w["successes"], w["errors"], w["error_rate"]) == (4, 3, 1, 0.25)
    assert w["latency_ms"]["mean"] == pytest.approx(latency.mean())
    assert (w["latency_ms"]["min"], w["latency_ms"]["max"]) == (1.5, 1000.25)
    assert w["throughput_per_s"] == 4.0  # one second of uptime so far


def test_windows_roll_over_with_the_clock(stats, clock):
    """An event stays in the 10 s window for 10 s, in 1 min for 60 s, in 5 min for 300 s,
    and in since-start for good; a reused ring slot starts empty."""
    add_records(stats, make_records(100, 1000))
    expectations = {1009: (100, 100, 100), 1010: (0, 100, 100), 1059: (0, 100, 100),
                    1060: (0, 0, 100), 1299: (0, 0, 100), 1300: (0, 0, 0)}
    for now, (ten, minute, five) in expectations.items():
        clock.now = now
        got = tuple(window(stats, w)["count"] for w in ("10s", "1m", "5m"))
        assert got == (ten, minute, five), now
        assert window(stats, "since_start")["count"] == 100
    add_records(stats, make_records(7, 1300))  # same ring slot as second 1000
    assert window(stats, "5m")["count"] == 7
    assert window(stats, "since_start")["count"] == 107


def test_events_are_placed_by_their_own_timestamp(stats, clock):
    """Drain delay does not matter: a record is counted in the second it was emitted, and a
    record older than the ring only counts since start."""
    clock.now = 1500
    add_records(stats, make_records(5, 1495))
    add_records(stats, make_records(3, 1000))  # 500 s old: outside every window
    assert window(stats, "10s")["count"] == 5
    assert window(stats, "5m")["count"] == 5
    assert window(stats, "since_start")["count"] == 8


def test_throughput_uses_the_window_length(stats, clock):
    """Throughput is events over the window's length (or the uptime, while shorter)."""
    for second in range(1000, 1060):
        clock.now = second
        add_records(stats, make_records(20, second))
    assert window(stats, "10s")["throughput_per_s"] == pytest.approx(20.0)
    assert window(stats, "1m")["throughput_per_s"] == pytest.approx(20.0)
    assert window(stats, "5m")["throughput_per_s"] == pytest.approx(20.0)  # uptime 60 s


def test_percentiles_match_numpy_within_one_percent(stats):
    """Window percentiles match numpy.percentile (inverted_cdf) within the stated 1 %."""
    latency = np.random.default_rng(5).lognormal(np.log(40), 0.8, 20_000)
    add_records(stats, make_records(len(latency), 1000, latency))
    w = window(stats, "1m")["latency_ms"]
    for name, q in (("p50", 50), ("p90", 90), ("p95", 95), ("p99", 99), ("p999", 99.9)):
        expected = np.percentile(latency, q, method="inverted_cdf")
        assert abs(w[name] - expected) / expected <= H.RELATIVE_ERROR * (1 + 1e-9), name


def test_quality_ignores_absent_and_nan(stats):
    """Absent quality (None → NaN) is not counted as 0: mean, min and p10 use the rest."""
    quality = np.array([np.nan, 0.9, np.nan, 0.5, 0.7, np.nan])
    add_records(stats, make_records(6, 1000, quality=quality))
    q = window(stats, "10s")["quality"]
    assert q["count"] == 3
    assert q["mean"] == pytest.approx(0.7)
    assert q["min"] == pytest.approx(0.5)
    assert abs(q["p10"] - 0.5) <= H.QUALITY_ABSOLUTE_ERROR + 1e-9


def test_cache_hit_rate_ignores_events_that_were_not_lookups(stats):
    """cache_hit absent means "not a lookup": the rate is hits over lookups only."""
    hits = [L.CACHE_HIT, L.CACHE_MISS, L.CACHE_ABSENT, L.CACHE_HIT, L.CACHE_ABSENT]
    add_records(stats, make_records(5, 1000, cache_hit=hits))
    cache = window(stats, "10s")["cache"]
    assert (cache["lookups"], cache["hits"], cache["hit_rate"]) == (3, 2, pytest.approx(2 / 3))


def test_llm_serving_fields(stats, clock):
    """TTFT and queue time get the same statistics; token totals and rates are exact, and
    absent extras are not counted."""
    records = make_records(4, 1000, kind=L.KIND_EXTENDED, ttft_ms=[100.0, 200.0, np.nan, 50.0],
                           queue_ms=[1.0, 2.0, 3.0, 4.0],
                           tokens_in=[10, 20, L.TOKENS_ABSENT, 30],
                           tokens_out=[5, 5, 5, L.TOKENS_ABSENT])
    add_records(stats, np.concatenate([records, make_records(2, 1000)]))
    w = window(stats, "10s")
    assert w["ttft_ms"]["count"] == 3 and w["ttft_ms"]["mean"] == pytest.approx(350 / 3)
    assert (w["ttft_ms"]["min"], w["ttft_ms"]["max"]) == (50.0, 200.0)
    assert w["queue_ms"]["count"] == 4 and w["queue_ms"]["p50"] == pytest.approx(2.0, rel=0.01)
    assert (w["tokens"]["in_total"], w["tokens"]["out_total"]) == (60, 15)
    clock.now = 1004
    assert window(stats, "10s")["tokens"]["in_per_s"] == pytest.approx(60 / 5)


def test_cardinality_caps_send_the_rest_to_other(clock):
    """Past a cap, events go to "other" and the overflow counters say how many."""
    stats = Statistics(max_operations=2, max_models=2, max_series=3, clock=clock)
    for operation, model, n in (("a", "x", 2), ("b", "y", 1), ("a", "y", 1), ("b", "x", 4),
                                ("c", "z", 3)):
        add_records(stats, make_records(n, 1000), operation, model)
    counts = {(r["operation"], r["model"]): r["count"] for r in stats.operations()}
    # Three series fit; b/x is past the series cap; c and z are past the name caps.
    assert counts == {("a", "x"): 2, ("b", "y"): 1, ("a", "y"): 1, ("other", "other"): 7}
    overflow = stats.cardinality()["overflow_events"]
    assert overflow == {"operations": 3, "models": 3, "series": 4}


def test_memory_stays_flat_whatever_names_arrive(clock):
    """A flood of distinct names does not grow the tables past their caps."""
    stats = Statistics(max_operations=10, max_models=10, max_series=20, clock=clock)
    for batch in range(20):
        names = [f"op-{batch}-{i}" for i in range(500)]
        add_records(stats, make_records(500, 1000), names, names)
    registry = stats.registry
    assert len(registry.operations) <= 11 and len(registry.models) <= 12
    assert len(registry) <= 20 and len(registry.name_list) <= registry.max_names
    assert sum(r["count"] for r in stats.operations()) == 10_000


def test_memory_per_series_stays_small(stats, clock):
    """At the series cap, a series costs its per-second totals and the buckets it hit: well
    under 64 KiB with a spread of latencies every second for five minutes, and the LLM
    columns only exist for the series that report those fields."""
    rng = np.random.default_rng(3)
    names = [f"op{i}" for i in range(1024)]
    # A batch in every slot of every ring: each 30 s, then each 10 s, then each second.
    seconds = sorted({*range(1000, 1300, 30), *range(1240, 1300, 10), *range(1290, 1300)})
    for second in seconds:
        clock.now = second
        latency = rng.lognormal(np.log(40), 0.8, 20 * 1024)
        add_records(stats, make_records(len(latency), second, latency), names * 20, "m")
        stats.capture()
    assert sum(r["windows"]["5m"]["count"] for r in stats.operations()) == 20 * 1024 * len(seconds)
    held = stats.memory()
    assert held["llm_capacity"] == 0
    assert (held["totals_bytes"] + held["bucket_bytes"]) / 1024 < 40 * 1024
    add_records(stats, make_records(3, 1309, kind=L.KIND_EXTENDED, ttft_ms=5.0), "op0", "m")
    assert 0 < stats.memory()["llm_capacity"] <= 16


def test_interval_rows_partition_the_events(stats, clock):
    """Each received event is in exactly one history interval; since-start is their sum."""
    add_records(stats, make_records(10, 1000))
    span, rows = stats.close_interval()
    assert [r["stats"]["count"] for r in rows] == [10]
    clock.now = 1003
    add_records(stats, make_records(5, 1002))
    span, rows = stats.close_interval()
    assert span == pytest.approx(3.0)
    assert [r["stats"]["count"] for r in rows] == [5]
    assert stats.close_interval()[1] == []
    assert window(stats, "since_start")["count"] == 15


def test_a_capture_stays_as_of_its_moment(stats, clock):
    """A capture closes the interval and keeps its figures while batches go on arriving."""
    add_records(stats, make_records(10, 1000, np.linspace(1.0, 50.0, 10)))
    first = stats.capture()
    add_records(stats, make_records(5, 1000, 500.0), "op2")
    clock.now = 1003
    span, rows = first.interval()
    assert span == pytest.approx(1e-3) and [r["stats"]["count"] for r in rows] == [10]
    (row,) = first.operations()
    assert row["count"] == 10 and row["windows"]["10s"]["latency_ms"]["max"] == 50.0
    assert first.cardinality()["series"] == 1 and first.overflow["series"] == 0
    second = stats.capture()
    assert [(r["operation"], r["stats"]["count"]) for r in second.interval()[1]] == [("op2", 5)]
    assert [r["count"] for r in second.operations()] == [10, 5]
    assert [r["count"] for r in first.operations()] == [10]


def test_many_batches_in_a_second_count_as_one_batch(stats, clock):
    """Batches of the same open second, with captures closing intervals between them: every
    window and since-start is what one engine given all of the records in one batch reports,
    and the intervals share its counts out."""
    rng = np.random.default_rng(9)
    batches = []
    for second in range(1000, 1004):
        for fraction in (0.1, 0.3, 0.5, 0.7, 0.9):
            n = int(rng.integers(50, 120))
            records = make_records(n, second, rng.lognormal(3, 1, n))
            records["quality"] = np.where(rng.random(n) < 0.5, rng.random(n), np.nan)
            which = rng.integers(0, len(_SERIES), n).tolist()
            batches.append((second + fraction, records, [_SERIES[i][0] for i in which],
                            [_SERIES[i][1] for i in which]))
    intervals = []
    for at, records, ops, models in batches:
        clock.now = at
        add_records(stats, records, ops, models)
        if round(at % 1, 1) == 0.5:  # an interval closed in the middle of each second
            intervals.append(stats.capture())
    clock.now = 1004.95
    last = stats.capture()
    whole_clock = FakeClock(1000.0)
    whole = Statistics(256, 256, 1024, whole_clock)
    whole_clock.now = 1004.95
    add_records(whole, np.concatenate([b[1] for b in batches]),
                [op for b in batches for op in b[2]], [m for b in batches for m in b[3]])
    assert last.operations() == whole.operations()
    counted = {}
    for capture in (*intervals, last):
        for row in capture.interval()[1]:
            key = (row["operation"], row["model"])
            counted[key] = counted.get(key, 0) + row["stats"]["count"]
    assert counted == {(r["operation"], r["model"]): r["count"] for r in whole.operations()}


def test_since_start_stays_exact_when_captures_go_unread(stats, clock):
    """Captures that nobody reads leave the engine to merge the since-start counts itself:
    its parts stay bounded and the percentiles exact as ever."""
    rng = np.random.default_rng(4)
    everything = []
    for step in range(150):
        clock.now = 1000 + step
        latency = rng.lognormal(3, 1, 50)
        everything.append(latency)
        add_records(stats, make_records(50, clock.now, latency))
        stats.capture()
    assert len(stats._since_parts) <= 64
    since = window(stats, "since_start")
    assert since["count"] == 150 * 50
    truth = np.percentile(np.concatenate(everything), 99, method="inverted_cdf")
    assert abs(since["latency_ms"]["p99"] - truth) / truth <= H.RELATIVE_ERROR * (1 + 1e-9)


def test_histogram_section_of_a_capture_matches_the_live_engine(stats):
    """The since-start histogram counts read from a capture are those of the engine then."""
    from ai_analytics.daemon.stats.edge_counts import histogram_section

    rng = np.random.default_rng(1)
    add_records(stats, make_records(500, 1000, rng.lognormal(np.log(30), 1.0, 500),
                                    kind=L.KIND_EXTENDED, ttft_ms=5.0, queue_ms=np.nan))
    stats.close_interval()
    add_records(stats, make_records(50, 1000, 7.0), "other-op")
    live = histogram_section(stats)
    capture = stats.capture()
    add_records(stats, make_records(50, 1000, 9.0), "other-op")
    assert histogram_section(capture) == live
    assert [r["count"] for r in live["request_duration_seconds"]] == [500, 50]
    assert [r["count"] for r in live["time_to_first_token_seconds"]] == [500]
    assert live["queue_duration_seconds"] == []


def test_captures_read_on_another_thread_while_batches_arrive(stats, clock):
    """Captures read on a second thread while the first goes on adding: every event is in
    exactly one capture's interval rows, and each capture's since-start count is the sum of
    the intervals up to it (nothing torn by a concurrent add)."""
    import queue

    captures: queue.Queue = queue.Queue()
    seen: list[tuple[int, int]] = []

    def reader() -> None:
        while (capture := captures.get()) is not None:
            interval = sum(r["stats"]["count"] for r in capture.interval()[1])
            since = sum(r["windows"]["since_start"]["count"] for r in capture.operations())
            seen.append((interval, since))

    thread = threading.Thread(target=reader)
    thread.start()
    rng = np.random.default_rng(2)
    total = 0
    for batch in range(60):
        clock.now = 1000 + batch // 4
        n = int(rng.integers(1, 400))
        add_records(stats, make_records(n, clock.now, rng.lognormal(3, 1, n)),
                    [f"op{i % 7}" for i in range(n)], "m")
        total += n
        if batch % 3 == 2:
            captures.put(stats.capture())
    captures.put(stats.capture())
    captures.put(None)
    thread.join()
    assert sum(interval for interval, _ in seen) == total
    running = np.cumsum([interval for interval, _ in seen]).tolist()
    assert [since for _, since in seen] == running


def _drive(stats: Statistics, clock: FakeClock, seconds: int, seed: int):
    """Batches over ``seconds`` seconds of a clock that mostly steps by one second (sometimes
    by several): series appear over time, some of them with the LLM fields, and some records
    arrive late, for seconds long closed or past every window. Yields after each capture."""
    rng = np.random.default_rng(seed)
    now = 1000.0
    while now < 1000 + seconds:
        now += 1 if rng.random() < 0.9 else int(rng.integers(2, 15))
        clock.now = now + rng.uniform(0, 0.5)
        for _ in range(int(rng.integers(1, 4))):
            n = int(rng.integers(1, 300))
            stamps = np.full(n, float(int(clock.now)))
            late = rng.random(n) < (0.3 if rng.random() < 0.3 else 0.0)
            stamps[late] -= rng.integers(1, 330, late.sum())
            series = rng.integers(0, min(48, 3 + int(now - 1000) // 4), n)
            llm = series % 5 == 0
            records = make_records(n, 1000.0, rng.lognormal(3, 1.2, n),
                                   quality=np.where(rng.random(n) < 0.5, rng.random(n), np.nan),
                                   kind=np.where(llm, L.KIND_EXTENDED, 0),
                                   ttft_ms=np.where(llm, rng.lognormal(2, 1, n), np.nan),
                                   queue_ms=np.where(llm, rng.lognormal(0, 1, n), np.nan),
                                   tokens_in=np.where(llm, 100, L.TOKENS_ABSENT))
            records["ts_ns"] = (stamps * 1e9).astype(np.int64)
            add_records(stats, records, [f"op{i % 7}" for i in series.tolist()],
                        [f"m{i // 7}" for i in series.tolist()])
        yield stats.capture() if rng.random() < 0.8 else stats.view()


def test_operations_reuse_across_captures_changes_nothing(stats, clock):
    """operations() reuses sums from the captures before it (whole blocks of per-second
    totals, each window's bucket counts): at every point, through late records that rewrite
    closed seconds, clock jumps and windows emptying, its rows are those computed afresh."""
    rng = np.random.default_rng(11)
    reads = 0
    for capture in _drive(stats, clock, 340, seed=5):
        if rng.random() < 0.6:
            assert capture.operations() == capture.compute_operations(None), clock.now
            reads += 1
    assert reads > 100
    assert stats.operations_cache.folds and set(stats.operations_cache.counts) == {
        "10s", "1m", "5m", "since_start"}


def test_operations_cache_shared_by_threads_in_any_order(stats, clock):
    """Two threads reading captures of different moments through one cache, in opposite
    orders, get the rows computed afresh (the cache is validated, never changed in place)."""
    captures = list(_drive(stats, clock, 120, seed=6))[-40:]
    expected = [capture.compute_operations(None) for capture in captures]
    cache = stats.operations_cache
    results: dict[int, list] = {0: [], 1: []}

    def read(which: int) -> None:
        order = captures if which == 0 else captures[::-1]
        results[which] = [c.compute_operations(cache) for c in order]

    threads = [threading.Thread(target=read, args=(i,)) for i in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results[0] == expected and results[1] == expected[::-1]


def test_answers_computed_in_a_forked_copy_are_those_computed_here(stats, clock):
    """A capture's costly answers computed in a forked child and adopted here are those
    computed here: its rows, its interval; and the operations cache the children leave (parts
    and blocks named by identity across the fork) gives the rows computed afresh."""
    forked = Forked(stalled_after=20, limit=60, mode="always")
    cache = stats.operations_cache
    checked = 0
    for capture in _drive(stats, clock, 120, seed=7):
        results = forked.run(capture.computed)
        interval = capture.interval()  # computed here, before the child's is adopted
        capture.adopt(results)
        assert capture.operations() == capture.compute_operations(None), clock.now
        assert capture.interval() == interval
        assert capture.compute_operations(cache) == capture.operations()
        checked += 1
    assert forked.in_child == checked > 50 and forked.failures == 0
    assert set(cache.counts) == {"10s", "1m", "5m", "since_start"} and cache.folds


# -- the performance snapshot of a Daemon in this process -----------------------------------
def test_get_performance_snapshot_in_process_and_from_file(make_config, make_daemon):
    """The in-process API returns the same structure as the snapshot file: a Daemon built
    in this process computes it afresh; get_performance_snapshot(config) reads the file."""
    from ai_analytics import client
    from ai_analytics.daemon import get_performance_snapshot, load_config

    config = load_config(make_config())
    daemon = make_daemon(config)
    # A thread of its own: the lane belongs to it and to this test's namespace only.
    worker = threading.Thread(target=lambda: [client.emit("inline", 1.0 + i, model="m")
                                              for i in range(50)])
    worker.start()
    worker.join()
    daemon.lanes.scan()
    daemon.drain()
    live = daemon.get_performance_snapshot()
    assert daemon.save(running=True)
    daemon.close()
    stored = get_performance_snapshot(config)
    assert set(live) == set(stored)
    (row,) = live["operations"]
    assert row["operation"] == "inline" and row["windows"]["since_start"]["count"] == 50
    assert stored["operations"][0]["windows"]["10s"]["latency_ms"]["max"] == 50.0


# -- merges done between batches -------------------------------------------------------------
_SERIES = [(f"op{i % 3}", f"m{i % 4}") for i in range(12)]


def _lagging_batch(rng: np.random.Generator, now: int) -> tuple[np.ndarray, list[str], list[str]]:
    """Records of a few series stamped this second or the last, some late into past seconds
    (up to 40 s back), some with quality, a quarter with LLM fields."""
    n = int(rng.integers(20, 200))
    seconds = now - rng.choice([0, 1], n, p=[0.8, 0.2])
    late = rng.random(n) < 0.1
    seconds[late] = now - rng.integers(2, 40, int(late.sum()))
    records = make_records(n, now, rng.lognormal(3, 1, n))
    records["ts_ns"] = seconds * 1_000_000_000 + rng.integers(0, 1_000_000_000, n)
    records["quality"] = np.where(rng.random(n) < 0.5, rng.random(n), np.nan)
    extended = rng.random(n) < 0.25
    records["kind"] = np.where(extended, L.KIND_EXTENDED, 0)
    records["ttft_ms"] = np.where(extended, rng.lognormal(1, 1, n), np.nan)
    records["queue_ms"] = np.nan
    which = rng.integers(0, len(_SERIES), n).tolist()
    return records, [_SERIES[i][0] for i in which], [_SERIES[i][1] for i in which]


def _run_against_reference(phases: list[tuple[int, float | None, int]]) -> Statistics:
    """Feed the same batches, 3 per second for 345 s but for a pause of 2 s now and then, to
    an engine whose merges are done as they are submitted (the reference) and to one whose
    merger follows ``phases``: (first second, budget in seconds or None, max_pending). Both
    take a capture every 2 s: their intervals must be the same, and their operations every
    28 s (captures left unread in between, so since-start parts pile up as they do when
    snapshots lag)."""
    from ai_analytics.daemon.stats.merging import Merger

    clock = FakeClock(1000.0)
    reference = Statistics(256, 256, 1024, clock)
    reference.merger = Merger(budget_seconds=None)
    for ring in reference.buckets.values():
        ring.merger = reference.merger
    subject = Statistics(256, 256, 1024, clock)
    rng = np.random.default_rng(11)
    for second in range(1000, 1345):
        for start, budget, max_pending in phases:
            if second == start:
                subject.merger.budget_seconds, subject.merger.max_pending = budget, max_pending
        if second % 31 in (5, 6):  # a pause: the next batch closes two seconds at once
            continue
        for fraction in (0.1, 0.4, 0.8):
            clock.now = second + fraction
            records, ops, models = _lagging_batch(rng, second)
            add_records(reference, records, ops, models)
            add_records(subject, records, ops, models)
        if second % 2 == 0:
            expected, got = reference.capture(), subject.capture()
            assert got.interval() == expected.interval(), second
            if second % 28 == 0:
                assert got.operations() == expected.operations(), second
        if second % 59 == 0:
            assert subject.operations() == reference.operations(), second
    return subject


def test_merges_that_lag_give_the_results_of_merges_done_at_once():
    """Windows, intervals and since-start stay exactly those of an engine that merges at
    once, while the merger does not run for a minute and then catches up, runs only past a
    few pending merges, stops again, and runs on its time budget."""
    from ai_analytics.daemon.stats.merging import BUDGET_SECONDS

    never = 10**6
    subject = _run_against_reference([
        (1000, 0.0, never), (1060, None, never), (1070, 0.0, 2), (1150, 0.0, never),
        (1250, BUDGET_SECONDS, never)])
    assert len(subject.merger) < 24


def test_merges_held_back_keep_memory_bounded():
    """A merger that never gets any budget still merges past ``max_pending`` waiting
    merges, and lists of parts are merged at once at their limit: the parts stay bounded,
    with the results unchanged."""
    from ai_analytics.daemon.stats.statistics import LIMIT_PARTS, SINCE_PARTS_LIMIT

    subject = _run_against_reference([(1000, 0.0, 8)])
    # A capture may submit one merge after the last batch's run.
    assert len(subject.merger) <= 8 + 1 and len(subject._open) <= 8 + 2
    assert max(len(slot.parts) for ring in subject.buckets.values()
               for slot in ring.slots) <= LIMIT_PARTS
    assert len(subject._interval_parts) <= LIMIT_PARTS
    assert len(subject._since_parts) <= 2 * SINCE_PARTS_LIMIT + LIMIT_PARTS


def test_a_merge_in_steps_equals_one_merge():
    """``Merge`` cuts a merge into key ranges: the same keys, counts and count dtype as
    ``merge_counts`` at once, for narrowed and int64 counts, over empty parts too."""
    from ai_analytics.daemon.stats import merging as M

    rng = np.random.default_rng(5)
    parts = []
    for size in (0, 3000, 70000, 150000):
        keys = np.unique(rng.integers(0, 40 * H.HIST_WIDTH, size)).astype(H.KEY_DTYPE)
        parts.append((keys, H.narrow(rng.integers(1, 70000 if size == 3000 else 9, len(keys)))))
    for dtype in (None, np.int64):
        merge = M.Merge(parts, dtype, lambda _: None)
        assert merge.steps > 1
        keys, counts = merge.finish()
        expected_keys, expected_counts = H.merge_counts(parts, dtype)
        assert np.array_equal(keys, expected_keys) and keys.dtype == expected_keys.dtype
        assert np.array_equal(counts, expected_counts)
        assert counts.dtype == expected_counts.dtype


def test_a_merge_replaces_its_parts_only_where_all_of_them_are_still_there():
    """Adoption is keyed by identity: the very parts a merge summed, as one run."""
    from ai_analytics.daemon.stats.merging import replace_run

    a, b, c, d = ((np.array([i], H.KEY_DTYPE), np.array([1], np.uint16)) for i in range(4))
    equal_to_b = (b[0].copy(), b[1].copy())
    merged = H.merge_counts([b, c])
    for parts, replaced in (([a, b, c, d], True), ([a, b, d, c], False), ([a, b], False),
                            ([a, equal_to_b, c], False), ([a, c, b], False)):
        expected = [a, merged, d] if replaced else list(parts)
        assert replace_run(parts, (b, c), merged) is replaced
        assert len(parts) == len(expected)
        assert all(x is y for x, y in zip(parts, expected, strict=True))


def test_a_window_sum_stands_when_its_parts_are_merged_into_one():
    """A cached window sum whose parts the engine merged since (in one step or two) is
    updated by what really came and went: the merge's result stands for the parts it sums.
    Without the lineage the same change costs a sum afresh; the answer is the same."""
    from ai_analytics.daemon.stats.merging import Merge, Merger
    from ai_analytics.daemon.stats.statistics import _merged_from

    rng = np.random.default_rng(8)
    parts = []
    for size in (4000, 4000, 4000, 4000, 300):
        keys = np.unique(rng.integers(0, 40 * H.HIST_WIDTH, size)).astype(H.KEY_DTYPE)
        parts.append((keys, H.narrow(rng.integers(1, 9, len(keys)))))
    merger = Merger(budget_seconds=None)
    entry = (tuple(parts[:4]), H.merge_counts(parts[:4], None))
    first = Merge(parts[:3], None, lambda _: None)
    merger.submit(first)
    second = Merge([first.result, parts[3]], None, lambda _: None)
    merger.submit(second)
    for now in ([first.result, parts[3], parts[4]], [second.result, parts[4]]):
        updated = _merged_from(entry, now, merger.lineage)
        assert updated is not None
        expected = H.merge_counts(now)
        assert np.array_equal(updated[0], expected[0])
        assert np.array_equal(updated[1], expected[1])
        assert _merged_from(entry, now, None) is None  # taken as a big change otherwise
    # Equal counts in other arrays are not the parts the merge summed.
    copies = [(keys.copy(), counts.copy()) for keys, counts in parts[:4]]
    assert _merged_from((tuple(copies), entry[1]), [second.result, parts[4]],
                        merger.lineage) is None


def test_the_lineage_keeps_nothing_alive_and_forgets_with_its_results():
    """The lineage refers to arrays weakly: a result that dies takes its entry with it, and
    a result whose sources died has none to stand for."""
    from ai_analytics.daemon.stats.lineage import Lineage

    lineage = Lineage()
    a, b = ((np.array([i], H.KEY_DTYPE), np.array([1], np.uint16)) for i in range(2))
    result = H.merge_counts([a, b])
    lineage.record(result, (a, b))
    assert len(lineage) == 1
    sources = lineage.sources(result)
    assert sources is not None and len(sources) == 2
    assert all(s[0] is p[0] and s[1] is p[1] for s, p in zip(sources, (a, b), strict=True))
    assert lineage.sources((result[0], result[1].copy())) is None  # other arrays
    del sources, a
    assert lineage.sources(result) is None
    del result
    assert len(lineage) == 0
