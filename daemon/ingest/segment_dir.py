"""The segment directory: is it usable, and how many lanes does it hold.

Every thread that emits needs one lane, reserved whole when it is created. Docker's and
Kubernetes' default /dev/shm is 64 MiB; at the default shape (8192 records, 256 names) a lane
is 544 KiB, so about 120 lanes fit, which a few worker processes with thread pools exceed. A
thread that finds no room gets a no-ring lane instead (its events are counted as ``no_lane``);
this module says how much room the lanes need, for the start-up warning and the finding.
"""

from __future__ import annotations

import dataclasses
import os
import stat

from ai_analytics.client import _layout as L
from ai_analytics.core.errors import ConfigError

MIB = 1024 * 1024
# Room asked for beyond what the lanes need: other programs' segments, lanes of threads that
# start while others are being reclaimed.
HEADROOM = 1.25


def check_usable(directory: str) -> None:
    """Raise ConfigError (key segment_dir) when the daemon cannot keep lanes there."""
    try:
        info = os.stat(directory)
    except OSError as exc:
        raise ConfigError(f"{directory}: {exc.strerror or exc}", key="segment_dir",
                          value=directory) from None
    if not stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"{directory}: not a directory", key="segment_dir", value=directory)
    if not os.access(directory, os.R_OK | os.W_OK | os.X_OK):
        raise ConfigError(f"{directory}: this daemon (uid {os.getuid()}) may not list, create "
                          "and remove files in it", key="segment_dir", value=directory)


@dataclasses.dataclass(frozen=True)
class Space:
    """The directory's file system, in bytes."""

    size: int
    free: int

    @classmethod
    def of(cls, directory: str) -> Space | None:
        try:
            fs = os.statvfs(directory)
        except OSError:
            return None
        return cls(fs.f_blocks * fs.f_frsize, fs.f_bavail * fs.f_frsize)


def lane_bytes(max_queue_size: int, names_per_lane: int) -> int:
    """Room one lane of that shape takes, rounded up to whole 4 KiB pages as tmpfs stores it."""
    return -(-L.lane_size(max_queue_size, names_per_lane) // 4096) * 4096


def lanes_that_fit(space: Space, one_lane: int) -> int:
    return space.size // one_lane


def needed_bytes(lanes: int, one_lane: int) -> int:
    """Directory size to ask for: ``lanes`` whole lanes plus headroom, in whole MiB."""
    return -(-int(lanes * one_lane * HEADROOM) // MIB) * MIB


def capacity_for(space: Space, lanes: int, names_per_lane: int) -> int:
    """The largest max_queue_size with which ``lanes`` lanes fit in the directory (0: not
    even the smallest)."""
    per_lane = space.size / HEADROOM / max(1, lanes)
    records = int((per_lane - L.lane_size(0, names_per_lane)) // L.RECORD_SIZE)
    return records if records >= L.MIN_CAPACITY else 0


def mib(size: int) -> str:
    return f"{size / MIB:,.1f} MiB"


def sizing_advice(directory: str, space: Space, lanes: int, max_queue_size: int,
                  names_per_lane: int) -> str:
    """What to do so that ``lanes`` lanes fit: a larger directory, or smaller lanes."""
    one = lane_bytes(max_queue_size, names_per_lane)
    advice = (f"give {directory} at least {mib(needed_bytes(lanes, one))} (a larger /dev/shm: "
              f"docker run --shm-size, or an emptyDir with medium: Memory and a sizeLimit)")
    smaller = capacity_for(space, lanes, names_per_lane)
    if 0 < smaller < max_queue_size:
        advice += f", or lower max_queue_size to {smaller} so that {lanes} lanes fit"
    return advice


def start_warning(directory: str, expected_lanes: int, max_queue_size: int,
                  names_per_lane: int) -> str | None:
    """The warning to log at start when ``expected_lanes`` lanes do not fit, else None."""
    space = Space.of(directory)
    if space is None:
        return None
    one = lane_bytes(max_queue_size, names_per_lane)
    fit = lanes_that_fit(space, one)
    if fit >= expected_lanes:
        return None
    return (f"segment_dir {directory} holds {mib(space.size)}: room for {fit} lanes of "
            f"{one // 1024:,} KiB (max_queue_size {max_queue_size}, names_per_lane "
            f"{names_per_lane}), fewer than expected_lanes ({expected_lanes}); threads beyond "
            f"that drop their events (counted as no_lane). "
            + sizing_advice(directory, space, expected_lanes, max_queue_size, names_per_lane))
