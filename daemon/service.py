"""The daemon: discover lanes, drain them in batches, count, save state, stop on time.

The drain loop, in ``run``, scans, drains and counts; at each snapshot interval it takes a
``Capture`` (cheap: the statistics' ``capture()`` and the lanes' counters) and hands it to the
snapshot thread, which builds the document, runs the insights, publishes it and writes the
sinks (docs/architecture.md, "Threads in the daemon"). The loop never waits for that thread.
It sleeps in ``select`` on the stop request's pipe (``core/wakeup.py``: a signal handler only
sets a flag and writes a byte, no lock) and on the segment directory's inotify descriptor, so
a stop, a reload or a new lane wakes it at once; the loop has no other exit than a stop
request. The wait adapts: up to ``batch_timeout_seconds`` when lanes are quiet, shorter when
a lane fills fast enough to reach half its capacity before then.
"""

from __future__ import annotations

import fcntl
import logging
import math
import os
import time
from collections.abc import Callable
from functools import partial

from ai_analytics.client import _layout
from ai_analytics.client._segments import lock_path
from ai_analytics.core.config import Config, Reconfigurable, log_level_number
from ai_analytics.core.document import SnapshotDocument
from ai_analytics.core.errors import (
    AlreadyRunning,
    BindError,
    ConfigError,
    StateError,
)
from ai_analytics.core.outcomes import RATED
from ai_analytics.core.state import document_json, read_state, remove_unfinished_writes
from ai_analytics.core.version import package_version
from ai_analytics.core.wakeup import StopRequest
from ai_analytics.daemon.gc_tuning import collect_between_passes
from ai_analytics.daemon.http.metrics import render as render_metrics
from ai_analytics.daemon.http.series_api import SeriesApi
from ai_analytics.daemon.http.server import StatusServer
from ai_analytics.daemon.ingest.control import publish_control, remove_foreign, withdraw_control
from ai_analytics.daemon.ingest.drain import Drainer
from ai_analytics.daemon.ingest.gate import DrainGate
from ai_analytics.daemon.ingest.lanes import SNAPSHOT_WAKE_FILL, WAKE_FILL, LaneSet
from ai_analytics.daemon.ingest.segment_dir import check_usable, start_warning
from ai_analytics.daemon.ingest.shm_watch import ShmWatch
from ai_analytics.daemon.insights import Insights
from ai_analytics.daemon.malloc_tuning import give_back_free_heap
from ai_analytics.daemon.reload import NEEDS_RESTART, NEW_LANES_ONLY, ReloadPlan, plan_reload
from ai_analytics.daemon.resources import ResourceSampler
from ai_analytics.daemon.sinks.writer import Sinks
from ai_analytics.daemon.snapshot.builder import build_document
from ai_analytics.daemon.snapshot.capture import Capture, take
from ai_analytics.daemon.snapshot.forked import Forked
from ai_analytics.daemon.snapshot.worker import SnapshotThread
from ai_analytics.daemon.stats.caches import CacheStates
from ai_analytics.daemon.stats.rates import CounterRates
from ai_analytics.daemon.stats.statistics import Statistics

log = logging.getLogger("ai_analytics.daemon")

MIN_WAIT_SECONDS = 0.001
# A snapshot that fell due while the previous one was still being built is taken as soon as
# the loop sees the snapshot thread idle: it looks this often meanwhile.
SNAPSHOT_RETRY_SECONDS = 0.05
# A segment seen before its creator finished it is looked at again this soon (it takes the
# creator well under a millisecond), for as long as it is younger than lanes.SETTLE_SECONDS.
SETTLE_RESCAN_SECONDS = 0.002
# A snapshot's child computes in 0.3-0.5 s of CPU at 500 busy series. One that neither runs
# nor waits for a CPU this long waits for a lock it will never get: it is killed and its work
# done on the snapshot thread; so is one still at it after the limit.
STATS_CHILD_STALL_SECONDS = 20.0
STATS_CHILD_LIMIT_SECONDS = 600.0
# snapshot_child "auto": computed in a child once the last computation took more CPU than
# this share of the time the fastest lane takes to fill (beside it, the drain's passes run
# about twice as long).
AUTO_CHILD_SHARE = 0.25
# A step of snapshot work waits at most this long for a drain pass to end.
GATE_WAIT_SECONDS = 0.05


def _no_notify(_state: str) -> bool:
    return False




class Daemon:
    """ai-analyticsd: one namespace's drain loop and everything it feeds.

    The constructor resumes from the state file and opens the history database; ``run``
    takes the namespace, drains until ``request_stop``, then drains what is left and saves;
    ``close`` (or leaving a ``with`` block) releases what is open, and ``run`` does it itself
    as it ends.

    Threads: the lanes, statistics, caches, rates and drainer belong to the thread that
    calls ``run`` (the loop); the insights and the sinks to the snapshot thread while it
    runs (``run`` starts it, and the loop hands it captures: ``_snapshot``). Safe from any
    thread and from a signal handler: ``request_stop``, ``request_reload`` (each an attribute
    store and a wake-up, no lock). Safe to read from any thread: ``health()`` and
    ``last_document``, the latest finished snapshot, published by one reference store and
    never changed afterwards (the HTTP endpoint and embedded mode read it).
    ``get_performance_snapshot``, ``document`` and ``save`` build a document from the live
    parts: the loop's thread only, or a daemon that does not run.
    """

    def __init__(self, config: Config, clock: Callable[[], float] = time.monotonic) -> None:
        check_usable(config.segment_dir)
        self.config = config
        self.clock = clock
        self.stop_requested = StopRequest()
        self.started_unix = time.time()
        self.started = clock()
        self.stats = Statistics(config.max_operations, config.max_models, config.max_series,
                                clock)
        self.caches = CacheStates(config.max_operations)
        self.outcome_rates = CounterRates(RATED)
        self.sinks = Sinks(config)
        self.resources = ResourceSampler(config, clock)
        self._lock_fd = -1
        self.lanes = self._restore(read_state(config.state_dir))
        self.drainer = Drainer(self.lanes, self.stats, self.caches, config.batch_size)
        self.last_document: SnapshotDocument | None = None
        self.insights = Insights(config)
        # A snapshot's statistics may be computed in a forked child, off this process's GIL
        # (snapshot_child).
        self.forked = Forked(STATS_CHILD_STALL_SECONDS, STATS_CHILD_LIMIT_SECONDS,
                             config.snapshot_child)
        self.gate = DrainGate(GATE_WAIT_SECONDS)
        self.http: StatusServer | None = None
        self.last_iteration: float | None = None  # monotonic; written by the loop thread only
        self._snapshots: SnapshotThread[Capture, bool] | None = None  # while run() runs
        self.snapshots_delayed = 0  # due while the previous one was being built
        self._collect_due = False  # set by the snapshot thread, cleared by the loop
        self._parts_config = config  # the config that the snapshot thread's parts have
        self._closed = False
        self._stop_budget = math.inf  # request_stop may narrow stop_timeout_seconds

    # -- start -----------------------------------------------------------------------------
    def _restore(self, document: SnapshotDocument | None) -> LaneSet:
        """The lanes and the all-time statistics, resumed from the last state file."""
        if document is None:
            return LaneSet.from_config(self.config)
        where = self.config.state_dir
        try:
            owner = document["namespace"]
            if owner != self.config.namespace:
                raise StateError(
                    f"the state file in {where} belongs to namespace {owner!r}, not "
                    f"{self.config.namespace!r}: give each namespace its own state_dir")
            restore = document["restore"]
            if not isinstance(restore, dict):
                raise TypeError(f"restore is a {type(restore).__name__}, not an object")
            lanes = LaneSet.from_config(self.config, restore)
            self.stats.restore(document["operations"], restore["cardinality_overflow"])
        except (KeyError, TypeError, ValueError) as exc:
            raise StateError(f"the state file in {where} is damaged ({exc!r}); move it aside "
                             "to start counting from zero") from None
        log.info("resuming from the last state: %s", document.get("events"))
        return lanes

    def _take_namespace(self) -> None:
        """One daemon per namespace: a second would break the single-consumer rule. The lock
        file must be this daemon's uid's or root's: one made first by another user (to keep
        the daemon out, or to let it in under a lock it controls) is removed, or refused."""
        path = lock_path(self.config.namespace, self.config.segment_dir)
        try:
            remove_foreign(path, "namespace lock")
        except OSError as exc:
            raise AlreadyRunning(f"cannot take namespace {self.config.namespace!r}: "
                                 f"{exc.strerror}") from None
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            raise AlreadyRunning(
                f"another ai-analyticsd (pid {holder} in its PID namespace) drains namespace "
                f"{self.config.namespace!r}"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    # -- the loop --------------------------------------------------------------------------
    def run(self, reload_config: Callable[[], Config] | None = None,
            notify: Callable[[str], bool] | None = None,
            watchdog_seconds: float | None = None) -> None:
        """Drain until ``request_stop``; then drain what is left and save, within the deadline.

        ``reload_config`` reads the config again when ``request_reload`` asks (without it, a
        reload request is logged and ignored). ``notify`` speaks systemd's notify protocol
        (ai-analyticsd passes ``systemd_notify.notify``; an embedded daemon gives none: it must
        not speak for its host process): READY=1 once the namespace is ours, HTTP listens and
        the first scan has attached the lanes; WATCHDOG=1 from the loop itself every
        ``watchdog_seconds / 2``, so that a hung loop is restarted; RELOADING=1 and READY=1
        around a reload; a STATUS= line after every snapshot; STOPPING=1 when the stop begins.
        """
        self._notify = notify or _no_notify
        cfg = self.config
        try:
            self._take_namespace()
        except AlreadyRunning:
            self.close()
            raise
        if removed := remove_unfinished_writes(cfg.state_dir):
            log.info("removed %d temporary files of state writes a killed daemon left in %s",
                     removed, cfg.state_dir)
        if cfg.http_enabled:
            # After the namespace: a second daemon reports "already running", not "port in
            # use"; before the loop's try: a bind failure must not run the final drain.
            self.http = StatusServer(cfg.http_host, cfg.http_port, lambda: self.last_document,
                                     self.health,
                                     metrics=partial(render_metrics,
                                                     between=self.gate.wait),
                                     series=SeriesApi(cfg.state_dir,
                                                      cfg.snapshot_interval_seconds),
                                     pages_beyond_loopback=cfg.http_pages_beyond_loopback)
            try:
                self.http.start()
            except BindError:
                self.close()
                raise
        self._publish_control()
        if warning := start_warning(cfg.segment_dir, cfg.expected_lanes, cfg.max_queue_size,
                                    cfg.names_per_lane):
            log.warning("%s", warning)
        self.resources.start()
        self._snapshots = SnapshotThread(self._snapshot_job)
        log.info("ai-analyticsd %s draining namespace %r (state in %s)", package_version(),
                 cfg.namespace, cfg.state_dir)
        next_scan = next_save = 0.0
        overdue = False  # the due snapshot waits for the previous one (counted once)
        beat = watchdog_seconds / 2 if watchdog_seconds else math.inf
        next_beat = 0.0 if watchdog_seconds else math.inf
        # Watching before the first scan: a lane made during that scan is seen.
        shm = ShmWatch(cfg.segment_dir, self.lanes.prefix)
        try:
            self._scan()
            next_scan = time.monotonic() + cfg.discovery_interval_seconds
            self._notify("READY=1")  # the namespace is ours, HTTP listens, lanes are attached
            while not self.stop_requested.is_set():
                now = time.monotonic()
                if self.stop_requested.take_reload():
                    self._reload(reload_config)
                    cfg = self.config
                    next_scan = next_save = now  # the new intervals count from now
                if now >= next_scan or shm.changed():  # a new lane: attach it at once
                    self._scan()
                    settling = self.lanes.settling(now)
                    next_scan = now + (SETTLE_RESCAN_SECONDS if settling
                                       else cfg.discovery_interval_seconds)
                with self.gate.passing():
                    self.drain()
                if self._collect_due:  # right after a pass: the lanes are as empty as can be
                    self._collect_due = False
                    collect_between_passes()
                self.outcome_rates.observe(int(self.clock()), self.lanes.totals().as_dict())
                self._finish_drained()
                self._take_snapshot_result()
                if now >= next_save:
                    if self._submit_snapshot():
                        overdue = False
                        next_save = now + cfg.snapshot_interval_seconds
                        self._notify(self._status_line())
                    else:
                        if not overdue:
                            overdue = True
                            self.snapshots_delayed += 1
                        next_save = now + SNAPSHOT_RETRY_SECONDS
                if now >= next_beat:  # sent by the loop itself: a hung loop stops the beat
                    self._notify("WATCHDOG=1")
                    next_beat = now + beat
                wait = min(self._next_wait(), next_scan - now, next_save - now, next_beat - now)
                self.last_iteration = time.monotonic()
                self.stop_requested.wait(max(wait, MIN_WAIT_SECONDS), also=shm.fileno())
        finally:
            shm.close()
            self._shutdown()

    def health(self) -> tuple[bool, str]:
        """For /healthz: is the drain loop going round? (One round drains for at most
        batch_timeout_seconds and takes a snapshot's capture; the floor of 2 s leaves room
        for a loaded machine.)"""
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

    def request_stop(self, drain_seconds: float | None = None) -> None:
        """Ask the loop to stop: a final drain and a final snapshot, all within
        ``stop_timeout_seconds``, or within ``drain_seconds`` when that is sooner (embedded
        mode stops within its caller's timeout). Safe from a signal handler and from other
        threads: one attribute store and a wake-up, no lock involved."""
        if drain_seconds is not None:
            self._stop_budget = drain_seconds  # read by the loop after it sees the request
        self.stop_requested.set()

    def request_reload(self) -> None:
        """Ask the loop to read the config again (SIGHUP). Safe from a signal handler and from
        other threads: it only records the request and wakes the loop, no lock involved."""
        self.stop_requested.request_reload()

    def reload(self, config: Config) -> ReloadPlan:
        """Apply a validated config while running; no counter or statistic is reset. Settings
        that cannot change at run time (``reload.NEEDS_RESTART``) are logged and keep their
        running value; the control segment is republished for settings of new lanes."""
        running = self.config
        plan = plan_reload(running, config)
        for key in plan.needs_restart:
            log.warning("reload: %s changed to %r, which needs a restart (%s); it stays %r",
                        key, getattr(config, key), NEEDS_RESTART[key], getattr(running, key))
        cfg = self.config = plan.config
        changed = set(plan.changed)
        # Every part that keeps settings of its own takes them the same way; their state
        # (open findings, breaker counters, attached lanes) stays. Everything else reads
        # self.config when it needs it. The snapshot thread's parts take it now if that
        # thread is idle, else from the next capture, which carries the config.
        for part in self._configured_parts():
            part.apply_config(cfg)
        if self._snapshots is None or not self._snapshots.busy:
            self._apply_snapshot_config(cfg)
        if "log_level" in changed:
            logging.getLogger().setLevel(log_level_number(cfg))
        if changed & set(NEW_LANES_ONLY) and self._lock_fd >= 0:  # run() published it
            self._publish_control()
            log.info("reload: new lanes get %s; lanes that exist keep theirs",
                     ", ".join(f"{k}={getattr(cfg, k)!r}" for k in NEW_LANES_ONLY))
        log.info("config reloaded: %s", ", ".join(
            f"{k}={getattr(cfg, k)!r}" for k in plan.changed) or "nothing changed")
        return plan

    def _configured_parts(self) -> tuple[Reconfigurable, ...]:
        """The loop's parts that keep settings of their own (the snapshot thread's:
        ``_apply_snapshot_config``)."""
        return (self.drainer, self.resources, self.lanes)

    def _apply_snapshot_config(self, config: Config) -> None:
        """On the thread that owns the insights and the sinks: the snapshot thread, or the
        loop while that thread is idle."""
        if config is not self._parts_config:
            self._parts_config = config
            for part in (self.insights, self.sinks, self.forked):
                part.apply_config(config)

    def _reload(self, load: Callable[[], Config] | None) -> None:
        """The loop's side of ``request_reload``: read and validate the config, then apply it
        or keep the running one; systemd hears RELOADING=1 before and READY=1 after."""
        self._notify(f"RELOADING=1\nMONOTONIC_USEC={time.monotonic_ns() // 1000}")
        try:
            if load is None:
                log.warning("reload requested, but this daemon has no config to read again")
            else:
                self.reload(load())
        except ConfigError as exc:
            log.error("reload refused, the running config stays: %s", exc)
        finally:
            self._notify("READY=1")

    def _publish_control(self) -> None:
        """Tell producers the shape of new lanes; where that fails, they use the defaults
        (the daemon drains their lanes whatever their shape)."""
        cfg = self.config
        try:
            publish_control(cfg.segment_dir, cfg.namespace, cfg.max_queue_size,
                            cfg.names_per_lane, cfg.on_full == "overwrite")
        except OSError as exc:
            log.error("cannot publish the control segment: %s; new lanes get the defaults "
                      "(max_queue_size %d, names_per_lane %d, on_full drop)",
                      exc.strerror or exc, _layout.DEFAULT_CAPACITY,
                      _layout.DEFAULT_NAMES_CAPACITY)

    def _scan(self) -> None:
        self.lanes.scan()
        self.resources.set_worker_pids(
            {lane.visible_pid for lane in self.lanes
             if lane.state == "live" and lane.visible_pid is not None})

    def _status_line(self) -> str:
        """systemd's STATUS= (shown by ``systemctl status``): the counts so far."""
        events = self.lanes.totals()
        return (f"STATUS=namespace {self.config.namespace}: {len(self.lanes)} lanes; received "
                f"{events.received}, dropped {events.dropped}, overwritten "
                f"{events.overwritten}, invalid {events.invalid}")

    def _shutdown(self) -> None:
        self._notify("STOPPING=1")
        budget = min(self.config.stop_timeout_seconds, self._stop_budget)
        deadline = time.monotonic() + budget
        # Helper threads never hold up the stop: at most a second each, then left behind.
        if self.http is not None:
            self.http.stop(min(1.0, budget / 4))
        self.resources.stop(min(1.0, budget / 4))
        try:
            # The snapshot under way finishes first (its sink writes are bounded by
            # max_processing_time_seconds): the final one owns the sinks and the insights.
            if self._snapshots is not None and not self._snapshots.close(
                    max(0.1, (deadline - time.monotonic()) / 2)):
                log.warning("the snapshot under way has not finished; the final snapshot is "
                            "taken meanwhile")
            self._take_snapshot_result()
            # A reload the snapshot thread had not taken yet: before the final writes' limit.
            self._apply_snapshot_config(self.config)
            self.lanes.scan()
            while time.monotonic() < deadline and self.drain(deadline) > 0:
                pass
            self._finish_drained()
            self.sinks.limit_final_writes(max(0.1, deadline - time.monotonic()))
            self.save(running=False)
        finally:
            totals = self.lanes.totals().as_dict()
            withdraw_control(self.config.segment_dir, self.config.namespace)
            self.close()
        log.info("stopped: %s", totals)

    def close(self) -> None:
        """Release what the constructor and ``run`` opened: the history database, the lanes'
        mappings, the wake-up pipe and the namespace lock. ``run`` does it as it ends; a
        Daemon that never runs (tests, benchmarks) is closed by its owner, or used as a
        context manager. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.sinks.close()
        self.lanes.close()
        self.stop_requested.close()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def __enter__(self) -> Daemon:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _finish_drained(self) -> None:
        for lane in self.lanes.finish_drained():
            self.caches.forget_lane(lane.ident.name)

    def _next_wait(self) -> float:
        busy = self._snapshots is not None and self._snapshots.busy
        return self.lanes.time_to_drain(self.config.batch_timeout_seconds, MIN_WAIT_SECONDS,
                                        SNAPSHOT_WAKE_FILL if busy else WAKE_FILL)

    def drain(self, deadline: float | None = None) -> int:
        """Drain every lane until all are empty or time is up (batch_timeout by default)."""
        return self.drainer.drain(deadline or time.monotonic() + self.config.batch_timeout_seconds)

    # -- state -----------------------------------------------------------------------------
    def document(self, running: bool) -> SnapshotDocument:
        """Everything the daemon knows, as written to the state file and shown by status
        (without the findings); it leaves the history interval open."""
        return build_document(take(self, running, self.snapshots_delayed, close=False),
                              self.resources, self.sinks, self.forked)

    def get_performance_snapshot(self) -> SnapshotDocument:
        """The snapshot document, computed now (the structure docs/snapshot.md describes),
        with the findings and recommendations of the last snapshot."""
        document = self.document(running=not self.stop_requested.is_set())
        last = self.last_document
        document["findings"] = last.get("findings", []) if last else []
        document["recommendations"] = last.get("recommendations", []) if last else []
        return document

    def save(self, running: bool) -> bool:
        """Make a snapshot here and now, as the snapshot thread would, and unlink the
        reclaimed lanes it counts once its state file is safely written. The final snapshot
        (not ``running``) is attempted even while a breaker is open. For the loop's thread
        once the snapshot thread is gone (the final snapshot), or a daemon that does not run."""
        saved = self._snapshot(take(self, running, self.snapshots_delayed))
        if saved:
            self.lanes.unlink_finished()
        return saved

    def _submit_snapshot(self) -> bool:
        """The loop's part of a snapshot: a capture, handed to the snapshot thread; False
        (nothing taken) while that thread still builds the previous one."""
        assert self._snapshots is not None
        if self._snapshots.busy:
            return False
        # Only the loop submits, so an idle thread stays idle until this capture: it is
        # taken (and the statistics' interval closed) only when it will be built.
        return self._snapshots.submit(take(self, True, self.snapshots_delayed))

    def _take_snapshot_result(self) -> None:
        """The loop's side of a finished snapshot: unlink the reclaimed lanes its state file
        counts, once that file is written in time. A write that overran and finishes later
        wrote a document without the lanes folded since, and unlinks nothing; the lanes stay
        in the next captures until one is saved."""
        if self._snapshots is None or (done := self._snapshots.take_result()) is None:
            return
        capture, saved = done
        if saved:
            self.lanes.unlink_finished(capture.finished)

    def _snapshot_job(self, capture: Capture) -> bool:
        """The snapshot thread's job: the snapshot; then the loop is asked for the full
        garbage collection that its objects call for (``gc_tuning``)."""
        written = self._snapshot(capture)
        self._collect_due = True
        return written

    def _snapshot(self, capture: Capture) -> bool:
        """A snapshot from its capture: build the document, run the insights, publish it,
        hand it and the interval's history rows to the sinks; True when the state file was
        written in time. On the snapshot thread (or by ``save``): it reads the capture, the
        resource samples, and the insights and sinks, which are that thread's."""
        self._apply_snapshot_config(capture.config)
        step = self.gate.wait
        capture.stats.adopt(self.forked.run(capture.stats.computed, step,
                                            capture.fill_seconds * AUTO_CHILD_SHARE))
        step()
        document = build_document(capture, self.resources, self.sinks, self.forked)
        step()
        document.update(self.insights.evaluate(document, capture.written_unix))
        step()
        # One encoding for the state file and the /status body.
        encoded = document_json(document)
        step()
        if self.http is not None:  # /status and /metrics rendered here, once per document
            self.http.publish(document, status_body=encoded)
        self.last_document = document  # read by other threads (embedded mode, HTTP)
        step()
        span, rows = capture.stats.interval()
        interval = (capture.written_unix, span, document["events"], rows)
        written = self.sinks.write(document, interval, final=not capture.running,
                                   meanwhile=None, encoded=encoded)
        del rows, interval, encoded  # dropped before the trim (the document lives on)
        give_back_free_heap()
        return written
