"""The namespace's control segment: how the daemon tells producers what lanes to create.

Producers read it once per new lane (``client._lane.read_geometry``) and fall back to the
documented defaults when it is absent, or owned by a user they do not trust (root, their own
uid and ``$AI_ANALYTICS_DAEMON_UID``), so workers need no configuration of their own.

In a shared directory anyone may have created the file first. A file of that name owned by
anyone but this daemon's uid or root is removed (logged) before ours takes its place; where
the directory does not allow that (sticky, and another user's file), publishing fails with
an error naming the owner, and workers, which refuse that file too, use the defaults.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import tempfile

from ai_analytics.client import _layout as L
from ai_analytics.client._segments import control_name

log = logging.getLogger("ai_analytics.daemon")

CONTROL_MODE = 0o644  # workers of other users must be able to read it


def publish_control(directory: str, namespace: str, capacity: int, names_capacity: int,
                    overwrite: bool) -> str:
    """Write the control segment atomically (temp file + rename); return its path. Raises
    OSError naming the path when it cannot."""
    path = os.path.join(directory, control_name(namespace))
    remove_foreign(path, "control segment")
    payload = L.CONTROL.pack(
        L.CONTROL_MAGIC, L.VERSION, capacity, L.FLAG_OVERWRITE if overwrite else 0,
        names_capacity, os.getpid(),
    )
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{control_name(namespace)}.")
    try:
        try:
            os.fchmod(fd, CONTROL_MODE)
            os.write(fd, payload)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def remove_foreign(path: str, what: str) -> None:
    """Remove ``path`` if it is not a regular file owned by this process's uid or root: in a
    directory other users may write, it may be someone else's, made to mislead. Raises
    OSError with the owner named when the directory does not let us remove it."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISREG(info.st_mode) and info.st_uid in (os.getuid(), 0):
        return
    kind = "a regular file" if stat.S_ISREG(info.st_mode) else "not a regular file"
    try:
        os.unlink(path)
    except OSError as exc:
        raise OSError(exc.errno, f"{path} ({what}) is owned by uid {info.st_uid} ({kind}), not "
                      f"by this daemon's uid {os.getuid()} or root, and cannot be removed "
                      f"({exc.strerror}); remove it") from None
    log.warning("removed %s: a %s owned by uid %d (%s), not by this daemon's uid %d or root",
                path, what, info.st_uid, kind, os.getuid())


def withdraw_control(directory: str, namespace: str) -> None:
    """Remove the control segment if this daemon wrote it (a clean stop)."""
    path = os.path.join(directory, control_name(namespace))
    try:
        with open(path, "rb") as f:
            raw = f.read(L.CONTROL_SIZE)
        if len(raw) == L.CONTROL_SIZE and L.CONTROL.unpack(raw)[5] == os.getpid():
            os.unlink(path)
    except OSError:
        pass
