"""In-process change notifications: what ingest (or any module) committed, for whoever shows or acts on it.

Published only **after** the commit, so a subscriber that reads the store sees the change.
Each subscriber has its own bounded queue; a subscriber that falls behind loses the oldest
changes and its ``dropped`` count says how many (it should then re-read the store), so one
slow browser never holds ingest back.  Across instances, changes travel through the store
(e.g. PostgreSQL LISTEN/NOTIFY, added by the module that needs it).

Channels used by ingest: ``gateway`` (state/online/offline changed), ``alert`` (an alert's
current view changed), ``command`` (a command's or ack's status changed), ``reading``
(latest readings of a gateway: ``{site, gateway, readings: [{device, point, ts, value, unit}]}``),
``gap`` (a gap was recorded or changed).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Change:
    channel: str
    data: dict


@dataclass(eq=False)
class Subscription:
    channels: frozenset[str] | None  # None: every channel
    queue: asyncio.Queue
    dropped: int = 0

    async def get(self) -> Change:
        return await self.queue.get()


@dataclass
class Hub:
    max_queue: int = 1000
    _subs: set[Subscription] = field(default_factory=set)

    def subscribe(self, channels: Iterable[str] | None = None) -> Subscription:
        sub = Subscription(frozenset(channels) if channels is not None else None, asyncio.Queue(self.max_queue))
        self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs.discard(sub)

    def wants(self, channel: str) -> bool:
        """Whether anybody listens on ``channel`` (a producer may skip building changes nobody reads)."""
        return any(sub.channels is None or channel in sub.channels for sub in self._subs)

    def publish(self, changes: Iterable[Change]) -> None:
        """Hand committed changes to every subscriber of their channel; never blocks."""
        for change in changes:
            for sub in self._subs:
                if sub.channels is not None and change.channel not in sub.channels:
                    continue
                if sub.queue.full():
                    sub.queue.get_nowait()
                    sub.dropped += 1
                sub.queue.put_nowait(change)
