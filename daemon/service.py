"""The daemon: discover lanes, drain them in batches, count, save state, stop on time.

One thread does all of it, in ``run``: every wait is ``Event.wait(timeout)``, so a stop
request (a signal handler only sets the event) is seen at once, and the loop has no other
exit than that event. The wait adapts: up to ``batch_timeout_seconds`` when lanes are quiet,
shorter when a lane fills fast enough to reach half its capacity before then.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Callable

from ai_analytics.client._segments import SHM_DIR

from .caches import CacheStates
from .config import Config
from .control import publish_control, withdraw_control
from .drain import Drainer
from .errors import AnalyticsError, StateError
from .history import HistoryStore
from .http_server import BindError, StatusServer
from .insights import Insights
from .lanes import LaneSet, Outcomes, SavedLane
from .rates import CounterRates
from .resources import ResourceSampler
from .snapshot import build_document
from .state import read_state, write_state
from .stats import Statistics
from .version import package_version
from .wakeup import StopRequest

log = logging.getLogger("ai_analytics.daemon")

MIN_WAIT_SECONDS = 0.001
# How full a lane may get, at its observed rate, before the loop wakes to drain it.
WAKE_FILL = 0.5


class DirectoryWatch:
    """A cheap "did its entries change?" test: one stat of the directory per call."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.mtime_ns = 0

    def changed(self) -> bool:
        try:
            mtime = os.stat(self.path).st_mtime_ns
        except OSError:
            return False
        if mtime == self.mtime_ns:
            return False
        self.mtime_ns = mtime
        return True


class AlreadyRunning(AnalyticsError):
    """Another daemon holds the namespace."""


OUTCOME_RATES = ("received", "dropped", "overwritten", "invalid")
RETENTION_INTERVAL_SECONDS = 60.0


class Daemon:
    def __init__(self, config: Config, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.clock = clock
        self.stop_requested = StopRequest()
        self.started_unix = time.time()
        self.started = clock()
        self.stats = Statistics(config.max_operations, config.max_models, config.max_series,
                                clock)
        self.caches = CacheStates(config.max_operations)
        self.outcome_rates = CounterRates(OUTCOME_RATES)
        self.sink_failures = {"state": 0, "history": 0}
        self.resources = ResourceSampler(config, clock)
        self._lock_fd = -1
        self.lanes = self._restore(read_state(config.state_dir))
        self.drainer = Drainer(self.lanes, self.stats, self.caches, config.batch_size)
        self.history = HistoryStore(config.state_dir, config.history_max_age_seconds,
                                    config.history_max_megabytes)
        self._next_retention = 0.0
        self.last_document: dict[str, object] | None = None
        self.insights = Insights(config)
        self.http: StatusServer | None = None
        self.last_iteration: float | None = None  # monotonic; written by the loop thread only

    # -- start -----------------------------------------------------------------------------
    def _restore(self, document: dict[str, object] | None) -> LaneSet:
        trusted = frozenset({os.getuid(), 0, *self.config.trusted_uids})
        saved: dict[tuple[str, int], SavedLane] = {}
        folded = Outcomes()
        folded_count = 0
        folded_unlinked: set[tuple[str, int]] = set()
        if document is not None:
            try:
                owner = document["namespace"]
                if owner != self.config.namespace:
                    raise StateError(
                        f"the state file in {self.config.state_dir} belongs to namespace "
                        f"{owner!r}, not {self.config.namespace!r}: give each namespace its "
                        "own state_dir"
                    )
                restore = document["restore"]
                for row in restore["lanes"]:
                    key = (str(row["name"]), int(row["created_ns"]))
                    fields = SavedLane.__dataclass_fields__
                    saved[key] = SavedLane(**{k: int(row[k]) for k in fields})
                folded = Outcomes.from_dict(restore["folded"])
                folded_count = int(restore["folded_count"])
                folded_unlinked = {(str(n), int(c)) for n, c in restore["folded_unlinked"]}
                self.stats.load_all_time(document["operations"])
                self.stats.registry.overflow.update(
                    {k: int(v) for k, v in restore["cardinality_overflow"].items()})
            except (KeyError, TypeError, ValueError) as exc:
                raise StateError(f"the state file in {self.config.state_dir} is damaged "
                                 f"({exc!r}); move it aside to start counting from zero"
                                 ) from None
            log.info("resuming from the last state: %s", document.get("events"))
        return LaneSet(
            self.config.namespace, trusted, self.config.max_lanes, saved, folded_unlinked,
            folded, folded_count,
        )

    def _take_namespace(self) -> None:
        """One daemon per namespace: a second would break the single-consumer rule."""
        path = os.path.join(SHM_DIR, f"{self.config.namespace}.daemon.lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            raise AlreadyRunning(
                f"another ai-analyticsd (pid {holder}) drains namespace "
                f"{self.config.namespace!r}"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    # -- the loop --------------------------------------------------------------------------
    def run(self) -> None:
        """Drain until ``request_stop``; then drain what is left and save, within the deadline."""
        cfg = self.config
        try:
            self._take_namespace()
        except AlreadyRunning:
            self.history.close()
            raise
        if cfg.http_enabled:
            # After the namespace: a second daemon reports "already running", not "port in
            # use"; before the loop's try: a bind failure must not run the final drain.
            self.http = StatusServer(cfg.http_host, cfg.http_port, lambda: self.last_document,
                                     self.health)
            try:
                self.http.start()
            except BindError:
                os.close(self._lock_fd)
                self._lock_fd = -1
                self.history.close()
                raise
        publish_control(cfg.namespace, cfg.max_queue_size, cfg.names_per_lane,
                        cfg.on_full == "overwrite")
        self.resources.start()
        log.info("ai-analyticsd %s draining namespace %r (state in %s)", package_version(),
                 cfg.namespace, cfg.state_dir)
        next_scan = next_save = 0.0
        shm = DirectoryWatch(SHM_DIR)
        try:
            while not self.stop_requested.is_set():
                now = time.monotonic()
                if now >= next_scan or shm.changed():  # a new lane: attach it at once
                    self.lanes.scan()
                    self.resources.set_worker_pids(
                        {lane.ident.pid for lane in self.lanes if lane.state == "live"})
                    next_scan = now + cfg.discovery_interval_seconds
                self.drain()
                self.outcome_rates.observe(int(self.clock()), self.lanes.totals().as_dict())
                self._finish_drained()
                if now >= next_save:
                    self.save(running=True)
                    next_save = now + cfg.snapshot_interval_seconds
                wait = min(self._next_wait(), next_scan - now, next_save - now)
                self.last_iteration = time.monotonic()
                self.stop_requested.wait(max(wait, MIN_WAIT_SECONDS))
        finally:
            self._shutdown()

    def health(self) -> tuple[bool, str]:
        """For /healthz: is the drain loop going round? (One round includes a state write
        with fsync, hence the floor of 2 s.)"""
        if self.stop_requested.is_set():
            return False, "stopping"
        last = self.last_iteration
        if last is None:
            return False, "starting: the drain loop has not completed an iteration yet"
        age, limit = time.monotonic() - last, max(3 * self.config.batch_timeout_seconds, 2.0)
        if age > limit:
            return False, (f"the drain loop has not completed an iteration for {age:.1f} s "
                           f"(limit {limit:.1f} s)")
        return True, "ok"

    def request_stop(self) -> None:
        """Safe from a signal handler and from other threads: no lock involved."""
        self.stop_requested.set()

    def _shutdown(self) -> None:
        deadline = time.monotonic() + self.config.stop_timeout_seconds
        # Helper threads never hold up the stop: at most a second each, then left behind.
        if self.http is not None:
            self.http.stop(min(1.0, self.config.stop_timeout_seconds / 4))
        self.resources.stop(min(1.0, self.config.stop_timeout_seconds / 4))
        try:
            self.lanes.scan()
            while time.monotonic() < deadline and self.drain(deadline) > 0:
                pass
            self._finish_drained()
            self.save(running=False)
        finally:
            totals = self.lanes.totals().as_dict()
            withdraw_control(self.config.namespace)
            self.history.close()
            self.lanes.close()
            self.stop_requested.close()
            if self._lock_fd >= 0:
                os.close(self._lock_fd)
        log.info("stopped: %s", totals)

    def _finish_drained(self) -> None:
        for lane in self.lanes.finish_drained():
            self.caches.forget_lane(lane.ident.name)

    def _next_wait(self) -> float:
        wait = self.config.batch_timeout_seconds
        for lane in self.lanes:
            if lane.rate > 0:
                room = WAKE_FILL * lane.ident.capacity - lane.reader.pending()
                wait = min(wait, room / lane.rate)
        return wait

    def drain(self, deadline: float | None = None) -> int:
        """Drain every lane until all are empty or time is up (batch_timeout by default)."""
        return self.drainer.drain(deadline or time.monotonic() + self.config.batch_timeout_seconds)

    # -- state -----------------------------------------------------------------------------
    def document(self, running: bool) -> dict[str, object]:
        """Everything the daemon knows, as written to the state file and shown by status."""
        return build_document(self, running)

    def get_performance_snapshot(self) -> dict[str, object]:
        """The snapshot document, computed now (the structure docs/snapshot.md describes),
        with the findings and recommendations of the last snapshot."""
        document = self.document(running=not self.stop_requested.is_set())
        last = self.last_document or {}
        document["findings"] = last.get("findings", [])
        document["recommendations"] = last.get("recommendations", [])
        return document

    def save(self, running: bool) -> bool:
        """Write the snapshot and its history rows; unlink reclaimed lanes only once a state
        file that counts them is safely written."""
        document = self.document(running)
        document.update(self.insights.evaluate(document, float(document["written_unix"])))
        self.last_document = document  # read by other threads (embedded mode, HTTP)
        try:
            write_state(self.config.state_dir, document)
        except StateError as exc:
            self._sink_failed("state", exc)
            saved = False
        else:
            self.lanes.unlink_finished()
            saved = True
        span, rows = self.stats.close_interval()
        try:
            self.history.append(float(document["written_unix"]), span, document["events"], rows)
            if time.monotonic() >= self._next_retention:
                self.history.enforce_retention()
                self._next_retention = time.monotonic() + RETENTION_INTERVAL_SECONDS
        except StateError as exc:
            self._sink_failed("history", exc)
        return saved

    def _sink_failed(self, sink: str, exc: StateError) -> None:
        """Count a failed write; log the first and then every 100th, never stop draining."""
        self.sink_failures[sink] += 1
        failures = self.sink_failures[sink]
        if failures == 1 or failures % 100 == 0:
            log.error("%s (%s write failure %d; draining goes on)", exc, sink, failures)
