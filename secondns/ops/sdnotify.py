"""systemd's notify protocol, spoken directly (sd_notify(3)): a datagram to $NOTIFY_SOCKET.

It is a few lines, so no libsystemd binding is needed: READY=1 once zones
are loaded and sockets listen, WATCHDOG=1 at half the watchdog interval,
RELOADING=1/READY=1 around a reload, STOPPING=1 at shutdown.
"""

from __future__ import annotations

import os
import socket


def notify(state: str, env: dict[str, str] | None = None) -> bool:
    """Send one state string; False when not run under systemd (no socket given)."""
    environ = os.environ if env is None else env
    address = environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace socket
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.connect(address)
            sock.send(state.encode(), socket.MSG_DONTWAIT)  # a full queue drops it: never block DNS
        except OSError:
            return False
    return True


def watchdog_interval(env: dict[str, str] | None = None) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WatchdogSec), or None when not asked for."""
    environ = os.environ if env is None else env
    usec = environ.get("WATCHDOG_USEC")
    if not usec or not usec.isdigit():
        return None
    pid = environ.get("WATCHDOG_PID")
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None
    return int(usec) / 2_000_000
