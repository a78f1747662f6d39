"""The installed distribution's version, for --version and the snapshot."""

from __future__ import annotations

import functools
from importlib.metadata import PackageNotFoundError, version


# Read once: looking it up scans the installed distributions (a millisecond or more, at every
# snapshot otherwise), and the code running is the version that was installed at its start.
@functools.cache
def package_version() -> str:
    try:
        return version("ai-analytics")
    except PackageNotFoundError:
        return "unknown"
