"""Where a namespace's segments live and how they are named.

POSIX shared memory on Linux is a file in /dev/shm, so segments are opened with ``os.open``
and mapped with ``mmap`` directly. That is what ``multiprocessing.shared_memory`` does
underneath, minus its resource tracker, which would unlink a producer's lane when the
producer exits, before the daemon has drained it. The daemon alone unlinks lanes.
"""

from __future__ import annotations

import fcntl
import os
import re

SHM_DIR = "/dev/shm"
NAMESPACE_ENV = "AI_ANALYTICS_NAMESPACE"
DEFAULT_NAMESPACE = "ai-analytics"
# No dots: lane names are "<namespace>.lane.<pid>.<serial>", and a dotted namespace could
# make one namespace's lanes look like another's.
NAMESPACE_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
SEGMENT_MODE = 0o660


def check_namespace(namespace: str) -> str:
    """Return ``namespace`` if it is a valid segment prefix, else raise ValueError."""
    if not isinstance(namespace, str) or not NAMESPACE_PATTERN.fullmatch(namespace):
        raise ValueError(
            f"namespace must be 1-64 characters of letters, digits, '_' or '-', got {namespace!r}"
        )
    return namespace


def namespace_from_env() -> str:
    """The namespace named by $AI_ANALYTICS_NAMESPACE, or the default."""
    return check_namespace(os.environ.get(NAMESPACE_ENV) or DEFAULT_NAMESPACE)


def lane_prefix(namespace: str) -> str:
    return f"{namespace}.lane."


def lane_name(namespace: str, pid: int, serial: int) -> str:
    return f"{lane_prefix(namespace)}{pid}.{serial}"


def control_name(namespace: str) -> str:
    return f"{namespace}.control"


def shm_path(name: str) -> str:
    return os.path.join(SHM_DIR, name)


def lock_held(path: str) -> bool:
    """True when some process holds an exclusive flock on ``path`` (the daemon on its
    namespace lock): a shared one is tried, which fails at once if so and is released at
    once if not."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
    return False
