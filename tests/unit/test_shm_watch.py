"""The drain loop's wake-up on new segments: real inotify on /dev/shm."""

from __future__ import annotations

import os
import select

from ai_analytics.daemon.ingest.shm_watch import ShmWatch

from helpers import SHM_DIR


def touch(name: str) -> str:
    path = os.path.join(SHM_DIR, name)
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    return path


def test_wakes_for_a_segment_of_the_namespace_only(namespace):
    watch = ShmWatch(SHM_DIR, f"{namespace}.lane.")
    made: list[str] = []
    try:
        assert watch.fileno() >= 0, "inotify should be available on Linux"
        assert not watch.changed()
        made.append(touch(f"{namespace}x.lane.1.1"))  # another program's segment
        made.append(touch(f"other-{namespace}.lane.1.1"))
        assert not watch.changed()
        made.append(touch(f"{namespace}.lane.{os.getpid()}.1"))
        readable, _, _ = select.select([watch.fileno()], [], [], 5.0)
        assert readable == [watch.fileno()]
        assert watch.changed()
        assert not watch.changed()  # each creation is news once
    finally:
        watch.close()
        for path in made:
            os.unlink(path)
    assert watch.fileno() == -1
