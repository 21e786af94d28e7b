"""Acknowledged records kept for replay: for how long, within what budget, and what a range of seqs holds.

The broker is not the last word: a centre consumer that stays away past
mosquitto's queue limit loses messages the gateway already had a PUBACK for,
and the centre then asks for that gap again (docs/protocol.md#replay).  So
the commit that used to delete acknowledged rows moves them, in the same
transaction, to ``retained_{lane}`` (transaction.py).  Here they go for good:

- ``StorePolicy.retain_for`` seconds after their PUBACK (looked at every
  ``WINDOW_CHECK`` s only: each deletion is a commit, and the SD card counts commits);
- over the budget ``StorePolicy.retain_budget`` (body bytes plus ``ROW_OVERHEAD`` a
  row): the oldest telemetry first, then events, alarms last, down to 90 % of it;
- before any record not yet delivered when the outbox is over its soft cap
  (``give_way``, called by policy.py): a copy the broker already had is worth less.

Every deletion changes the ``retained`` and ``retained_bytes`` counters in its own
transaction; the records stay ``acknowledged``, so the counters still reconcile.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiosqlite

from core.clock import Clock
from gateway.outbox.counters import LaneCounters, add_counts

log = logging.getLogger("canopy.store")

ROW_OVERHEAD = 32  # bytes a retained row takes besides its body: key, ts, acked_at, topic, cell header
WINDOW_CHECK = 60.0  # seconds between looks for rows past the retention window
ORDER = ("telemetry", "event", "alarm")  # what gives way first
CHUNK = 5000  # rows deleted per transaction

# A record as ``Outbox.fetch`` and the replay read it: (seq, body, topic column: suffixes, or None for the lane's own).
Row = tuple[int, bytes, str | None]


def footprint(c: LaneCounters) -> int:
    """Bytes a lane's retained rows count against the budget."""
    return c.retained_bytes + ROW_OVERHEAD * c.retained


async def drop_retained(db: aiosqlite.Connection, c: LaneCounters, lane: str, *, limit: int | None,
                        acked_before: float | None = None) -> int:
    """Delete the oldest retained rows of a lane (optionally only those acknowledged before a time); counted."""
    total = 0
    while True:
        chunk = CHUNK if limit is None else min(CHUNK, limit - total)
        if chunk <= 0:
            break
        when, args = ("", (chunk,)) if acked_before is None else (" AND acked_at < ?", (chunk, acked_before))
        await db.execute("BEGIN IMMEDIATE")
        async with db.execute(f"DELETE FROM retained_{lane} WHERE seq IN (SELECT seq FROM retained_{lane} "
                              f"ORDER BY seq LIMIT ?){when} RETURNING length(body)", args) as cur:
            sizes = [n for (n,) in await cur.fetchall()]
        if sizes:
            await add_counts(db, [(-len(sizes), lane, "retained"), (-sum(sizes), lane, "retained_bytes")])
        await db.execute("COMMIT")
        c.retained -= len(sizes)
        c.retained_bytes -= sum(sizes)
        total += len(sizes)
        if len(sizes) < chunk:
            break
    return total


class Retention:
    """The window and the budget of a StorePolicy, on the writer's connection (``Pruner`` calls it)."""

    def __init__(self, db: aiosqlite.Connection, policy, counters: dict[str, LaneCounters], clock: Clock):
        self.db = db
        self.policy = policy
        self.counters = counters
        self.clock = clock
        self._next_window = 0.0

    def used(self) -> int:
        return sum(footprint(self.counters[lane]) for lane in ORDER)

    def holds_any(self) -> bool:
        return any(self.counters[lane].retained for lane in ORDER)

    async def prune(self) -> None:
        """Past the window (now and then), then over the budget.  Also what an earlier config kept, once it is off."""
        if not self.holds_any():
            return
        now = self.clock.monotonic()
        if now >= self._next_window:
            self._next_window = now + WINDOW_CHECK
            cutoff = self.clock.time() - self.policy.retain_for
            gone = 0
            for lane in ORDER:
                if self.counters[lane].retained and await self._oldest_acked(lane) < cutoff:
                    gone += await drop_retained(self.db, self.counters[lane], lane, limit=None, acked_before=cutoff)
            if gone:
                log.info("outbox: %d acknowledged records left the retention window (%g s)", gone, self.policy.retain_for)
        budget = self.policy.retain_budget
        if self.used() > budget:
            async def excess() -> int:
                return self.used() - int(budget * 0.9)

            gone = await self._shrink(excess)
            log.info("outbox: retention over its budget (%d bytes): the %d oldest retained records dropped", budget, gone)

    async def _oldest_acked(self, lane: str) -> float:
        """When the lane's oldest retained row was acknowledged: a look at one row, no transaction when none is due."""
        async with self.db.execute(f"SELECT acked_at FROM retained_{lane} ORDER BY seq LIMIT 1") as cur:
            row = await cur.fetchone()
        return row[0] if row else float("inf")

    async def give_way(self, target: int, used_bytes: Callable[[], Awaitable[int]]) -> int:
        """The outbox is over its soft cap: drop retained rows until the file uses at most ``target`` bytes.

        Returns the bytes used afterwards.  Only then may records not yet delivered be thinned or dropped.
        """
        used = await used_bytes()
        if used <= target or not self.holds_any():
            return used
        state = {"used": used}

        async def excess() -> int:
            state["used"] = await used_bytes()
            return state["used"] - target

        gone = await self._shrink(excess)
        log.warning("outbox over its soft cap: %d retained (already delivered) records dropped first", gone)
        return state["used"]

    async def _shrink(self, excess: Callable[[], Awaitable[int]]) -> int:
        """Oldest first, telemetry before events before alarms, while ``excess()`` bytes are over; returns rows dropped."""
        gone = 0
        for lane in ORDER:
            c = self.counters[lane]
            while c.retained:
                over = await excess()
                if over <= 0:
                    return gone
                row = max(1, footprint(c) // c.retained)  # the lane's average row
                n = await drop_retained(self.db, c, lane, limit=-(-over // row))
                if not n:
                    break
                gone += n
        return gone


@dataclass(frozen=True, slots=True)
class Holding:
    """What the outbox holds of seqs lo..hi of a lane: the seqs still pending (not delivered yet), the retained rows."""

    pending: list[int]
    retained: list[Row]


async def read_holding(reader: aiosqlite.Connection, lane: str, lo: int, hi: int) -> Holding:
    """Pending first, then retained: a row that moves in between is seen twice, never missed."""
    async with reader.execute(f"SELECT seq FROM {lane} WHERE seq BETWEEN ? AND ? ORDER BY seq", (lo, hi)) as cur:
        pending = [s for (s,) in await cur.fetchall()]
    async with reader.execute(f"SELECT seq, body, topic FROM retained_{lane} WHERE seq BETWEEN ? AND ? ORDER BY seq",
                              (lo, hi)) as cur:
        retained = await cur.fetchall()
    return Holding(pending, retained)


async def oldest_held(reader: aiosqlite.Connection, lane: str) -> int | None:
    """The lowest seq of a lane still on disk, pending or retained (None: nothing)."""
    lows = []
    for table in (lane, f"retained_{lane}"):
        async with reader.execute(f"SELECT min(seq) FROM {table}") as cur:
            low = (await cur.fetchone())[0]
        if low is not None:
            lows.append(low)
    return min(lows, default=None)
