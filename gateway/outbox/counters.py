"""Per-lane bookkeeping of the outbox, persisted with the rows it counts.

Every record that was ever accepted is, at every moment and across crashes,
in exactly one place: acknowledged, pending, expired or dropped (by reason).
The counters live in the ``counters`` table and change in the same
transaction as the rows, so ``produced == acknowledged + pending + expired +
sum(dropped)`` holds on disk, not only in memory.  Acknowledged records kept for
replay (``retention.py``) stay ``acknowledged``: ``retained`` and
``retained_bytes`` say how many of them are still on disk, and how many body
bytes they take, persisted the same way.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass, field

import aiosqlite

from gateway.outbox.inthread import in_thread

log = logging.getLogger("canopy.store")

# names in the counters table (``dropped:<reason>`` besides these)
PERSISTED = ("produced", "acknowledged", "expired", "retained", "retained_bytes")


@dataclass
class LaneCounters:
    """Cumulative since the outbox file was created; ``produced`` counts records accepted (committed)."""

    produced: int = 0
    acknowledged: int = 0
    expired: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    pending: int = 0  # rows in the outbox now
    last_seq: int = 0  # highest sequence number ever given in this lane
    shed: dict[str, int] = field(default_factory=dict)  # never accepted (this run), by reason
    in_memory: int = 0  # held in memory while the store cannot commit (published from there; not accepted yet)
    retained: int = 0  # of the acknowledged, still kept on disk for replay
    retained_bytes: int = 0  # their bodies' bytes: what the retention budget counts

    def reconciles(self) -> bool:
        return self.produced == self.acknowledged + self.pending + self.expired + sum(self.dropped.values())

    def removed(self, counter: str, n: int) -> None:
        """Rows left the outbox other than by PUBACK: ``expired`` or ``dropped:<reason>``."""
        if not n:
            return
        self.pending -= n
        if counter == "expired":
            self.expired += n
        else:
            reason = counter.split(":", 1)[1]
            self.dropped[reason] = self.dropped.get(reason, 0) + n

    def as_dict(self) -> dict:
        d = {"produced": self.produced, "acknowledged": self.acknowledged, "pending": self.pending,
             "expired": self.expired, "dropped": dict(self.dropped), "last_seq": self.last_seq,
             "retained": self.retained, "retained_bytes": self.retained_bytes}
        if self.shed:
            d["shed"] = dict(self.shed)
        if self.in_memory:
            d["in_memory"] = self.in_memory
        return d


async def load_counters(db: aiosqlite.Connection, lane: str, where: str) -> LaneCounters:
    """A lane's counters as persisted, with its pending rows and last seq read from the tables."""
    c = LaneCounters()
    async with db.execute("SELECT name, value FROM counters WHERE lane=?", (lane,)) as cur:
        for name, value in await cur.fetchall():
            if name.startswith("dropped:"):
                c.dropped[name[8:]] = value
            elif name in PERSISTED:
                setattr(c, name, value)
    async with db.execute(f"SELECT count(*) FROM {lane}") as cur:
        c.pending = (await cur.fetchone())[0]
    async with db.execute("SELECT seq FROM sqlite_sequence WHERE name=?", (lane,)) as cur:
        row = await cur.fetchone()
    c.last_seq = row[0] if row else 0
    if not c.reconciles():
        # a file from before counters existed, or edited by hand: adopt what is there
        log.warning("outbox %s: %s counters did not reconcile (%s); adopting %d pending rows",
                    where, lane, c.as_dict(), c.pending)
        c.produced = c.acknowledged + c.pending + c.expired + sum(c.dropped.values())
    return c


async def add_counts(db: aiosqlite.Connection, delta: list[tuple[int, str, str]]) -> None:
    """Add ``(n, lane, name)`` to the persisted counters, inside the caller's transaction."""
    await in_thread(db, add_counts_in, delta)


def add_counts_in(conn: sqlite3.Connection, delta: list[tuple[int, str, str]]) -> None:
    """:func:`add_counts` in the connection's thread (a commit that runs there whole calls this)."""
    conn.executemany("INSERT OR IGNORE INTO counters (lane, name, value) VALUES (?, ?, 0)", [(l, n) for _, l, n in delta])
    conn.executemany("UPDATE counters SET value = value + ? WHERE lane = ? AND name = ?", delta)
