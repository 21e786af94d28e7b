"""How much the uplink may have in flight: the delay-based byte window and the replay rate limits.

Alarms are exempt from both: they only ever wait for a free in-flight slot,
and some slots are kept for them (``RESERVED_SLOTS``).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from core.records import Lane

# In-flight slots kept back from lower lanes, so an alarm never waits for a slot.
RESERVED_SLOTS = {"alarm": 0, "event": 1, "telemetry": 2}


@dataclass(slots=True)
class Batch:
    """The records of one message, published on one or more topics: acknowledged once every copy is."""

    lane: Lane
    first: int
    last: int
    count: int
    copies: int  # copies still awaiting their PUBACK
    refused: bool = False  # the broker refused a copy (MQTT 5 PUBACK reason >= 0x80): the records stay


@dataclass(slots=True)
class MemoryBatch(Batch):
    """Records the outbox holds in memory (it cannot commit): acknowledged to it under their memory epoch."""

    epoch: str = ""


@dataclass(slots=True)
class InFlight:
    """One published copy awaiting its PUBACK."""

    batch: Batch
    topic: str
    size: int
    sent: float = 0.0  # loop time of the publish call


class QueueDelayWindow:
    """How many event/telemetry bytes may be unacknowledged: delay-based (LEDBAT-like).

    Each PUBACK gives an RTT sample; the smallest over the last 5-10 s is the
    link's base RTT, and the smallest over the last base RTT (which filters
    out jitter) minus the base is queueing in front of us (socket buffers, a
    slow uplink, a proxy).  The window grows while that queueing is below
    ``target`` seconds and shrinks in proportion when above, so the pipe stays
    full but never holds much more than ``target`` of telemetry that a new
    alarm would have to wait behind.  Bounded by [one message, ``maximum``].
    ``target=None`` keeps the old fixed cap of ``maximum`` bytes.
    """

    START = 64 * 1024

    def __init__(self, maximum: int, target: float | None):
        self.maximum = maximum
        self.target = target
        self.reset()

    def reset(self) -> None:
        self.bytes = min(self.maximum, self.START) if self.target else self.maximum
        self._mins = [float("inf"), float("inf")]  # base RTT: min of this and the previous 5 s bucket
        self._bucket_end = 0.0
        self._next_cut = 0.0
        self.samples = 0  # RTT samples since the connection started
        self._recent: deque[tuple[float, float]] = deque()  # (time, rtt) over the last base RTT

    def on_ack(self, now: float, rtt: float, size: int) -> None:
        if not self.target:
            return
        self.samples += 1
        if now >= self._bucket_end:
            self._mins = [self._mins[1], float("inf")]
            self._bucket_end = now + 5.0
        self._mins[1] = min(self._mins[1], rtt)
        base = min(self._mins)
        recent = self._recent
        recent.append((now, rtt))
        while len(recent) > 1 and recent[0][0] < now - base:
            recent.popleft()
        queued = min(r for _, r in recent) - base
        if queued <= self.target:
            # additive increase, slower near the target: at most one message more per RTT
            self.bytes = int(min(self.maximum, self.bytes + (1 - queued / self.target) * size * size / max(self.bytes, size)))
        elif now >= self._next_cut:
            # multiplicative decrease in proportion to the excess, at most halving, once per RTT
            self.bytes = int(max(size, self.bytes * max(0.5, self.target / queued)))
            self._next_cut = now + rtt

    def message_bytes(self, batch_max_bytes: int) -> int:
        """Largest event/telemetry message now: no bigger than half the window once it has measured the link.

        On a slow link messages get small, so an alarm never waits behind one long telemetry message.
        """
        if not self.samples:
            return batch_max_bytes
        return min(batch_max_bytes, max(4096, self.bytes // 2))


class RateLimit:
    """Token bucket that may go briefly into debt (one message of burst)."""

    def __init__(self, rate: float | None):
        self.rate = rate
        self.tokens = rate or 0.0
        self._last = 0.0

    def delay(self, now: float) -> float:
        if not self.rate:
            return 0.0
        self.tokens = min(self.rate, self.tokens + (now - self._last) * self.rate)
        self._last = now
        return 0.0 if self.tokens > 0 else -self.tokens / self.rate

    def charge(self, amount: float) -> None:
        if self.rate:
            self.tokens -= amount
