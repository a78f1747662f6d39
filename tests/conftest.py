"""Fixtures: each test gets its own namespace and state directory, cleaned up even on failure."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from helpers import DaemonProcess, free_port, remove_namespace, write_config

_serial = itertools.count()


@pytest.fixture
def namespace(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A namespace no other test or daemon uses; its segments are removed afterwards."""
    name = f"aitest-{os.getpid()}-{next(_serial)}"
    monkeypatch.setenv("AI_ANALYTICS_NAMESPACE", name)
    yield name
    remove_namespace(name)


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def make_config(tmp_path: Path, namespace: str, state_dir: Path) -> Callable[..., Path]:
    """Write a config for this test's namespace; keyword arguments override settings."""

    def make(**settings: object) -> Path:
        base: dict[str, object] = {
            "namespace": namespace,
            "state_dir": str(state_dir),
            "batch_timeout_seconds": 0.05,
            "snapshot_interval_seconds": 0.2,
            "discovery_interval_seconds": 0.1,
            "stop_timeout_seconds": 10.0,
            "http_port": free_port(),
        }
        base.update(settings)
        return write_config(tmp_path / f"config-{next(_serial)}.yaml", **base)

    return make


@pytest.fixture
def daemon_factory(
    make_config: Callable[..., Path], state_dir: Path, namespace: str
) -> Iterator[Callable[..., DaemonProcess]]:
    """Start real daemons for this test; every one is reaped at the end."""
    started: list[DaemonProcess] = []

    def start(config_path: Path | None = None, **settings: object) -> DaemonProcess:
        path = config_path or make_config(**settings)
        daemon = DaemonProcess(path, state_dir, namespace).start()
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.reap()
