"""The daemon: discover lanes, drain them in batches, count, save state, stop on time.

One thread does all of it, in ``run``: every wait is ``Event.wait(timeout)``, so a stop
request (a signal handler only sets the event) is seen at once, and the loop has no other
exit than that event. The wait adapts: up to ``batch_timeout_seconds`` when lanes are quiet,
shorter when a lane fills fast enough to reach half its capacity before then.
"""

from __future__ import annotations

import datetime
import fcntl
import logging
import os
import threading
import time
from importlib.metadata import PackageNotFoundError, version

import numpy as np
from ai_analytics.client._segments import SHM_DIR

from .aggregate import OTHER_ID, OperationCounts
from .config import Config
from .control import publish_control, withdraw_control
from .errors import AnalyticsError, StateError
from .lanes import LaneSet, Outcomes, SavedLane, TrackedLane
from .records import valid_mask
from .state import SCHEMA_VERSION, read_state, write_state

log = logging.getLogger("ai_analytics.daemon")

MIN_WAIT_SECONDS = 0.001
# How full a lane may get, at its observed rate, before the loop wakes to drain it.
WAKE_FILL = 0.5


def package_version() -> str:
    try:
        return version("ai-analytics")
    except PackageNotFoundError:
        return "unknown"


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


class Daemon:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.stop_requested = threading.Event()
        self.started_unix = time.time()
        self.started = time.monotonic()
        self.counts = OperationCounts(config.max_series)
        self.drains = 0
        self.records_drained = 0
        self.last_batch = 0
        self.saves_failed = 0
        self._lock_fd = -1
        self.lanes = self._restore(read_state(config.state_dir))

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
                self.counts.load(document["operations"])
                self.counts.overflow_events = int(restore["overflow_events"])
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
        self._take_namespace()
        publish_control(cfg.namespace, cfg.max_queue_size, cfg.names_per_lane,
                        cfg.on_full == "overwrite")
        log.info("ai-analyticsd %s draining namespace %r (state in %s)", package_version(),
                 cfg.namespace, cfg.state_dir)
        next_scan = next_save = 0.0
        shm = DirectoryWatch(SHM_DIR)
        try:
            while not self.stop_requested.is_set():
                now = time.monotonic()
                if now >= next_scan or shm.changed():  # a new lane: attach it at once
                    self.lanes.scan()
                    next_scan = now + cfg.discovery_interval_seconds
                self.drain()
                self.lanes.finish_drained()
                if now >= next_save:
                    self.save(running=True)
                    next_save = now + cfg.snapshot_interval_seconds
                wait = min(self._next_wait(), next_scan - now, next_save - now)
                self.stop_requested.wait(max(wait, MIN_WAIT_SECONDS))
        finally:
            self._shutdown()

    def request_stop(self) -> None:
        """Safe from a signal handler: it only sets an event."""
        self.stop_requested.set()

    def _shutdown(self) -> None:
        deadline = time.monotonic() + self.config.stop_timeout_seconds
        try:
            self.lanes.scan()
            while time.monotonic() < deadline and self.drain(deadline) > 0:
                pass
            self.lanes.finish_drained()
            self.save(running=False)
        finally:
            withdraw_control(self.config.namespace)
            self.lanes.close()
            if self._lock_fd >= 0:
                os.close(self._lock_fd)
        log.info("stopped: %s", self.lanes.totals().as_dict())

    def _next_wait(self) -> float:
        wait = self.config.batch_timeout_seconds
        for lane in self.lanes:
            if lane.rate > 0:
                room = WAKE_FILL * lane.ident.capacity - lane.reader.pending()
                wait = min(wait, room / lane.rate)
        return wait

    # -- draining --------------------------------------------------------------------------
    def drain(self, deadline: float | None = None) -> int:
        """Drain every lane, batch after batch, until all are empty or time is up."""
        stop_at = deadline or time.monotonic() + self.config.batch_timeout_seconds
        total = 0
        while True:
            taken = self._drain_batch()
            total += taken
            if taken == 0 or time.monotonic() >= stop_at:
                break
        now = time.monotonic()
        for lane in self.lanes:
            elapsed = now - lane.last_drain
            if elapsed > 0:
                lane.rate = 0.5 * lane.rate + 0.5 * (lane.drained_since / elapsed)
            lane.last_drain = now
            lane.drained_since = 0
        return total

    def _drain_batch(self) -> int:
        """One batch: at most batch_size records across lanes, counted and committed."""
        budget = self.config.batch_size
        ops: list[np.ndarray] = []
        models: list[np.ndarray] = []
        for lane in self.lanes:
            if budget <= 0:
                break
            taken = self._drain_lane(lane, budget, ops, models)
            budget -= taken
        taken = self.config.batch_size - budget
        if ops:
            self.counts.add(np.concatenate(ops), np.concatenate(models))
        if taken:
            self.drains += 1
            self.records_drained += taken
            self.last_batch = taken
        return taken

    def _drain_lane(self, lane: TrackedLane, budget: int, ops: list[np.ndarray],
                    models: list[np.ndarray]) -> int:
        reader = lane.reader
        drained = reader.read(budget)
        if drained is None:
            return 0
        # Names are read after the head: a producer publishes a name before any record
        # that uses it, so every name those records need is visible now.
        for name_id, text in reader.new_names():
            reader.global_ids[name_id] = self.counts.name_id(text)
        reader.global_ids[lane.ident.names_capacity + 1] = OTHER_ID
        records = drained.records
        op_slots, model_slots = reader.slots(records)
        ok = valid_mask(records, drained.first_index, op_slots, model_slots, reader.names_ok)
        good = int(np.count_nonzero(ok))
        lane.received += good
        lane.invalid += len(records) - good
        lane.overwritten += drained.lapped
        reader.commit(drained.first_index + len(records), lane.overwritten, lane.invalid)
        lane.drained_since += len(records)
        if good:
            ops.append(reader.global_ids[op_slots[ok]])
            models.append(reader.global_ids[model_slots[ok]])
        return len(records)

    # -- state -----------------------------------------------------------------------------
    def document(self, running: bool) -> dict[str, object]:
        """Everything the daemon knows, as written to the state file and shown by status."""
        now = time.time()
        lanes = list(self.lanes)
        by_state = {s: sum(1 for lane in lanes if lane.state == s) for s in ("live", "retired",
                                                                                 "dead")}
        restore = self.lanes.saved_state()
        restore["overflow_events"] = self.counts.overflow_events
        cfg = self.config
        return {
            "schema_version": SCHEMA_VERSION,
            "written_at": datetime.datetime.fromtimestamp(now, datetime.timezone.utc)
            .isoformat(timespec="milliseconds"),
            "written_unix": now,
            "namespace": cfg.namespace,
            "daemon": {
                "pid": os.getpid(), "version": package_version(), "running": running,
                "started_unix": self.started_unix,
                "uptime_seconds": round(time.monotonic() - self.started, 3),
                "on_full": cfg.on_full, "max_queue_size": cfg.max_queue_size,
                "batch_size": cfg.batch_size, "batch_timeout_seconds": cfg.batch_timeout_seconds,
            },
            "events": self.lanes.totals().as_dict(),
            "lanes": [lane.status() for lane in lanes],
            "lanes_summary": {
                **by_state, "reclaimed": self.lanes.folded_count, "waiting": self.lanes.waiting,
                "rejected_segments": len(self.lanes.rejected),
            },
            "operations": self.counts.rows(),
            "drain": {
                "batches": self.drains, "records": self.records_drained,
                "last_batch": self.last_batch,
                "series_overflow_events": self.counts.overflow_events,
                "state_writes_failed": self.saves_failed,
            },
            "restore": restore,
        }

    def save(self, running: bool) -> bool:
        """Write the state file; unlink reclaimed lanes only once it is safely written."""
        try:
            write_state(self.config.state_dir, self.document(running))
        except StateError as exc:
            self.saves_failed += 1
            if self.saves_failed == 1 or self.saves_failed % 100 == 0:
                log.error("%s (failure %d; draining goes on)", exc, self.saves_failed)
            return False
        self.lanes.unlink_finished()
        return True
