"""The SQLite outbox: a record is accepted once committed, and leaves only after PUBACK.

One writer task owns every write.  Telemetry is batched into at most one
commit per ``commit_interval`` (SD-card wear); alarms and events commit at
once with ``synchronous=FULL`` (durable against power loss).  Each lane has its
own table with an AUTOINCREMENT key, which is the lane's sequence number: it
never goes back, even after every row was deleted or the process was killed.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
from dataclasses import dataclass, field

import aiosqlite

from gateway.clock import Clock
from gateway.records import LANES, Lane

log = logging.getLogger("canopy.store")

SCHEMA = [
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    *(
        f"CREATE TABLE IF NOT EXISTS {lane} (seq INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, body BLOB NOT NULL)"
        for lane in LANES
    ),
]


@dataclass(slots=True)
class _Item:
    lane: Lane
    ts: float
    bodies: list[bytes]
    done: asyncio.Future | None = None


@dataclass
class LaneCounters:
    """Per-lane bookkeeping: accepted = acknowledged + pending at all times."""

    accepted: int = 0  # committed to SQLite (this run)
    acknowledged: int = 0  # PUBACK received and deleted (this run)
    pending: int = 0  # rows in the outbox now
    last_seq: int = 0  # highest sequence number ever given in this lane

    def as_dict(self) -> dict:
        return {"accepted": self.accepted, "acknowledged": self.acknowledged, "pending": self.pending, "last_seq": self.last_seq}


@dataclass
class _Ranges:
    """Sorted, merged closed intervals of acknowledged-but-not-yet-deleted seqs."""

    starts: list[int] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)

    def add(self, a: int, b: int) -> None:
        i = bisect.bisect_left(self.ends, a - 1)
        j = bisect.bisect_right(self.starts, b + 1)
        if i < j:
            a = min(a, self.starts[i])
            b = max(b, self.ends[j - 1])
        self.starts[i:j] = [a]
        self.ends[i:j] = [b]

    def covers(self, seq: int) -> bool:
        i = bisect.bisect_right(self.starts, seq) - 1
        return i >= 0 and seq <= self.ends[i]

    def items(self) -> list[tuple[int, int]]:
        return list(zip(self.starts, self.ends))

    def remove(self, done: list[tuple[int, int]]) -> None:
        for a, b in done:
            i = bisect.bisect_left(self.starts, a)
            if i < len(self.starts) and self.starts[i] == a and self.ends[i] == b:
                del self.starts[i], self.ends[i]
            else:  # merged since: cut [a, b] out of whatever covers it
                k = bisect.bisect_right(self.starts, a) - 1
                if k < 0 or self.ends[k] < a:
                    continue
                s, e = self.starts[k], self.ends[k]
                del self.starts[k], self.ends[k]
                if b < e:
                    self.starts.insert(k, b + 1)
                    self.ends.insert(k, e)
                if s < a:
                    self.starts.insert(k, s)
                    self.ends.insert(k, a - 1)

    def __bool__(self) -> bool:
        return bool(self.starts)


class Outbox:
    """Durable store-and-forward queue, one table per lane."""

    def __init__(self, path: str, *, commit_interval: float = 0.5, queue_size: int = 10000, clock: Clock | None = None):
        self.path = path
        self.commit_interval = commit_interval
        self.clock = clock or Clock()
        self._queue: asyncio.Queue[_Item] = asyncio.Queue(maxsize=queue_size)
        self._wakeup = asyncio.Event()
        self._urgent = asyncio.Event()
        self._acked: dict[str, _Ranges] = {lane: _Ranges() for lane in LANES}
        self.counters: dict[str, LaneCounters] = {lane: LaneCounters() for lane in LANES}
        self.commits = 0
        self.commit_errors = 0
        self.boot = 0
        self.on_commit: list = []  # callables, run after each successful commit
        self._db: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._writer_task: asyncio.Task | None = None
        self._closing = False

    # -- lifecycle -------------------------------------------------------
    async def open(self) -> None:
        self._db = await aiosqlite.connect(self.path, isolation_level=None)
        await self._db.execute("PRAGMA journal_mode=WAL")
        await self._db.execute("PRAGMA synchronous=FULL")
        for stmt in SCHEMA:
            await self._db.execute(stmt)
        async with self._db.execute("SELECT value FROM meta WHERE key='boot'") as cur:
            row = await cur.fetchone()
        self.boot = (int(row[0]) if row else 0) + 1
        await self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('boot', ?)", (str(self.boot),))
        await self._db.execute("PRAGMA synchronous=NORMAL")
        for lane in LANES:
            async with self._db.execute(f"SELECT count(*) FROM {lane}") as cur:
                self.counters[lane].pending = (await cur.fetchone())[0]
            async with self._db.execute("SELECT seq FROM sqlite_sequence WHERE name=?", (lane,)) as cur:
                row = await cur.fetchone()
            self.counters[lane].last_seq = row[0] if row else 0
        self._reader = await aiosqlite.connect(self.path, isolation_level=None)
        await self._reader.execute("PRAGMA query_only=1")
        self._writer_task = asyncio.create_task(self._writer(), name="outbox-writer")

    async def close(self) -> None:
        """Commit what is queued and acknowledged, then close."""
        self._closing = True
        self._wakeup.set()
        self._urgent.set()
        if self._writer_task:
            try:
                await asyncio.wait_for(self._writer_task, timeout=10)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                self._writer_task.cancel()
        for conn in (self._reader, self._db):
            if conn is not None:
                await conn.close()
        self._db = self._reader = None

    # -- producers ---------------------------------------------------------
    async def put(self, lane: Lane, bodies: list[bytes], *, wait_commit: bool = False, ts: float | None = None) -> None:
        """Queue records for the writer; waits while the queue is full (backpressure).

        With ``wait_commit`` it returns only once the records are committed,
        i.e. accepted.
        """
        if self._closing:
            raise RuntimeError("outbox is closing")
        done = asyncio.get_running_loop().create_future() if wait_commit else None
        await self._queue.put(_Item(lane, self.clock.time() if ts is None else ts, bodies, done))
        self._wakeup.set()
        if lane != "telemetry":
            self._urgent.set()
        if done is not None:
            await done

    async def flush(self) -> None:
        """Return once everything queued so far is committed (durably)."""
        done = asyncio.get_running_loop().create_future()
        await self._queue.put(_Item("event", self.clock.time(), [], done))
        self._wakeup.set()
        self._urgent.set()
        await done

    # -- consumer (uplink) -------------------------------------------------
    def ack(self, lane: Lane, first: int, last: int) -> None:
        """The broker has these records: delete them at the next commit."""
        self._acked[lane].add(first, last)
        self._wakeup.set()

    async def fetch(self, lane: Lane, after: int, limit: int) -> list[tuple[int, bytes]]:
        """Oldest pending records of a lane with seq > after, skipping acknowledged ones."""
        assert self._reader is not None
        async with self._reader.execute(f"SELECT seq, body FROM {lane} WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit)) as cur:
            rows = await cur.fetchall()
        acked = self._acked[lane]
        if acked:
            rows = [r for r in rows if not acked.covers(r[0])]
        return rows

    def pending(self, lane: Lane) -> int:
        return self.counters[lane].pending

    # -- the writer ----------------------------------------------------------
    async def _writer(self) -> None:
        last_commit = -1e9
        while True:
            if self._queue.empty() and not any(self._acked.values()):
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
            # Batch telemetry until the commit interval has passed; urgent
            # lanes (alarm, event) and shutdown commit at once.
            delay = last_commit + self.commit_interval - self.clock.monotonic()
            if delay > 0 and not self._urgent.is_set() and not self._closing:
                try:
                    await asyncio.wait_for(self._urgent.wait(), timeout=delay)
                except asyncio.TimeoutError:
                    pass
            self._urgent.clear()
            items: list[_Item] = []
            while not self._queue.empty():
                items.append(self._queue.get_nowait())
            acks = {lane: self._acked[lane].items() for lane in LANES}
            durable = any(it.lane != "telemetry" for it in items)
            while True:
                try:
                    await self._commit(items, acks, durable)
                    break
                except Exception as exc:  # disk full, I/O error: keep the batch, retry
                    self.commit_errors += 1
                    log.error("outbox commit failed (%s); %d records kept in memory, retrying", exc, sum(len(i.bodies) for i in items))
                    try:
                        await self._db.execute("ROLLBACK")
                    except Exception:
                        pass
                    await asyncio.sleep(min(5.0, 0.2 * self.commit_errors))
            last_commit = self.clock.monotonic()
            for lane, ranges in acks.items():
                self._acked[lane].remove(ranges)
            for it in items:
                if it.done is not None and not it.done.done():
                    it.done.set_result(None)
            for cb in self.on_commit:
                cb()

    async def _commit(self, items: list[_Item], acks: dict[str, list[tuple[int, int]]], durable: bool) -> None:
        db = self._db
        assert db is not None
        rows: dict[str, list[tuple[float, bytes]]] = {lane: [] for lane in LANES}
        for it in items:
            rows[it.lane].extend((it.ts, b) for b in it.bodies)
        if durable:
            await db.execute("PRAGMA synchronous=FULL")
        await db.execute("BEGIN IMMEDIATE")
        deleted: dict[str, int] = {}
        for lane in LANES:
            if rows[lane]:
                await db.executemany(f"INSERT INTO {lane} (ts, body) VALUES (?, ?)", rows[lane])
            if acks[lane]:
                before = db.total_changes
                await db.executemany(f"DELETE FROM {lane} WHERE seq BETWEEN ? AND ?", acks[lane])
                deleted[lane] = db.total_changes - before
        seqs = {}
        for lane in LANES:
            if rows[lane]:
                async with db.execute("SELECT seq FROM sqlite_sequence WHERE name=?", (lane,)) as cur:
                    seqs[lane] = (await cur.fetchone())[0]
        await db.execute("COMMIT")
        if durable:
            await db.execute("PRAGMA synchronous=NORMAL")
        self.commits += 1
        for lane in LANES:
            c = self.counters[lane]
            n = len(rows[lane])
            c.accepted += n
            c.pending += n - deleted.get(lane, 0)
            c.acknowledged += deleted.get(lane, 0)
            if lane in seqs:
                c.last_seq = seqs[lane]

