"""sd_notify(3): tell systemd we are ready, alive, stopping, and what we are doing.

Hand-written on purpose: the protocol is one datagram of ``KEY=VALUE`` lines sent
to the Unix socket named in ``$NOTIFY_SOCKET`` (``@name`` meaning the abstract
namespace).  ``systemd-python`` needs libsystemd headers and a C compiler on the
board, and the small pure-Python packages on PyPI are unmaintained; neither buys
anything over these few lines, which also must never block the event loop (the
socket is non-blocking, and a datagram that cannot be sent at once is dropped and
counted: the next keep-alive comes soon enough).
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("canopy.ops")


def socket_address(name: str) -> str | bytes:
    """``$NOTIFY_SOCKET`` as ``sendto`` wants it: ``@x`` is the abstract socket ``\\0x``."""
    if name.startswith("@"):
        return b"\0" + name[1:].encode()
    return name


def watchdog_interval(environ: dict[str, str] | None = None, pid: int | None = None) -> float | None:
    """``WatchdogSec=`` in seconds when systemd expects keep-alives from this process, else None.

    ``$WATCHDOG_PID``, when set, names the process the watchdog is meant for: a child
    that inherited the environment must not send keep-alives on the parent's behalf.
    """
    env = os.environ if environ is None else environ
    usec, owner = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) <= 0:
        return None
    if owner and owner != str(os.getpid() if pid is None else pid):
        return None
    return int(usec) / 1_000_000


class Notifier:
    """The datagram socket to systemd; every call is a no-op when the daemon runs outside systemd."""

    def __init__(self, name: str | None = None):
        self.name = os.environ.get("NOTIFY_SOCKET") if name is None else name
        self.sent = 0
        self.failed = 0  # datagrams that could not be sent (socket gone, queue full)
        self._sock: socket.socket | None = None
        if self.name:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.setblocking(False)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def notify(self, *lines: str) -> bool:
        """Send ``KEY=VALUE`` lines in one datagram; False (counted, logged once) when it could not go."""
        if self._sock is None or not lines:
            return False
        try:
            self._sock.sendto("\n".join(lines).encode(), socket_address(self.name))
        except OSError as exc:  # BlockingIOError (full queue), ENOENT/ECONNREFUSED (systemd gone)
            self.failed += 1
            if self.failed == 1:
                log.warning("cannot notify systemd on %s: %s", self.name, exc)
            return False
        self.sent += 1
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
