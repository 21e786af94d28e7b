"""Bounds of the outbox on disk, and what gives way first (Fledge-style explicit policies).

Telemetry expires after its TTL; over the soft cap it is thinned (keep every
Nth of the oldest half), then dropped oldest first.  Events expire after
their TTL and are dropped oldest first only when no telemetry is left to
give.  Alarms never expire and are never dropped: a share of the cap is
reserved for them.  Every row removed here is counted (``expired`` or
``dropped:<reason>``) in the transaction that removes it.  Acknowledged
records kept for replay have a window and a budget of their own
(``retention.py``), and over the soft cap they go before anything undelivered.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import aiosqlite

from core.clock import Clock
from gateway.outbox.counters import LaneCounters, add_counts
from gateway.outbox.retention import Retention

log = logging.getLogger("canopy.store")


@dataclass(frozen=True)
class StorePolicy:
    max_bytes: int = 256 * 1024 * 1024
    alarm_reserve: float = 0.1
    telemetry_ttl: float | None = 7 * 86400
    event_ttl: float | None = 30 * 86400
    thin_keep_every: int = 2
    prune_interval: float = 5.0
    retain_for: float = 6 * 3600  # seconds an acknowledged record is kept for replay after its PUBACK (0: not kept)
    retain_bytes: int | None = None  # the retained records' budget; None: a quarter of max_bytes

    @property
    def retain_budget(self) -> int:
        return self.max_bytes // 4 if self.retain_bytes is None else self.retain_bytes

    @property
    def retains(self) -> bool:
        """Acknowledged records are kept (moved to ``retained_{lane}``) rather than deleted."""
        return self.retain_for > 0 and self.retain_budget > 0

    def ttl(self, lane: str) -> float | None:
        return {"telemetry": self.telemetry_ttl, "event": self.event_ttl}.get(lane)

    @property
    def soft_cap(self) -> int:
        """Bytes that telemetry and events may use: the rest is kept for alarms."""
        return int(self.max_bytes * (1 - self.alarm_reserve))


class Pruner:
    """Applies a StorePolicy to the open outbox database, on the writer's connection."""

    def __init__(self, db: aiosqlite.Connection, policy: StorePolicy, counters: dict[str, LaneCounters],
                 clock: Clock, page_size: int):
        self.db = db
        self.policy = policy
        self.counters = counters
        self.clock = clock
        self.page_size = page_size
        self.retention = Retention(db, policy, counters, clock)
        self._next = 0.0  # monotonic time of the next prune

    async def maybe_prune(self, force: bool = False) -> None:
        """``prune`` at most every ``prune_interval`` (each deletion is a commit), or now when forced."""
        now = self.clock.monotonic()
        if not force and now < self._next:
            return
        self._next = now + self.policy.prune_interval
        await self.prune(force)

    async def used_bytes(self) -> int:
        async with self.db.execute("PRAGMA page_count") as cur:
            pages = (await cur.fetchone())[0]
        async with self.db.execute("PRAGMA freelist_count") as cur:
            free = (await cur.fetchone())[0]
        return (pages - free) * self.page_size

    async def prune(self, force: bool) -> None:
        """Expire by TTL, retention; over the soft cap (or forced: the disk is full), retained copies go,
        then telemetry is thinned, then records are dropped, to 90 % of it."""
        now = self.clock.time()
        for lane in ("telemetry", "event"):
            ttl = self.policy.ttl(lane)
            if ttl:
                await self._delete_oldest(lane, "expired", limit=None, older_than=now - ttl)
        await self.retention.prune()
        soft = self.policy.soft_cap
        used = await self.used_bytes()
        if used <= soft and not force:
            return
        target = int(soft * 0.9)
        used = await self.retention.give_way(target, self.used_bytes)
        if used > target and self.counters["telemetry"].pending > 1 and self.policy.thin_keep_every > 1:
            await self._thin_telemetry()
            used = await self.used_bytes()
        for lane in ("telemetry", "event"):
            while used > target and self.counters[lane].pending:
                if not await self._delete_oldest(lane, "dropped:store_full", limit=max(1000, self.counters[lane].pending // 10)):
                    break
                used = await self.used_bytes()
        if used > soft:
            log.error("outbox over its soft cap (%d > %d bytes) with only alarms left: alarms are never dropped", used, soft)

    async def _thin_telemetry(self) -> None:
        """Reduce fidelity: of the oldest half, keep every Nth reading."""
        db = self.db
        n = self.policy.thin_keep_every
        half = self.counters["telemetry"].pending // 2
        async with db.execute("SELECT seq FROM telemetry ORDER BY seq LIMIT 1 OFFSET ?", (half,)) as cur:
            row = await cur.fetchone()
        if row is None:
            return
        async with db.execute("SELECT value FROM meta WHERE key='thinned_upto'") as cur:
            r = await cur.fetchone()
        done_upto = int(r[0]) if r else 0
        await db.execute("BEGIN IMMEDIATE")
        before = db.total_changes
        await db.execute("DELETE FROM telemetry WHERE seq > ? AND seq < ? AND seq % ? != 0", (done_upto, row[0], n))
        removed = db.total_changes - before
        await db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('thinned_upto', ?)", (str(row[0]),))
        if removed:
            await add_counts(db, [(removed, "telemetry", "dropped:reduced_fidelity")])
        await db.execute("COMMIT")
        self.counters["telemetry"].removed("dropped:reduced_fidelity", removed)

    async def _delete_oldest(self, lane: str, counter: str, limit: int | None, older_than: float | None = None) -> int:
        """Delete the oldest rows of a lane (optionally only those older than a time); counted."""
        db = self.db
        total = 0
        while True:
            chunk = 5000 if limit is None else min(5000, limit - total)
            if chunk <= 0:
                break
            await db.execute("BEGIN IMMEDIATE")
            before = db.total_changes
            if older_than is None:
                await db.execute(f"DELETE FROM {lane} WHERE seq IN (SELECT seq FROM {lane} ORDER BY seq LIMIT ?)", (chunk,))
            else:
                await db.execute(f"DELETE FROM {lane} WHERE seq IN (SELECT seq FROM {lane} ORDER BY seq LIMIT ?) AND ts < ?", (chunk, older_than))
            removed = db.total_changes - before
            if removed:
                await add_counts(db, [(removed, lane, counter)])
            await db.execute("COMMIT")
            self.counters[lane].removed(counter, removed)
            total += removed
            if removed < chunk:
                break
        if total:
            log.warning("outbox: %d %s records %s", total, lane, counter.replace("dropped:", "dropped: "))
        return total
