"""Segments of a private namespace, and this thread's lanes for timing ``client.emit``.

Every benchmark works in a namespace of its own (``aibench-...``), so that it never meets a
running daemon's lanes, and removes that namespace's segments at its end, on error too.

``Lanes`` plays a worker and the daemon at once: a first ``emit`` creates this thread's lane
exactly as in a worker, and before each timed chunk the script stores the lane's head into
the shared tail, as a daemon that keeps up would. Each chunk is at most half the lane, so
emit never meets a full lane but still pays its real once-a-lap re-read of the tail (drop
mode, default capacity).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator

from ai_analytics import client
from ai_analytics.client import _emit
from ai_analytics.client import _layout as L
from ai_analytics.client._lane import Lane, LaneGeometry
from ai_analytics.client._segments import DEFAULT_SEGMENT_DIR as SHM_DIR
from ai_analytics.client._segments import NAMESPACE_ENV

from .timing import Loop, loop_basic, time_calls

OP, MODEL = "text_generation", "llama-3-8b"
OP_ID, MODEL_ID = 1, 2  # what the first emit interns them as (checked in Lanes.open)


def segments(namespace: str) -> list[str]:
    """Names in /dev/shm that belong to ``namespace``."""
    prefix = f"{namespace}."
    try:
        return sorted(n for n in os.listdir(SHM_DIR) if n.startswith(prefix))
    except OSError:
        return []


def lane_names(namespace: str) -> list[str]:
    return [n for n in segments(namespace) if n.startswith(f"{namespace}.lane.")]


def remove_segments(namespace: str) -> list[str]:
    """Unlink every segment of ``namespace``; return the names removed."""
    removed = []
    for name in segments(namespace):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(SHM_DIR, name))
            removed.append(name)
    return removed


@contextlib.contextmanager
def lane_in_place(lane: Lane) -> Iterator[Lane]:
    """Make ``lane`` this thread's lane for emit, then put the previous one back."""
    local = _emit._local
    previous = getattr(local, "lane", None)
    local.lane = lane
    try:
        yield lane
    finally:
        if previous is None:
            del local.lane
        else:
            local.lane = previous


_bare_local = threading.local()
_pack_basic = L.RECORD_BASIC.pack_into
_now = time.monotonic_ns
_Q_HEAD = L.Q_HEAD


def bare(
    operation: object,
    latency_ms: float,
    model: str = "",
    quality: float | None = None,
    success: bool = True,
    cache_hit: bool | None = None,
    *,
    ttft_ms: float | None = None,
    queue_ms: float | None = None,
    tokens_in: int | None = None,
    tokens_out: int | None = None,
) -> bool:
    """The least a pure-Python emit can do, into the live lane of ``Lanes``: read the lane
    from a thread-local, one ``pack_into`` at the slot (name ids fixed, the clock read), the
    head update and one head store. Same signature as emit, no checks of any kind."""
    lane = _bare_local.lane
    h = lane.head
    _pack_basic(
        lane.buf,
        lane.base + h % lane.capacity * 64,
        h,
        _now(),
        latency_ms,
        quality,
        1,
        2,
        success,
        2,
    )
    lane.head = h + 1
    lane.q[_Q_HEAD] = h + 1
    return True


class Lanes:
    """This thread's lanes in a private namespace: a live one (kept drained) and a full one.

    ``overwrite=True`` publishes a control segment first so that the live lane is created in
    overwrite mode: it never fills and needs no draining (for pytest-benchmark, which cannot
    run code between calls). emit's fast path is the same either way.
    """

    def __init__(self, namespace: str, overwrite: bool = False) -> None:
        self.namespace = namespace
        self.overwrite = overwrite
        self.live: Lane | None = None
        self.full: Lane | None = None
        self._saved_env: str | None = None
        self._saved_lane: Lane | None = None

    def open(self) -> Lanes:
        self._saved_env = os.environ.get(NAMESPACE_ENV)
        self._saved_lane = getattr(_emit._local, "lane", None)
        os.environ[NAMESPACE_ENV] = self.namespace
        if self._saved_lane is not None:
            del _emit._local.lane
        if self.overwrite:
            from ai_analytics.daemon.ingest.control import publish_control  # stdlib only

            publish_control(
                SHM_DIR, self.namespace, L.DEFAULT_CAPACITY, L.DEFAULT_NAMES_CAPACITY, True
            )
        # The first emit of this thread creates its lane, exactly as in a worker.
        if not client.emit(OP, 12.5, MODEL, 0.9):
            raise RuntimeError("the first emit was dropped: no lane could be created")
        live = _emit._local.lane
        if not live.name.startswith(f"{self.namespace}.lane."):
            raise RuntimeError(f"emit did not create a lane in {self.namespace!r}: {live.name!r}")
        if (live.ops[OP], live.models[MODEL]) != (OP_ID, MODEL_ID):
            raise RuntimeError("unexpected name ids; bare() writes ids 1 and 2")
        self.live = live
        _bare_local.lane = live
        # A second lane, filled once and never drained: every emit into it is dropped.
        full = Lane(
            self.namespace, LaneGeometry(L.DEFAULT_CAPACITY, L.DEFAULT_NAMES_CAPACITY, False)
        )
        with lane_in_place(full):
            for _ in range(full.capacity):
                client.emit(OP, 12.5, MODEL, 0.9)
            if client.emit(OP, 12.5, MODEL, 0.9) or full.dropped != 1:
                raise RuntimeError("the full lane accepted a record")
        self.full = full
        return self

    def drain_live(self) -> None:
        """Play the daemon: everything written so far has been consumed."""
        assert self.live is not None
        self.live.q[L.Q_TAIL] = self.live.head

    def chunk(self, calls: int) -> int:
        """Calls per timed loop: at most half the live lane, so one drain before it suffices."""
        assert self.live is not None
        return max(1, min(calls, self.live.capacity // 2))

    def time_emit(self, loop: Loop, calls: int, emit: Callable[..., bool] | None = None) -> float:
        """ns per ``client.emit`` call (or ``emit``'s: the pure-Python path, say) into the
        live lane, drained before each chunk; checked: every call was written, none dropped."""
        live = self.live
        assert live is not None
        head, dropped = live.head, live.dropped
        ns, made = time_calls(loop, emit or client.emit, calls, self.chunk(calls),
                              self.drain_live)
        if live.head - head != made or live.dropped != dropped:
            raise RuntimeError("emit dropped records in the drained lane")
        return ns

    def time_drop(self, calls: int) -> float:
        """ns per ``client.emit`` call into the full lane; checked: every call was dropped."""
        full = self.full
        assert full is not None
        head, dropped = full.head, full.dropped
        with lane_in_place(full):
            ns, made = time_calls(loop_basic, client.emit, calls, self.chunk(calls))
        if full.head != head or full.dropped - dropped != made:
            raise RuntimeError("emit wrote into the full lane")
        return ns

    def close(self) -> None:
        """Put back the thread's previous lane and namespace; remove this namespace's segments."""
        try:
            if getattr(_bare_local, "lane", None) is not None:
                del _bare_local.lane
            if hasattr(_emit._local, "lane"):
                del _emit._local.lane
            if self._saved_lane is not None:
                _emit._local.lane = self._saved_lane
            if self._saved_env is None:
                os.environ.pop(NAMESPACE_ENV, None)
            else:
                os.environ[NAMESPACE_ENV] = self._saved_env
        finally:
            remove_segments(self.namespace)

    def __enter__(self) -> Lanes:
        try:
            return self.open()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()
