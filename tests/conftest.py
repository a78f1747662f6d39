"""Fixtures: each test gets its own namespace and state directory, cleaned up even on failure;
the daemons, servers and producers a test starts through them are stopped at its end. After
those, by topic, the fixtures that a topic's in-process and end-to-end tests both use."""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from helpers import (
    EVENTS,
    SERVED_DOCUMENT,
    SHM_DIR,
    DaemonProcess,
    Emitters,
    Listener,
    always_healthy,
    free_port,
    remove_namespace,
    series,
    write_config,
)

if TYPE_CHECKING:
    from ai_analytics.core.config import Config
    from ai_analytics.daemon.http.server import StatusServer
    from ai_analytics.daemon.resources import ResourceSampler
    from ai_analytics.daemon.service import Daemon

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
    """Start real daemons for this test; every one is reaped at the end. A config file, or
    settings for a new one; ``state_dir``, ``env``, ``segment_dir`` and ``wrap`` as for
    DaemonProcess (a segment_dir is written into a new config too)."""
    started: list[DaemonProcess] = []

    def start(config_path: Path | None = None, *, state_dir: Path = state_dir,
              env: dict[str, str] | None = None, segment_dir: str | None = None,
              wrap: list[str] | None = None, **settings: object) -> DaemonProcess:
        if config_path is None:
            if segment_dir is not None:
                settings["segment_dir"] = segment_dir
            config_path = make_config(**settings)
        daemon = DaemonProcess(config_path, state_dir, namespace, env=env,
                               segment_dir=segment_dir or SHM_DIR, wrap=wrap)
        started.append(daemon)
        return daemon.start()

    yield start
    for daemon in started:
        daemon.reap()


@pytest.fixture
def make_daemon(namespace: str, state_dir: Path) -> Iterator[Callable[..., Daemon]]:
    """Build Daemon objects in this process; every one is closed at the end. A Config, or
    settings over the defaults with this test's namespace and state directory."""
    from ai_analytics.core.config import config_from_mapping
    from ai_analytics.daemon.service import Daemon

    made: list[Daemon] = []

    def make(config: Any = None, **settings: object) -> Daemon:
        if config is None:
            config = config_from_mapping({"namespace": namespace, "state_dir": str(state_dir),
                                          **settings})
        made.append(Daemon(config))
        return made[-1]

    yield make
    for daemon in made:
        daemon.close()


@pytest.fixture
def emitters(namespace: str, tmp_path: Path) -> Iterator[Callable[..., Emitters]]:
    """Start steady producer processes for this test; reaped at the end, even when it fails."""
    started: list[Emitters] = []

    def start(count: int = 2) -> Emitters:
        started.append(Emitters(namespace, tmp_path / f"stop-{len(started)}", count))
        return started[-1]

    yield start
    for group in started:
        group.reap()


@pytest.fixture
def serve() -> Iterator[Callable[..., StatusServer]]:
    """Start StatusServers (the daemon's HTTP endpoint, in this process) on a free loopback
    port, serving SERVED_DOCUMENT and healthy unless told otherwise; each is stopped, within
    5 s, at the end."""
    from ai_analytics.daemon.http.server import StatusServer

    servers: list[StatusServer] = []

    def start(snapshot: Callable[[], dict | None] = lambda: SERVED_DOCUMENT,
              health: Callable[[], tuple[bool, str]] = always_healthy, host: str = "127.0.0.1",
              **options: object) -> StatusServer:
        server = StatusServer(host, 0, snapshot, health, **options)  # type: ignore[arg-type]
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        assert server.stop(5.0), "a server thread outlived stop()"


@pytest.fixture
def on_thread(namespace: str) -> Iterator[Callable[..., Any]]:
    """Run calls on one fresh thread, so one fresh lane in this test's namespace (lanes are
    per thread and cached for its life); return their result or re-raise their error."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="emitter") as pool:
        yield lambda fn, *args, **kwargs: pool.submit(fn, *args, **kwargs).result(timeout=60)


# -- by topic: systemd, the resource sampler, /metrics, the history --------------------------------
@pytest.fixture
def listener(tmp_path: Path) -> Iterator[Listener]:
    """A socket standing in for systemd's notify socket (NOTIFY_SOCKET), closed at the end."""
    sock = Listener(str(tmp_path / "notify.sock"))
    yield sock
    sock.close()


@pytest.fixture
def sampler_factory() -> Iterator[Callable[..., ResourceSampler]]:
    """ResourceSamplers for one test, every started one stopped at the end."""
    from ai_analytics.daemon.resources import ResourceSampler

    made: list[ResourceSampler] = []

    def make(config: Config, **kwargs: object) -> ResourceSampler:
        sampler = ResourceSampler(config, **kwargs)  # type: ignore[arg-type]
        made.append(sampler)
        return sampler

    yield make
    for sampler in made:
        sampler.stop(5.0)


@pytest.fixture
def document(make_config: Callable[..., Path], make_daemon: Callable[..., Daemon]) -> dict:
    """The snapshot document of an in-process Daemon after a known workload, emitted on a
    thread of its own (its own lane): generate/llama 40 x 120 ms (10 errors, TTFT 30 ms,
    tokens 100 in / 50 out, half cache hits, quality 0.75), embed/bge 10 x 2 ms, and one
    cache_state. (/metrics renders it, and promtool checks the rendering.)"""
    from ai_analytics import client
    from ai_analytics.core.config import load_config

    daemon = make_daemon(load_config(make_config()))

    def work() -> None:
        for i in range(40):
            client.emit("generate", 120.0, model="llama", success=i % 4 != 0,
                        quality=0.75, cache_hit=i % 2 == 0, ttft_ms=30.0, tokens_in=100,
                        tokens_out=50)
        for _ in range(10):
            client.emit("embed", 2.0, model="bge")
        client.cache_state("prompt-cache", size=64, evictions=7)

    worker = threading.Thread(target=work)
    worker.start()
    worker.join()
    daemon.resources.sample_system()
    time.sleep(0.05)
    daemon.resources.sample_system()  # CPU percentages need two samples
    daemon.lanes.scan()
    daemon.drain()
    assert daemon.save(running=True)
    published = daemon.last_document
    assert published is not None
    return published


@pytest.fixture
def recent_history(state_dir: Path) -> list[float]:
    """A history in the state directory with three snapshots in the last minute and one two
    hours ago, each with a chat/llama and an embed/bge row; their times."""
    now = time.time()
    times = [now - 7200.0, now - 50.0, now - 30.0, now - 10.0]
    from ai_analytics.core.history import HistoryStore

    store = HistoryStore(str(state_dir), 1e9, 256.0)
    for unix in times:
        store.append(unix, 5.0, EVENTS, [series("chat", "llama"), series("embed", "bge")])
    store.close()
    return times
