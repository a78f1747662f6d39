"""systemd's notify protocol (sd_notify(3)): the two small functions ai-analyticsd needs.

``notify(state)`` sends one datagram, ``state`` as it is ("READY=1", "WATCHDOG=1",
"STOPPING=1", "RELOADING=1\\nMONOTONIC_USEC=...", "STATUS=..."), to the AF_UNIX datagram
socket named by $NOTIFY_SOCKET; a name starting with "@" is in the abstract namespace.
Without the variable (not started by systemd with Type=notify) it does nothing and returns
False. It never raises: a failed send returns False and is logged once per socket, so a
broken socket cannot take the daemon down. systemd notices the silence on its own: a missing
READY=1 fails the start, a missing WATCHDOG=1 restarts the service.

``watchdog_interval()`` is $WATCHDOG_USEC in seconds when the watchdog is meant for this
process ($WATCHDOG_PID unset or equal to our pid), else None. systemd kills a service that
stays silent that long: send WATCHDOG=1 at least every half of it.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("ai_analytics.daemon")

NOTIFY_SOCKET_ENV = "NOTIFY_SOCKET"
WATCHDOG_USEC_ENV = "WATCHDOG_USEC"
WATCHDOG_PID_ENV = "WATCHDOG_PID"
# systemd reads its notify socket at once; a send that waits longer than this gives up.
SEND_TIMEOUT_SECONDS = 1.0

_failed_sockets: set[str] = set()  # logged already: one line per socket, not one per send


def notify(state: str) -> bool:
    """Send ``state`` to $NOTIFY_SOCKET; True if it was sent, False if unset or failed."""
    name = os.environ.get(NOTIFY_SOCKET_ENV)
    if not name:
        return False
    try:
        if name.startswith("@"):
            address = b"\0" + os.fsencode(name[1:])
        elif name.startswith("/"):
            address = os.fsencode(name)
        else:  # e.g. systemd 254's "vsock:CID:PORT", for VMs: not ours to speak
            raise OSError(f"unsupported address {name!r} (a path or @abstract name expected)")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.settimeout(SEND_TIMEOUT_SECONDS)
            sock.sendto(state.encode(), address)
    except (OSError, UnicodeError) as exc:
        if name not in _failed_sockets:
            _failed_sockets.add(name)
            log.warning("cannot notify systemd through %s=%s: %s (logged once; the daemon "
                        "goes on)", NOTIFY_SOCKET_ENV, name, exc)
        return False
    return True


def watchdog_interval() -> float | None:
    """systemd's watchdog timeout for this process in seconds, or None without one."""
    usec = os.environ.get(WATCHDOG_USEC_ENV, "")
    pid = os.environ.get(WATCHDOG_PID_ENV, "")
    try:
        timeout = int(usec)
        if pid and int(pid) != os.getpid():
            return None  # meant for another process (a parent that started us)
    except ValueError:
        return None
    return timeout / 1e6 if timeout > 0 else None


__all__ = ["notify", "watchdog_interval"]
