"""prometheus_client as a user would wrap it, with emit's signature: the peer that
``bench/peers.py`` times per call and ``bench/endtoend.py`` runs in producer processes.

prometheus_client picks single-process or multiprocess mode when it is first imported, from
``PROMETHEUS_MULTIPROC_DIR``; so it is imported inside these functions, never at the top.
"""

from __future__ import annotations

from collections.abc import Callable

MP_ENV = "PROMETHEUS_MULTIPROC_DIR"
REQUESTS = "inference_requests_total"  # the counter, one sample per call

Recorder = tuple[Callable[..., object], Callable[[], None]]


class NotInstalled(Exception):
    """A peer's package cannot be imported."""


def _nothing() -> None:
    pass


def setup_prometheus() -> Recorder:
    """(record, close): ``Histogram.labels(op, model).observe(s)`` and
    ``Counter.labels(op, model, outcome).inc()`` in a registry of its own."""
    try:
        from prometheus_client import CollectorRegistry, Counter, Histogram
    except ImportError as e:
        raise NotInstalled(str(e)) from e
    registry = CollectorRegistry()
    hist = Histogram(
        "inference_latency_seconds", "latency", ["operation", "model"], registry=registry
    )
    count = Counter(
        REQUESTS.removesuffix("_total"),
        "requests",
        ["operation", "model", "outcome"],
        registry=registry,
    )
    h_labels, c_labels = hist.labels, count.labels

    def record(
        operation: str,
        latency_ms: float,
        model: str = "",
        quality: float | None = None,
        success: bool = True,
        cache_hit: bool | None = None,
    ) -> None:
        h_labels(operation, model).observe(latency_ms / 1000.0)
        c_labels(operation, model, "success" if success else "error").inc()

    return record, _nothing


def requests_counted(mp_dir: str) -> int:
    """The requests counter summed over every process's file in multiprocess mode, as a
    scrape would see it."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=mp_dir)
    return int(sum(sample.value for metric in registry.collect()
                   for sample in metric.samples if sample.name == REQUESTS))
