"""Circuit breakers around the daemon's sinks: the state file and the history database.

A sink that fails (a full disk, a state directory that is gone, a database locked by someone
else, a disk that hangs) must not stop the drain loop: events keep being drained and counted
whatever the disk does, and the counts reach the next write that succeeds. Each sink is
a ``GuardedSink``, two small parts put together:

``CircuitBreaker``, the state machine::

    closed ──(failure_threshold consecutive failures)──► open
    open ──(recovery_timeout_seconds later, at the next write)──► half_open: one trial write
    half_open ──(trial succeeds)──► closed        half_open ──(trial fails)──► open again

While open, writes are skipped: not attempted, counted in ``skipped``. With
``enable_circuit_breaker: false`` every write is attempted and still counted (the reported
state is then ``disabled``). A forced call (the daemon's final snapshot at stop) is attempted
even while open, as a trial: skipping it would lose the last counts for nothing. Only the
transitions are logged (open, with the error; half-open; closed again, "recovered after N
failures"), never each failure: a sink that fails every 5 s for a day writes a few lines,
and the counters say the rest.

``BoundedCall``, the time bound (``max_processing_time_seconds``): the write runs in a
worker thread and the caller waits at most that long. A write that overruns counts as a
failure and is left to finish on its own: Python cannot kill a thread, and a thread stuck in
``fsync`` or in SQLite could not be interrupted anyway. That is harmless because a late
finish changes nothing the loop relies on: the state file is replaced atomically
(``os.replace``) by a complete document, and the loop unlinks reclaimed lanes only after a
write that finished in time; history rows are taken from and returned to a ``Backlog`` by the
writer itself, so a late finish neither loses nor duplicates them. What must never happen is
two writes of one sink at once (two threads on one SQLite connection, or an older state
document replacing a newer one): while a write still runs, the next one is not started and
counts as a failure ("still running") so that a hung sink trips its breaker like a failing one.
A thread per write (not a long-lived worker and a queue) keeps that rule trivially true: the
sink is busy exactly while its one thread is alive. Writes happen once per snapshot interval,
so starting a thread (tens of microseconds) costs nothing that matters. The history sink goes
through a thread too, its SQLite connection opened with ``check_same_thread=False`` (one
thread at a time uses it, by the rule above): SQLite's busy timeout would bound only the wait
for a lock, not a disk that stalls.

Everything here is called from the daemon's loop thread, except what a write itself does in
its worker thread; ``Backlog`` is the only state both sides touch, under its own lock.
"""

from __future__ import annotations

import collections
import enum
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Generic, TypeVar

from ai_analytics.core.errors import AnalyticsError, SinkTimeout

if TYPE_CHECKING:
    from ai_analytics.core.config import Config

log = logging.getLogger("ai_analytics.daemon")

CLOSED, OPEN, HALF_OPEN, DISABLED = "closed", "open", "half_open", "disabled"

# The daemon's history backlog: the intervals kept while the history sink is down, flushed
# (oldest first) when it is back. 720 snapshots are an hour at the default 5 s interval; the
# series rows bound the memory whatever the cardinality (a row's window statistics take about
# 3 KB of Python objects, so some 15 MB at most). Past either bound the oldest snapshots go,
# counted in sinks.history.backlog.
HISTORY_BACKLOG_SNAPSHOTS = 720
HISTORY_BACKLOG_ROWS = 5000
# Shortest wait on a write between two calls of the waiting thread's own work.
MIN_MEANWHILE_PAUSE_SECONDS = 0.001

T = TypeVar("T")


class Outcome(enum.Enum):
    """What became of one write."""

    OK = "ok"  # attempted and finished in time without an error
    FAILED = "failed"  # attempted: raised, overran its time bound, or the previous still ran
    SKIPPED = "skipped"  # not attempted: the breaker is open


def describe(exc: BaseException) -> str:
    """The error text kept in ``last_error``: our own errors already name what failed."""
    if isinstance(exc, AnalyticsError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


class CircuitBreaker:
    """The state machine of one sink. Not thread-safe: one caller thread (the loop)."""

    def __init__(self, name: str, failure_threshold: int, recovery_timeout: float, *,
                 enabled: bool = True, clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be at least 1, got {failure_threshold}")
        self.name = name
        self.failure_threshold = failure_threshold
        self.recovery_timeout = recovery_timeout
        self.enabled = enabled
        self._clock = clock
        self._wall_clock = wall_clock
        # closed / open / half_open; a disabled breaker stays closed (it never skips) but
        # still counts, and notes when it would have opened, for the log.
        self._state = CLOSED
        self._opened_at: float | None = None  # clock() when it last opened
        self._opened_unix: float | None = None
        self._reported = False  # this run of failures has been logged (disabled breaker)
        self._skipped_before = 0  # ``skipped`` when this run of failures began
        self.failures = 0  # every failure since the start
        self.consecutive_failures = 0
        self.skipped = 0
        self.last_error: str | None = None

    def configure(self, failure_threshold: int, recovery_timeout: float, enabled: bool) -> None:
        """New settings (a reload); the counters stay. Disabling closes an open breaker (its
        recovery is still logged); a lowered threshold applies from the next failure."""
        self.failure_threshold = failure_threshold
        self.recovery_timeout = recovery_timeout
        if not enabled and self._state != CLOSED:
            self._state = CLOSED
            self._opened_at = self._opened_unix = None
            self._reported = True
        self.enabled = enabled

    @property
    def current(self) -> str:
        return self._state if self.enabled else DISABLED

    def allow(self, force: bool = False) -> bool:
        """May the next write be attempted? False counts it as skipped. Moves open to
        half-open once the recovery timeout has passed (at once when ``force``)."""
        if not self.enabled or self._state == CLOSED:
            return True
        if self._state == OPEN:
            assert self._opened_at is not None
            waited = self._clock() - self._opened_at
            if force or waited >= self.recovery_timeout:
                self._state = HALF_OPEN
                log.info("%s sink: circuit breaker half-open after %.1f s, trying one write",
                         self.name, waited)
                return True
        self.skipped += 1  # open, or half-open with its one trial under way
        return False

    def record_success(self) -> None:
        if self.consecutive_failures and (self._state != CLOSED or self._reported):
            log.warning("%s sink recovered after %d failures (%d writes skipped): circuit "
                        "breaker closed", self.name, self.consecutive_failures,
                        self.skipped - self._skipped_before)
        self._state = CLOSED
        self._opened_at = self._opened_unix = None
        self._reported = False
        self.consecutive_failures = 0

    def record_failure(self, error: str) -> None:
        if not self.consecutive_failures:
            self._skipped_before = self.skipped
        self.failures += 1
        self.consecutive_failures += 1
        self.last_error = error
        if self._state == HALF_OPEN:
            self._open()
            log.warning("%s sink: trial write failed, circuit breaker open again for %.1f s: %s",
                        self.name, self.recovery_timeout, error)
        elif self._state == CLOSED and self.consecutive_failures >= self.failure_threshold:
            if not self.enabled:
                if not self._reported:
                    self._reported = True
                    log.error("%s sink failing: %d consecutive failures (circuit breaker "
                              "disabled: every write is still attempted; draining goes on): %s",
                              self.name, self.consecutive_failures, error)
                return
            self._open()
            log.error("%s sink failing: circuit breaker open after %d consecutive failures, "
                      "writes skipped for %.1f s (draining goes on): %s", self.name,
                      self.consecutive_failures, self.recovery_timeout, error)

    def _open(self) -> None:
        self._state = OPEN
        self._opened_at = self._clock()
        self._opened_unix = self._wall_clock()

    def call(self, write: Callable[[], object], force: bool = False) -> Outcome:
        """Run ``write`` here, now, if the breaker allows; any Exception is a failure."""
        if not self.allow(force):
            return Outcome.SKIPPED
        try:
            write()
        except Exception as exc:
            self.record_failure(describe(exc))
            return Outcome.FAILED
        self.record_success()
        return Outcome.OK

    def state(self) -> dict[str, object]:
        """JSON-ready: the state, the counters, the last error, when it opened and when the
        next trial is due (seconds from now; None unless open)."""
        # Other threads may ask (get_performance_snapshot): each attribute is read once.
        retry_in, opened_at = None, self._opened_at
        if self.enabled and self._state == OPEN and opened_at is not None:
            retry_in = round(max(0.0, opened_at + self.recovery_timeout - self._clock()), 3)
        return {
            "state": self.current,
            "failures": self.failures,
            "consecutive_failures": self.consecutive_failures,
            "skipped": self.skipped,
            "last_error": self.last_error,
            "opened_unix": self._opened_unix if self.enabled else None,
            "retry_in_seconds": retry_in,
        }


class BoundedCall:
    """Runs one write at a time in its own thread and waits for it at most ``timeout``."""

    def __init__(self, name: str, timeout: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.timeout = timeout
        self._clock = clock
        self._thread: threading.Thread | None = None
        self._started = 0.0

    def running_seconds(self) -> float | None:
        """How long the write in flight has run (one that overran); None when idle."""
        thread = self._thread
        if thread is None or not thread.is_alive():
            return None
        return self._clock() - self._started

    def __call__(self, write: Callable[[], object],
                 meanwhile: Callable[[], float] | None = None) -> None:
        """Run ``write``; re-raise what it raised; SinkTimeout if it overruns or if the
        previous write still runs (then ``write`` is not started). ``meanwhile``: work for the
        waiting thread (the drain loop's draining), called again after the number of seconds
        it returns, until the write ends."""
        running = self.running_seconds()
        if running is not None:
            raise SinkTimeout(self.name, running, self.timeout, running=True)
        raised: list[BaseException] = []  # this write's own: a late one cannot mix in

        def target() -> None:
            # Nothing may escape a thread (an unhandled exception would only be printed):
            # the error is kept for the caller, who reads it after join().
            try:
                write()
            except BaseException as exc:
                raised.append(exc)

        thread = threading.Thread(target=target, name=f"ai-analytics-{self.name}-write",
                                  daemon=True)  # a hung write must not hold up the exit
        self._thread, self._started = thread, self._clock()
        thread.start()
        if meanwhile is None:
            thread.join(self.timeout)
        else:
            deadline = time.monotonic() + self.timeout
            while thread.is_alive() and (left := deadline - time.monotonic()) > 0:
                thread.join(min(left, max(meanwhile(), MIN_MEANWHILE_PAUSE_SECONDS)))
        if thread.is_alive():
            raise SinkTimeout(self.name, self._clock() - self._started, self.timeout,
                              running=False)
        if raised:
            raise raised[0]


class GuardedSink:
    """A sink behind its breaker, each write bounded in time."""

    def __init__(self, name: str, failure_threshold: int, recovery_timeout: float,
                 max_processing_time: float, *, enabled: bool = True,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.name = name
        self.breaker = CircuitBreaker(name, failure_threshold, recovery_timeout,
                                      enabled=enabled, clock=clock, wall_clock=wall_clock)
        self.bounded = BoundedCall(name, max_processing_time, clock)

    @classmethod
    def from_config(cls, name: str, config: Config) -> GuardedSink:
        return cls(name, config.failure_threshold, config.recovery_timeout_seconds,
                   config.max_processing_time_seconds, enabled=config.enable_circuit_breaker)

    def apply_config(self, config: Config) -> None:
        """Take the breaker's settings from a reloaded config; state and counters stay."""
        self.breaker.configure(config.failure_threshold, config.recovery_timeout_seconds,
                               config.enable_circuit_breaker)
        self.bounded.timeout = config.max_processing_time_seconds

    def write(self, write: Callable[[], object], force: bool = False,
              meanwhile: Callable[[], float] | None = None) -> Outcome:
        """Attempt ``write`` unless the breaker is open (SKIPPED); OK or FAILED otherwise.
        ``meanwhile``: see ``BoundedCall``."""
        return self.breaker.call(lambda: self.bounded(write, meanwhile), force)

    def state(self) -> dict[str, object]:
        running = self.bounded.running_seconds()
        return {**self.breaker.state(),
                "write_running_seconds": None if running is None else round(running, 3)}


class Backlog(Generic[T]):
    """What a sink has not stored yet, oldest first, within ``max_items`` and ``max_weight``
    (past either, the oldest go and are counted in ``dropped`` / ``dropped_weight``; the
    newest item always stays).

    The loop thread adds; ``flush``, run by one writer thread at a time, takes everything,
    writes it in order and puts back what it could not write. Taking and putting back are the
    writer's own doing, under the lock, so a write that overran its time bound and finishes
    late still leaves the backlog exact: no item lost, none written twice.
    """

    def __init__(self, max_items: int, max_weight: int,
                 keep_on: tuple[type[BaseException], ...] = (OSError,)) -> None:
        self.max_items = max_items
        self.max_weight = max_weight
        self.keep_on = keep_on  # errors that mean "the sink is down, retry later"
        self._lock = threading.Lock()
        self._items: collections.deque[tuple[int, T]] = collections.deque()
        self._weight = 0
        self._in_flight = (0, 0)  # (items, weight) taken by a flush under way
        self.dropped = 0
        self.dropped_weight = 0

    def add(self, item: T, weight: int = 0) -> None:
        with self._lock:
            self._items.append((weight, item))
            self._weight += weight
            self._trim()

    def _trim(self) -> None:
        while len(self._items) > 1 and (len(self._items) > self.max_items
                                        or self._weight > self.max_weight):
            weight, _ = self._items.popleft()
            self._weight -= weight
            self.dropped += 1
            self.dropped_weight += weight

    def flush(self, write: Callable[[T], object]) -> int:
        """Write every item, oldest first, and return how many were written. On an error in
        ``keep_on`` the unwritten items go back, in front of any added meanwhile; on any other
        error (the item itself is bad: it would fail for ever) that item is dropped and
        counted. Either way the error is re-raised: the write failed."""
        with self._lock:
            batch = list(self._items)
            self._items.clear()
            self._in_flight = (len(batch), self._weight)
            self._weight = 0
        done = 0
        try:
            for _, item in batch:
                write(item)
                done += 1
        except self.keep_on:
            raise
        except Exception:
            weight, _ = batch[done]
            with self._lock:
                self.dropped += 1
                self.dropped_weight += weight
            done += 1
            raise
        finally:
            rest = batch[done:]
            with self._lock:
                self._items.extendleft(reversed(rest))
                self._weight += sum(weight for weight, _ in rest)
                self._in_flight = (0, 0)
                self._trim()
        return done

    def counts(self) -> dict[str, int]:
        """JSON-ready: items and weight waiting (a flush under way included), and dropped."""
        with self._lock:
            return {"items": len(self._items) + self._in_flight[0],
                    "weight": self._weight + self._in_flight[1],
                    "dropped": self.dropped, "dropped_weight": self.dropped_weight}

    def __len__(self) -> int:
        with self._lock:
            return len(self._items) + self._in_flight[0]


__all__ = [
    "CLOSED", "DISABLED", "HALF_OPEN", "HISTORY_BACKLOG_ROWS", "HISTORY_BACKLOG_SNAPSHOTS",
    "OPEN", "Backlog", "BoundedCall", "CircuitBreaker", "GuardedSink", "Outcome",
    "describe",
]
