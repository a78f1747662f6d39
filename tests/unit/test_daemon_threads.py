"""What other threads may do to a running Daemon (its class docstring lists it): stop it with
a narrower deadline, ask for a reload, and read its health and latest snapshot, while the loop
runs on a thread of its own in this process."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from ai_analytics import client
from ai_analytics.core.config import load_config
from ai_analytics.core.state import read_state
from ai_analytics.daemon import Daemon

from helpers import wait_for


def test_a_running_daemon_is_driven_from_other_threads(
    make_config: Callable[..., Path], state_dir: Path
) -> None:
    config = load_config(make_config(stop_timeout_seconds=30.0, batch_size=64,
                                     snapshot_interval_seconds=0.05))
    reloaded = load_config(make_config(stop_timeout_seconds=30.0, batch_size=128,
                                       snapshot_interval_seconds=0.05))
    daemon = Daemon(config)
    loop = threading.Thread(target=daemon.run, kwargs={"reload_config": lambda: reloaded},
                            daemon=True)
    loop.start()
    try:
        wait_for(lambda: daemon.health()[0], what="a healthy loop")
        writer = threading.Thread(target=lambda: [client.emit("threads", 2.0, model="m")
                                                  for _ in range(500)])
        writer.start()
        writer.join()

        def counted() -> bool:
            document = daemon.last_document
            return document is not None and document["events"]["received"] == 500

        wait_for(counted, what="a snapshot that counts the 500 events")
        published = daemon.last_document
        assert published is not None
        first = dict(published)
        wait_for(lambda: daemon.last_document is not published, what="the next snapshot")
        assert dict(published) == first  # a published document is never changed afterwards

        daemon.request_reload()
        wait_for(lambda: daemon.config.batch_size == 128, what="the reload")
        assert daemon.drainer.batch_size == 128  # handed to the part that keeps its own

        daemon.request_stop(drain_seconds=2.0)  # narrower than stop_timeout_seconds (30 s)
        loop.join(timeout=60.0)
        assert not loop.is_alive()
    finally:
        daemon.request_stop()
        loop.join(timeout=60.0)
    # The final writes shared what the 2 s left (max_processing_time_seconds is 10 s, and a
    # 30 s stop would have left them that): the narrower deadline ruled the stop, and it is
    # the stop's own, the config never swapped under the loop.
    assert all(sink.bounded.timeout <= 1.0 for sink in daemon.sinks.guarded.values())
    assert daemon.config.stop_timeout_seconds == 30.0
    assert daemon.health() == (False, "stopping")
    final = read_state(str(state_dir))
    assert final is not None and final["daemon"]["running"] is False
    assert final["events"]["received"] == 500
