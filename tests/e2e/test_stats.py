"""A workload whose true statistics the test knows, through real producers and a real daemon."""

from __future__ import annotations

import json
import subprocess
import time

import numpy as np
import pytest

from ai_analytics.daemon.stats import histogram as H

from helpers import events_total, run_python, script, start_python, wait_for

WORKLOAD = """
import json, sys, threading
from ai_analytics import client
worker = int(sys.argv[1])

def run(thread):
    for i in range(2000):
        latency = 1.0 + (i * 7919 % 2000) * 0.5          # 1.0 .. 1000.5 ms, each value once
        client.emit("generate", latency, model="llama", success=i % 10 != 0,
                    quality=None if i % 2 else (i % 100) / 100,
                    cache_hit=None if i % 3 else i % 6 == 0,
                    ttft_ms=latency / 10, tokens_in=100, tokens_out=i % 50)
        client.emit("embed", 2.0, model="bge")
    client.cache_state("prompt-cache", size=100 * (worker + 1), evictions=5)

threads = [threading.Thread(target=run, args=(t,)) for t in range(2)]
for t in threads: t.start()
for t in threads: t.join()
"""


def expected() -> dict:
    """The true statistics of the workload, computed with numpy."""
    i = np.arange(2000)
    latency = 1.0 + (i * 7919 % 2000) * 0.5
    quality = np.where(i % 2 == 0, (i % 100) / 100, np.nan)
    lookups = i % 3 == 0
    per = {"latency": latency, "quality": quality[~np.isnan(quality)],
           "errors": int((i % 10 == 0).sum()), "lookups": int(lookups.sum()),
           "hits": int((lookups & (i % 6 == 0)).sum()), "tokens_out": int((i % 50).sum())}
    return per


def test_snapshot_statistics_match_the_known_workload(daemon_factory, namespace):
    """3 processes x 2 threads emit a workload with known values: the snapshot's counts,
    error rate, means, extremes, percentiles (within 1 %), quality, cache hit rate, LLM
    fields, caches and model view all match."""
    daemon = daemon_factory()
    procs = [start_python(WORKLOAD, namespace, args=[str(w)]) for w in range(3)]
    assert [p.communicate(timeout=120) and p.returncode for p in procs] == [0] * 3
    state = daemon.state_after(lambda s: s["lanes"] == [] and s["events"]["received"] == 24006,
                               what="all events drained")
    assert events_total(state) == 24006 and state["events"]["invalid"] == 0
    truth = expected()
    rows = {(r["operation"], r["model"]): r for r in state["operations"]}
    assert set(rows) == {("generate", "llama"), ("embed", "bge")}
    for window in ("1m", "5m", "since_start"):
        gen = rows[("generate", "llama")]["windows"][window]
        n = 6 * 2000
        assert gen["count"] == n and gen["errors"] == 6 * truth["errors"]
        assert gen["error_rate"] == pytest.approx(truth["errors"] / 2000)
        lat = gen["latency_ms"]
        assert lat["mean"] == pytest.approx(truth["latency"].mean())
        assert (lat["min"], lat["max"]) == (1.0, 1000.5)
        all_latency = np.tile(truth["latency"], 6)
        for name, q in (("p50", 50), ("p90", 90), ("p95", 95), ("p99", 99), ("p999", 99.9)):
            exact = np.percentile(all_latency, q, method="inverted_cdf")
            assert abs(lat[name] - exact) / exact <= H.RELATIVE_ERROR * (1 + 1e-9), name
        quality = gen["quality"]
        assert quality["count"] == 6 * len(truth["quality"])
        assert quality["mean"] == pytest.approx(truth["quality"].mean())
        p10 = np.percentile(np.tile(truth["quality"], 6), 10, method="inverted_cdf")
        assert abs(quality["p10"] - p10) <= H.QUALITY_ABSOLUTE_ERROR + 1e-9
        cache = gen["cache"]
        assert (cache["lookups"], cache["hits"]) == (6 * truth["lookups"], 6 * truth["hits"])
        assert gen["ttft_ms"]["count"] == n
        assert gen["ttft_ms"]["mean"] == pytest.approx(truth["latency"].mean() / 10)
        assert gen["tokens"]["in_total"] == 100 * n
        assert gen["tokens"]["out_total"] == 6 * truth["tokens_out"]
        embed = rows[("embed", "bge")]["windows"][window]
        assert embed["count"] == n and embed["latency_ms"]["p99"] == 2.0
        assert embed["cache"]["hit_rate"] is None and embed["quality"]["count"] == 0
    models = {m["model"]: m for m in state["models"]}
    assert models["llama"]["windows"]["since_start"]["error_rate"] == pytest.approx(0.1)
    assert models["bge"]["windows"]["since_start"]["inference_ms_mean"] == 2.0
    (cache,) = state["caches"]
    assert cache["name"] == "prompt-cache" and cache["evictions_total"] == 30
    assert cache["size"] is None  # its reporting lanes are gone: their share left with them
    assert daemon.stop() == 0


def test_concurrent_reader_never_sees_a_partial_snapshot(daemon_factory, namespace):
    """A reader polling state.json while the daemon rewrites it many times a second always
    parses a whole document."""
    daemon = daemon_factory(snapshot_interval_seconds=0.05)
    path = daemon.state_dir / "state.json"
    wait_for(path.exists, what="the first snapshot")
    writes = set()
    reads = 0
    deadline = time.monotonic() + 20
    while len(writes) < 20 and time.monotonic() < deadline:
        document = json.loads(path.read_text())
        assert document["schema_version"] >= 1 and "events" in document
        writes.add(document["written_unix"])
        reads += 1
    assert len(writes) >= 20 and reads > 100  # the file really was replaced while we read
    assert daemon.stop() == 0


def test_history_rows_add_up_to_the_workload(daemon_factory, namespace, make_config):
    """Every received event lands in exactly one history row: `ai-analytics history --json`
    sums to the workload, and the filters select series."""
    config = make_config()
    daemon = daemon_factory(config)
    procs = [start_python(WORKLOAD, namespace, args=[str(w)]) for w in range(2)]
    assert [p.communicate(timeout=120) and p.returncode for p in procs] == [0] * 2
    daemon.state_after(lambda s: s["lanes"] == [] and s["events"]["received"] == 16004,
                       what="drain")
    assert daemon.stop() == 0
    cli = [script("ai-analytics"), "history", "--config", str(config), "--json", "--since", "1h"]
    rows = json.loads(subprocess.run(cli, capture_output=True, text=True, check=True).stdout)
    totals: dict[tuple[str, str], int] = {}
    for row in rows:
        key = (row["operation"], row["model"])
        totals[key] = totals.get(key, 0) + row["count"]
    assert totals == {("generate", "llama"): 8000, ("embed", "bge"): 8000}
    assert sum(r["errors"] for r in rows if r["operation"] == "generate") == 800
    assert all(r["latency_p99_ms"] == 2.0 for r in rows if r["operation"] == "embed")
    only = json.loads(subprocess.run([*cli, "--operation", "embed"], capture_output=True,
                                     text=True, check=True).stdout)
    assert {r["operation"] for r in only} == {"embed"} and len(only) < len(rows)


def test_model_view_carries_worker_memory(daemon_factory, namespace):
    """The model entry lists the live worker processes that emitted for it, with their RSS
    sampled by the resource thread; system CPU and memory are in the snapshot too."""
    daemon = daemon_factory(process_interval_seconds=0.2, resource_interval_seconds=0.2)
    worker = start_python("import sys\nfrom ai_analytics import client\n"
                          "client.emit('generate', 5.0, model='resident')\n"
                          "print('ok', flush=True)\nsys.stdin.readline()",
                          namespace, stdin=subprocess.PIPE)
    try:
        assert worker.stdout.readline().strip() == "ok"

        def ready(state: dict) -> bool:
            models = {m["model"]: m for m in state["models"]}
            entry = models.get("resident")
            return bool(entry and entry["rss_bytes"])

        state = daemon.state_after(ready, what="worker RSS in the model view")
        (entry,) = [m for m in state["models"] if m["model"] == "resident"]
        assert [p["pid"] for p in entry["processes"]] == [worker.pid]
        assert entry["rss_bytes"] > 1_000_000
        system = state["resources"]["system"]
        assert system["memory_total_bytes"] > 0 and system["stale"] is False
        assert state["resources"]["gpu"]["available"] in (True, False)
    finally:
        worker.communicate("\n", timeout=30)
    assert daemon.stop() == 0


def test_event_path_shows_drops_and_drain_lag(daemon_factory, namespace):
    """While the daemon is stopped a lane fills: the snapshot then shows the fill, the age of
    the oldest undrained record, and afterwards the rate of dropped events."""
    daemon = daemon_factory(max_queue_size=64)
    with daemon.stopped():
        out = run_python("from ai_analytics import client\n"
                         "print(sum(client.emit('burst', 1.0) for _ in range(1000)))",
                         namespace).stdout
        assert int(out) == 64
        time.sleep(0.3)
    state = daemon.state_after(lambda s: s["events"]["dropped"] == 936, what="drops counted")
    path = state["event_path"]
    assert path["rates_per_s"]["dropped"]["10s"] > 0
    assert path["records_per_batch"] >= 1
    assert daemon.stop() == 0


def test_drain_lag_is_the_age_of_the_oldest_unread_record(daemon_factory, namespace):
    """A daemon that cannot keep up (one record per batch here) reports how old its oldest
    unread record is, and the fill of its fullest lane."""
    daemon = daemon_factory(batch_size=1, batch_timeout_seconds=0.05, max_queue_size=65536,
                            snapshot_interval_seconds=0.1)
    run_python("from ai_analytics import client\nfor _ in range(20000): client.emit('slow', 1.0)",
               namespace)
    state = daemon.state_after(lambda s: s["event_path"]["drain_lag_seconds"] > 0.3,
                               what="drain lag to grow")
    assert state["event_path"]["max_fill"] > 0
    assert state["events"]["pending"] > 0
    assert daemon.stop() == 0
