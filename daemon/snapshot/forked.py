"""The heavy, pure part of a snapshot, computed in a forked child process.

Why a process: the windows, the interval and the since-start counts of a capture are numpy and
Python work (about 250 ms at 500 busy series). On the snapshot thread it holds the GIL against
the drain loop, whose passes then take twice their time and let the busiest lanes fill: at
1 M events/s over 500 series, 0.14-0.29 % of the events were dropped that way in 60 s runs,
none with the work in a child (bench/endtoend.py). A child process has its own interpreter
and lock, so the drain never waits for it. Where the work is light beside the time the lanes
take to fill, the fork is not worth its cost: ``mode`` and ``run``'s budget say where. It runs at
the lowest CPU priority (nice 19), so that it does not take the CPU from the drain thread
either, nor from the node's workers: on a busy node it takes longer and the snapshot comes
later (counted in ``drain.snapshots_delayed``), which is the right trade for a sidecar.

Why ``fork``: the capture is immutable and already in memory, so the child has it at the cost
of copying page tables (a few milliseconds), where sending it to a standing worker would mean
pickling thousands of arrays on this side. The child computes, writes its result pickled to a
pipe and leaves with ``os._exit`` (no atexit handler, finalizer or buffer flush runs there).

Forking a process with threads is safe only for a child that needs no lock another thread may
hold. This child runs numpy and plain Python over objects nobody else changes, pickles and
writes to a pipe it made: no logging, no import, no file, socket or database it inherited, and
no garbage collection (a finalizer could touch those). Should it hang (neither run nor wait
for a CPU for ``stalled_after`` seconds) or fail all the same, it is killed and the work is
done on this thread, as it is wherever
fork is not available: the document is never lost, only the drain may pay for it. Failures
are counted in ``failures`` and logged at the first of a run; a hung child turns forking off
for the rest of the run.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import gc
import io
import logging
import math
import os
import pickle
import select
import signal
import struct
import time
import traceback
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import psutil

from ai_analytics.core.config import Config, SnapshotChild
from ai_analytics.daemon.ingest.gate import no_wait

log = logging.getLogger("ai_analytics.daemon")

T = TypeVar("T")

# Read from the child's pipe this much at a time (a big pipe: fewer wake-ups).
READ_BYTES = 1 << 20
# While no result comes, look this often whether the child still runs.
POLL_SECONDS = 1.0
# Lists longer than this go back in frames of this many items (a frame's loads: ~1 ms).
CHUNK_ITEMS = 32
FRAME_HEAD = struct.Struct("<iQ")
# The child yields the CPU to the drain thread (and to the workers) whenever they want it.
CHILD_NICENESS = 19
# Python 3.12+ warns at every fork of a process with threads; this child is built for that
# case (see above), so the warning is not for it.
FORK_WARNING = r"This process \(pid=\d+\) is multi-threaded"

warnings.filterwarnings("ignore", message=FORK_WARNING, category=DeprecationWarning,
                        module=__name__)


class ChildFailed(Exception):
    """The child gave no result: why, in words."""


class ChildHung(ChildFailed):
    """The child stood still or ran past its limit (and was killed)."""


class Forked:
    """Runs ``work()`` in a forked child and returns its (pickled) result, or runs it here:
    where there is no ``fork`` or a child hung (``enabled``), when a child is not asked for
    (``mode``, ``run``'s budget), or the child fails. One call at a time (the snapshot
    thread)."""

    def __init__(self, stalled_after: float, limit: float, mode: SnapshotChild) -> None:
        self.enabled = hasattr(os, "fork")
        self.stalled_after = stalled_after
        self.limit = limit
        self.mode = mode
        self.last_cost = 0.0  # CPU seconds the work took last time, wherever it ran
        self.in_child = 0  # results that came from a child
        self.failures = 0  # children that gave none (the work was then done here)
        self._failing = False

    def apply_config(self, config: Config) -> None:
        self.mode = config.snapshot_child

    def run(self, work: Callable[[], T], between: Callable[[], None] = no_wait,
            budget: float = math.inf) -> T:
        """``work()``, computed in a child when forks are allowed (``enabled``) and asked
        for: ``mode`` "always", or "auto" and the last run took more than ``budget`` seconds
        of CPU (a child's own, fork and page faults left out); else here. ``between`` is
        called before each piece of a child's result is unpickled here (a chance to let
        other threads run)."""
        if self.enabled and (self.mode == "always"
                             or (self.mode == "auto" and self.last_cost > budget)):
            try:
                result: T = self._in_child(work, between)
            except ChildHung as exc:
                # A child can hang only on a lock it inherited held: that may come again at
                # any fork, so no more forks in this run.
                self.failures += 1
                self.enabled = False
                log.error("a snapshot's child process %s; the statistics are computed on the "
                          "snapshot thread from now on, which may delay the drain", exc)
            except (ChildFailed, OSError) as exc:
                self.failures += 1
                if not self._failing:
                    log.warning("the snapshot's statistics could not be computed in a child "
                                "process (%s); computed on the snapshot thread instead, which "
                                "may delay the drain", exc)
                self._failing = True
            else:
                self.in_child += 1
                self._failing = False
                return result
        started = time.thread_time()
        result = work()
        self.last_cost = time.thread_time() - started
        return result

    def _in_child(self, work: Callable[[], T], between: Callable[[], None]) -> T:
        read_end, write_end = os.pipe()
        with contextlib.suppress(OSError):  # beyond /proc/sys/fs/pipe-max-size: the default
            fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, READ_BYTES)
        try:
            pid = os.fork()
        except OSError:
            os.close(read_end)
            os.close(write_end)
            raise
        if pid == 0:  # pragma: no cover  (the child: it never returns)
            os.close(read_end)
            _child(work, write_end)
        os.close(write_end)
        try:
            data = _read_all(read_end, pid, self.stalled_after, self.limit)
        except ChildFailed:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            raise
        finally:
            os.close(read_end)
            _, status, usage = os.wait4(pid, 0)
            self.last_cost = usage.ru_utime
        code = os.waitstatus_to_exitcode(status)
        if code != 0 or not data:
            raise ChildFailed(_said(data) or (f"it was killed by signal {-code}" if code < 0
                                              else f"it exited with code {code}, no result"))
        ok, value = _loads(data, between)
        if not ok:
            raise ChildFailed(value)
        return value


def _child(work: Callable[[], T], out: int) -> None:  # pragma: no cover  (runs in the child)
    code = 1  # unless the result is written
    try:
        gc.disable()
        os.nice(CHILD_NICENESS)
        for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):  # the parent's are not
            signal.signal(number, signal.SIG_DFL)                       # for this process
        try:
            data, ok = _dumps((True, work())), True
        except Exception:
            data, ok = _dumps((False, traceback.format_exc(limit=8))), False
        view = memoryview(data)
        while view:
            view = view[os.write(out, view):]
        code = 0 if ok else 1
    finally:
        os._exit(code)


def _read_all(fd: int, pid: int, stalled_after: float, limit: float) -> bytes:
    """Everything child ``pid`` writes to ``fd`` until it closes it. ChildHung once it has
    neither written, run nor waited for a CPU for ``stalled_after`` seconds (a lock it can
    never take), or after ``limit`` seconds in all. A slow child is not a hung one: on a busy
    node the niced child may get little CPU, yet it keeps running."""
    chunks: list[bytes] = []
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    started = progressed = time.monotonic()
    try:
        child: psutil.Process | None = psutil.Process(pid)
    except psutil.Error:  # gone already: its pipe tells the rest
        child = None
    _, ran = _run_state(child)
    while True:
        if poller.poll(POLL_SECONDS * 1000):
            chunk = os.read(fd, READ_BYTES)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            progressed = time.monotonic()
            continue
        now = time.monotonic()
        running, cpu = _run_state(child)
        if cpu != ran or running:
            ran, progressed = cpu, now
        if now - progressed > stalled_after:
            raise ChildHung(f"stood still for {stalled_after:g} s and was killed")
        if now - started > limit:
            raise ChildHung(f"ran for more than {limit:g} s and was killed")


def _run_state(child: psutil.Process | None) -> tuple[bool, float]:
    """(whether ``child`` is running or waiting for a CPU, its user + system CPU seconds);
    (False, -1.0) if that cannot be read."""
    if child is None:
        return False, -1.0
    try:
        with child.oneshot():
            cpu = child.cpu_times()
            return child.status() == psutil.STATUS_RUNNING, cpu.user + cpu.system
    except psutil.Error:
        return False, -1.0


def _dumps(value: object) -> bytes:
    """``value`` pickled as frames: each list longer than ``CHUNK_ITEMS`` in it goes as frames
    of ``CHUNK_ITEMS`` items (before the frame that refers to it), so that no one ``loads``
    on the parent's side holds its GIL for long. A frame: its list's number (-1 for ``value``
    itself), its length, its pickle."""
    frames = _Frames()
    frames.add(value, -1)
    return b"".join(frames.frames)


class _Frames:
    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.lists = 0  # long lists numbered so far

    def add(self, value: object, number: int) -> None:
        buffer = io.BytesIO()
        _Splitter(buffer, self).dump(value)
        self.frames.append(FRAME_HEAD.pack(number, buffer.tell()) + buffer.getvalue())


class _Splitter(pickle.Pickler):
    """Pickles one frame; each long list it meets goes to frames of its own, numbered."""

    def __init__(self, buffer: io.BytesIO, out: _Frames) -> None:
        super().__init__(buffer, protocol=pickle.HIGHEST_PROTOCOL)
        self.out = out

    def persistent_id(self, obj: object) -> int | None:
        if type(obj) is not list or len(obj) <= CHUNK_ITEMS:
            return None
        number, self.out.lists = self.out.lists, self.out.lists + 1
        for start in range(0, len(obj), CHUNK_ITEMS):
            self.out.add(obj[start:start + CHUNK_ITEMS], number)
        return number


class _Joiner(pickle.Unpickler):
    """Unpickles one frame; a long list it refers to is the one its frames built."""

    def __init__(self, frame: memoryview, lists: dict[int, list[object]]) -> None:
        super().__init__(io.BytesIO(frame))
        self.lists = lists

    def persistent_load(self, pid: object) -> list[object]:
        return self.lists[pid]  # type: ignore[index]


def _loads(data: bytes, between: Callable[[], None] = no_wait) -> Any:
    """What ``_dumps`` wrote, one frame's ``loads`` at a time, each after ``between()``."""
    lists: collections.defaultdict[int, list[object]] = collections.defaultdict(list)
    view, at = memoryview(data), 0
    while True:
        between()
        number, length = FRAME_HEAD.unpack_from(view, at)
        at += FRAME_HEAD.size
        value = _Joiner(view[at:at + length], lists).load()
        at += length
        if number < 0:
            return value
        lists[number].extend(value)


def _said(data: bytes) -> str:
    """The error a failed child reported, if it got to write one."""
    with contextlib.suppress(Exception):
        ok, value = _loads(data)
        if not ok:
            return str(value)
    return ""


__all__ = ["ChildFailed", "ChildHung", "Forked"]
