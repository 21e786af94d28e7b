"""When the uplink tries the broker again: back soon after it returns, at most one attempt per 2 s meanwhile.

An exponential backoff grows while the broker is away (to a minute by default), so after
a long outage the gateway came back up to that late.  Instead, attempts come at a steady
pace: one per ``interval`` (2 s: every attempt is a TCP connection on the broker's host),
each slot up to 20 % longer at random so a fleet that lost the broker together drifts apart.

What makes the return fast is that an attempt is never given up early: it stays pending
until the broker answers or ``connect_timeout`` passes, and the next one starts as soon as
a pending one times out.  Through a link that went dark, the kernel retries a pending SYN
about every second (a retry is the same attempt), and a proxy or NAT that holds the bytes
delivers them the moment the path is back: the attempt completes then.  A connection that
was open when the link went dark would wait for TCP's doubling retransmission timer, so it
is dropped after ``STALLED_AFTER`` seconds of unacknowledged data and replaced by such an
attempt.  A refused port (broker process down) fails at once and waits for its slot, so
there the return takes up to one slot (p50 ~1 s, p99 ~2 s): at one attempt per 2 s nothing
can learn sooner that a refusing port listens again (docs/performance.md#outage-resume).

A broker that answers and says no (bad login, server busy, banned) is backed off
exponentially on top: it is up, and asking again every 2 s will not change its mind.
"""

from __future__ import annotations

import contextlib
import math
import random
import socket

from core.backoff import Backoff

RETRY_INTERVAL = 2.0  # s between the starts of two connection attempts (the budget: <= 0.5 attempts/s)
JITTER = 0.2  # each slot is up to this fraction longer, at random (mean 2.2 s: <= 0.5/s with the attempt at once)
STALLED_AFTER = 4.0  # s a connection may keep data unacknowledged before the kernel drops it


def retry_interval(backoff_max: float) -> float:
    """The steady pace for a broker config: 2 s, or ``backoff_max`` when that is shorter (a lab or a test)."""
    return min(RETRY_INTERVAL, backoff_max)


class RetryPace:
    """The reconnect schedule of one uplink.

    ``wait(now)`` before each attempt; ``started(now)`` when one starts; ``refused(now)``
    when the broker answered with a refusal; ``connected()`` once it accepted us.
    Times are the event loop's clock.
    """

    def __init__(self, interval: float = RETRY_INTERVAL, *, refusals: Backoff | None = None, jitter: float = JITTER,
                 rng: random.Random | None = None):
        if not interval > 0:
            raise ValueError(f"retry interval must be > 0 s, got {interval!r}")
        self.interval = interval
        self.jitter = jitter
        self.refusals = refusals or Backoff(interval, 60.0)
        self._rng = rng or random.Random()
        self._next = -math.inf  # earliest start of the next attempt

    def wait(self, now: float) -> float:
        """Seconds until the next attempt may start (0: now, e.g. after a connection that lasted)."""
        return max(0.0, self._next - now)

    def started(self, now: float) -> None:
        """An attempt starts now: the next one not before its slot ends, however this one ends."""
        self._next = now + self.interval * (1 + self.jitter * self._rng.random())

    def refused(self, now: float) -> None:
        """The broker answered and refused us: the next attempt also waits out a growing backoff."""
        self._next = max(self._next, now + self.refusals.next())

    def connected(self) -> None:
        """The broker accepted us: a later refusal starts its backoff from the beginning."""
        self.refusals.reset()


def drop_when_stalled(sock: socket.socket | None, seconds: float = STALLED_AFTER) -> None:
    """Have the kernel drop a connection whose sent data stays unacknowledged ``seconds`` (TCP_USER_TIMEOUT).

    Over a link that went dark, TCP retransmits at a doubling interval: a connection that
    outlived a 10 s outage may try again only seconds after the link is back, and keepalive
    notices nothing for a minute.  Dropped, it is replaced by a pending attempt whose SYN the
    kernel retries about every second.  No effect on an idle connection, or where unsupported.
    """
    if sock is not None and hasattr(socket, "TCP_USER_TIMEOUT"):
        with contextlib.suppress(OSError, ValueError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(seconds * 1000))
