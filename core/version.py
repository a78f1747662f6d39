"""The installed distribution's version, for --version and the snapshot."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def package_version() -> str:
    try:
        return version("ai-analytics")
    except PackageNotFoundError:
        return "unknown"
