"""Embedded mode: an ai-analyticsd ``Daemon`` on a thread of the worker's own process, with a
private temporary state directory and no HTTP port.

The client's asyncio facade (``AnalyticsAIIntegration`` with ``mode="embedded"``) drives it
through the blocking calls below, each run off the event loop. Everything here except
``_run`` is called from threads other than the daemon's: it uses only what ``Daemon`` says is
safe from another thread (``request_stop``, ``last_document``).
"""

from __future__ import annotations

import atexit
import json
import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Mapping
from typing import Any

from ai_analytics.core.config import config_from_mapping
from ai_analytics.core.errors import AlreadyRunning
from ai_analytics.daemon.service import Daemon

log = logging.getLogger("ai_analytics.client")

# How often wait_ready looks whether the first snapshot exists.
READY_POLL_SECONDS = 0.01
# Share of a stop's timeout given to the final drain; the rest is for the final snapshot
# write and the thread's end.
STOP_DRAIN_SHARE = 0.8


class EmbeddedDaemon:
    """One in-process daemon: ``start`` it, ``wait_ready``, read ``snapshot``, then
    ``request_stop`` and ``join``. ``settings`` are config keys (``config_from_mapping``);
    ``state_dir`` is replaced by a temporary directory that goes when the thread ends."""

    def __init__(self, settings: Mapping[str, object], namespace: str) -> None:
        self.namespace = namespace
        self.state_dir = tempfile.mkdtemp(prefix=f"ai-analytics-{namespace}-")
        # No forked children whatever the settings say: this is the worker's own process (its
        # GPU context, its memory), which must not be copied.
        self.settings = {**settings, "state_dir": self.state_dir, "snapshot_child": "never"}
        self.error: BaseException | None = None
        self._daemon: Daemon | None = None  # set by the thread once constructed
        self._ended = threading.Event()
        self._cancelled = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True,
                                       name=f"ai-analytics-embedded-{namespace}")

    def start(self) -> None:
        # Should the thread still run when the interpreter exits (a stop that timed out),
        # the directory goes at exit; the thread itself removes it when it ends.
        atexit.register(self._remove_state_dir)
        self.thread.start()

    def _run(self) -> None:
        """The thread: construct the daemon here (its SQLite connection belongs to the thread
        that made it) and run its loop until stopped."""
        try:
            daemon = Daemon(config_from_mapping(self.settings))
            self._daemon = daemon
            if not self._cancelled.is_set():  # request_stop sets it, then reads _daemon
                daemon.run()
        except Exception as exc:
            self.error = exc
            if not isinstance(exc, AlreadyRunning):  # refused before its loop: reported
                log.error("ai_analytics: the embedded ai-analyticsd stopped with an error",
                          exc_info=True)
        finally:
            # The daemon has closed its files by now (or never opened them).
            self._remove_state_dir()
            atexit.unregister(self._remove_state_dir)
            self._ended.set()

    def wait_ready(self, timeout: float) -> bool:
        """Block until the first snapshot exists (True), or the thread ended or ``timeout``
        passed (False)."""
        deadline = time.monotonic() + timeout
        while not self._ended.wait(READY_POLL_SECONDS):
            if self.snapshot_ready():
                return True
            if time.monotonic() >= deadline:
                return False
        return False

    def snapshot_ready(self) -> bool:
        daemon = self._daemon
        return daemon is not None and daemon.last_document is not None

    def failure(self) -> str | None:
        """Why the daemon ended before its first snapshot, in words for the user; None while
        it runs or when it ended without an error."""
        if not self._ended.is_set() or self.error is None:
            return None
        if isinstance(self.error, AlreadyRunning):
            return (f"cannot run an embedded daemon: {self.error}; use mode='daemon' (or "
                    "'auto') to report to it")
        return f"the embedded ai-analyticsd could not start: {self.error}"

    def snapshot(self) -> dict[str, Any] | None:
        """A copy of the latest snapshot document, or None before the first.

        Only ``last_document`` is read, never a document built from this thread: the daemon's
        statistics and lanes change on its own thread without a lock (its loop is single-
        threaded by design). Each finished document is published with one reference store and
        never changed afterwards; the JSON round trip gives the caller its own copy, with the
        same shape as state.json and /status."""
        daemon = self._daemon
        document = None if daemon is None else daemon.last_document
        return None if document is None else json.loads(json.dumps(document))

    def request_stop(self, timeout: float) -> None:
        """Ask the daemon to stop, its final drain given a share of ``timeout``."""
        self._cancelled.set()  # before reading _daemon: see _run
        daemon = self._daemon
        if daemon is not None:
            daemon.request_stop(drain_seconds=max(timeout * STOP_DRAIN_SHARE, 0.1))

    def join(self, timeout: float) -> bool:
        """Wait at most ``timeout`` seconds for the thread to end; True if it has."""
        self.thread.join(timeout)
        return not self.thread.is_alive()

    def _remove_state_dir(self) -> None:
        shutil.rmtree(self.state_dir, ignore_errors=True)
