"""The namespace's control segment: how the daemon tells producers what lanes to create.

Producers read it once per new lane (``client._lane.read_geometry``) and fall back to the
documented defaults when it is absent, so workers need no configuration of their own.
"""

from __future__ import annotations

import os

from ai_analytics.client import _layout as L
from ai_analytics.client._segments import SHM_DIR, control_name

CONTROL_MODE = 0o644  # workers of other users must be able to read it


def publish_control(namespace: str, capacity: int, names_capacity: int, overwrite: bool) -> str:
    """Write the control segment atomically (temp file + rename); return its path."""
    path = os.path.join(SHM_DIR, control_name(namespace))
    tmp = f"{path}.{os.getpid()}.tmp"
    payload = L.CONTROL.pack(
        L.CONTROL_MAGIC, L.VERSION, capacity, L.FLAG_OVERWRITE if overwrite else 0,
        names_capacity, os.getpid(),
    )
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, CONTROL_MODE)
    try:
        os.fchmod(fd, CONTROL_MODE)
        os.write(fd, payload)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return path


def withdraw_control(namespace: str) -> None:
    """Remove the control segment if this daemon wrote it (a clean stop)."""
    path = os.path.join(SHM_DIR, control_name(namespace))
    try:
        with open(path, "rb") as f:
            raw = f.read(L.CONTROL_SIZE)
        if len(raw) == L.CONTROL_SIZE and L.CONTROL.unpack(raw)[5] == os.getpid():
            os.unlink(path)
    except OSError:
        pass
