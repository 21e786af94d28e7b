"""Delivery (a leader job): queued notifications -> their channel, retried with backoff, never lost.

The store is the queue that lasts (``notifications``: ``queued`` until ``sent`` or
``failed``); in memory each channel has a bounded queue (``routing.queue_max``) and one
worker, so a dead SMS gateway slows only its own channel.  A sweep moves due rows into
the queues while they have room; what does not fit stays queued in the store and is
counted ``deferred`` -- memory stays bounded and nothing is dropped.  A failed attempt
sets the row's ``next_attempt_at`` (exponential backoff) instead of sleeping in the
worker, so retries survive a change of leader too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter

from centre.routing import outbox
from centre.routing.channels import Permanent, Retry, retry_delay
from centre.routing.config import RoutingConfig
from centre.store.engine import write_transaction
from core.backoff import RateLimitedLog

log = logging.getLogger("centre.routing")


def build_channels(cfg: RoutingConfig) -> dict:
    """channel name -> channel object, for every webhook and the e-mail server configured."""
    from centre.routing.mail import MailChannel
    from centre.routing.webhook import WebhookChannel

    channels: dict = {f"webhook:{name}": WebhookChannel(name, w) for name, w in cfg.webhooks.items()}
    if cfg.email is not None:
        channels["email"] = MailChannel(cfg.email)
    return channels


class Deliverer:
    def __init__(self, centre, cfg: RoutingConfig, channels: dict, *, clock=time.time):
        self.centre = centre
        self.cfg = cfg
        self.channels = channels
        self.clock = clock
        self.queues = {name: asyncio.Queue(cfg.queue_max) for name in channels}
        self.inflight: set[int] = set()
        self.counters: Counter = Counter()  # sent, retried, failed, deferred, no_channel
        self._kicked = asyncio.Event()
        self._log = RateLimitedLog(log)

    def kick(self) -> None:
        """New rows are queued: sweep now rather than at the next poll."""
        self._kicked.set()

    async def run(self) -> None:
        workers = [asyncio.create_task(self._worker(name), name=f"deliver-{name}") for name in self.channels]
        try:
            while True:
                await self.sweep()
                self._kicked.clear()
                try:
                    await asyncio.wait_for(self._kicked.wait(), self.cfg.poll_interval)
                except TimeoutError:
                    pass
        finally:
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            self.inflight.clear()

    async def sweep(self) -> int:
        """Hand due rows to their channel's queue while it has room; returns how many were handed over."""
        room = sum(q.maxsize - q.qsize() for q in self.queues.values())
        if room <= 0:
            self.counters["deferred"] += 1
            return 0
        now = self.clock()
        async with self.centre.engine.connect() as conn:
            rows = await outbox.due(conn, now, room, self.inflight)
        handed = 0
        for row in rows:
            q = self.queues.get(row.channel)
            if q is None:
                await self._finish(row, Permanent(f"channel {row.channel} is not configured on this centre"), now)
                self.counters["no_channel"] += 1
            elif q.full():
                self.counters["deferred"] += 1
            else:
                self.inflight.add(row.id)
                q.put_nowait(row)
                handed += 1
        return handed

    async def _worker(self, name: str) -> None:
        channel, q = self.channels[name], self.queues[name]
        while True:
            row = await q.get()
            try:
                await channel.send(row)
                result: Exception | None = None
            except (Retry, Permanent) as exc:
                result = exc
            except Exception as exc:  # a bug in a channel must not stop its worker
                log.exception("channel %s failed on notification %s", name, row.id)
                result = Retry(f"{type(exc).__name__}: {exc}")
            try:
                await self._finish(row, result, self.clock())
            finally:
                self.inflight.discard(row.id)

    async def _finish(self, row, result: Exception | None, now: float) -> None:
        channel = self.channels.get(row.channel)
        async with write_transaction(self.centre.engine) as conn:
            if result is None:
                await outbox.done(conn, row.id, now)
                self.counters["sent"] += 1
                return
            attempts = row.attempts + 1
            last = isinstance(result, Permanent) or channel is None or attempts >= channel.max_attempts
            next_at = None if last else now + retry_delay(attempts, channel.backoff_initial, channel.backoff_max)
            await outbox.retry(conn, row.id, str(result), next_at)
        self.counters["failed" if last else "retried"] += 1
        if last:
            log.warning("notification %s (%s %s of %s/%s alert %s) failed after %d attempt(s): %s", row.id, row.channel,
                        row.event, row.site, row.gateway, row.alert, attempts, result)
        else:
            self._log(row.channel, "notification %s via %s: %s; retrying in %.0f s", row.id, row.channel, result,
                      next_at - now)

    async def close(self) -> None:
        for channel in self.channels.values():
            await channel.close()
