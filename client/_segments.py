"""Where a namespace's segments live, how they are named, and who made them.

POSIX shared memory on Linux is a file in /dev/shm, so segments are opened with ``os.open``
and mapped with ``mmap`` directly. That is what ``multiprocessing.shared_memory`` does
underneath, minus its resource tracker, which would unlink a producer's lane when the
producer exits, before the daemon has drained it. The daemon alone unlinks lanes.

The directory is /dev/shm unless ``$AI_ANALYTICS_SEGMENT_DIR`` (workers) or ``segment_dir``
(the daemon's config) names another one: in Kubernetes, an ``emptyDir`` with ``medium:
Memory`` mounted at any path carries the lanes between a pod's containers.

Lane names carry a random instance token drawn once per process (again in a forked child),
never a pid: a pid means nothing across PID namespaces, and two containers whose workers are
both pid 1 must never meet on one name.
"""

from __future__ import annotations

import fcntl
import os
import re

SEGMENT_DIR_ENV = "AI_ANALYTICS_SEGMENT_DIR"
DEFAULT_SEGMENT_DIR = "/dev/shm"
NAMESPACE_ENV = "AI_ANALYTICS_NAMESPACE"
DEFAULT_NAMESPACE = "ai-analytics"
# The uid a worker accepts a control segment from, besides root and its own uid.
DAEMON_UID_ENV = "AI_ANALYTICS_DAEMON_UID"
# No dots: lane names are "<namespace>.lane.<instance>.<serial>", and a dotted namespace
# could make one namespace's lanes look like another's.
NAMESPACE_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
SEGMENT_MODE = 0o660
INSTANCE_HEX_DIGITS = 16  # 64 random bits per process
_LANE_SUFFIX = re.compile(rf"([0-9a-f]{{{INSTANCE_HEX_DIGITS}}})\.([0-9]{{1,10}})")


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


def segment_dir_from_env() -> str:
    """The directory named by $AI_ANALYTICS_SEGMENT_DIR, or /dev/shm."""
    return os.environ.get(SEGMENT_DIR_ENV) or DEFAULT_SEGMENT_DIR


def new_instance() -> str:
    """A fresh instance token: the part of a lane name that says which process made it."""
    return os.urandom(INSTANCE_HEX_DIGITS // 2).hex()


def lane_prefix(namespace: str) -> str:
    return f"{namespace}.lane."


def lane_name(namespace: str, instance: str, serial: int) -> str:
    return f"{lane_prefix(namespace)}{instance}.{serial}"


def parse_lane_name(name: str, prefix: str) -> tuple[str, int] | None:
    """(instance, serial) of a lane name with ``prefix``; None if it is not one of ours."""
    match = _LANE_SUFFIX.fullmatch(name, len(prefix)) if name.startswith(prefix) else None
    return (match[1], int(match[2])) if match else None


def control_name(namespace: str) -> str:
    return f"{namespace}.control"


def lock_name(namespace: str) -> str:
    """The file whose exclusive flock a running daemon holds for the namespace."""
    return f"{namespace}.daemon.lock"


def lock_path(namespace: str, directory: str) -> str:
    """Where the namespace's lock file is, in the segment directory ``directory``."""
    return os.path.join(directory, lock_name(namespace))


def pid_namespace() -> int:
    """The inode of this process's PID namespace (0 when /proc cannot tell): pids recorded
    by a process are meaningful only to readers in the same PID namespace."""
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return 0


def lock_held(path: str) -> bool:
    """True when some process holds an exclusive flock on ``path`` (the daemon on its
    namespace lock, a producer on its lane): a shared one is tried, which fails at once if
    so and is released at once if not."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return fd_lock_held(fd)
    finally:
        os.close(fd)


def fd_lock_held(fd: int) -> bool:
    """``lock_held`` on a descriptor the caller keeps open (its own open file description,
    so that its probe never counts as the holder)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    fcntl.flock(fd, fcntl.LOCK_UN)
    return False
