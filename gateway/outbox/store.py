"""The SQLite outbox: a record is accepted once committed, and leaves only after PUBACK.

One writer task owns every write.  Telemetry is batched into at most one
commit per ``commit_interval`` (SD-card wear); alarms and events commit at
once.  Every commit is ``synchronous=FULL``: with WAL + NORMAL a power cut can
roll back rows already acknowledged, and AUTOINCREMENT would then hand their
sequence numbers out again.  Batching keeps that to a few fsyncs per second.  Each lane has its
own table with an AUTOINCREMENT key, which is the lane's sequence number: it
never goes back, even after every row was deleted or the process was killed.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import os
import secrets
import sqlite3
from collections import deque
from dataclasses import dataclass, field

import aiosqlite
import orjson

from core.clock import Clock
from core.records import LANES, Lane

log = logging.getLogger("canopy.store")

SCHEMA = [
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS counters (lane TEXT NOT NULL, name TEXT NOT NULL, value INTEGER NOT NULL, PRIMARY KEY (lane, name))",
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
    seqs: list[int] = field(default_factory=list)  # given at commit


@dataclass
class LaneCounters:
    """Per-lane bookkeeping, cumulative since the outbox file was created.

    Persisted in the same transaction as the rows they count, so at every
    moment, across crashes: produced == acknowledged + pending + expired +
    sum(dropped).  ``produced`` counts records accepted (committed).
    """

    produced: int = 0
    acknowledged: int = 0
    expired: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    pending: int = 0  # rows in the outbox now
    last_seq: int = 0  # highest sequence number ever given in this lane
    shed: dict[str, int] = field(default_factory=dict)  # never accepted (this run), by reason

    @property
    def accepted(self) -> int:
        return self.produced

    def reconciles(self) -> bool:
        return self.produced == self.acknowledged + self.pending + self.expired + sum(self.dropped.values())

    def as_dict(self) -> dict:
        d = {"produced": self.produced, "acknowledged": self.acknowledged, "pending": self.pending,
             "expired": self.expired, "dropped": dict(self.dropped), "last_seq": self.last_seq,
             "accepted": self.produced}
        if self.shed:
            d["shed"] = dict(self.shed)
        return d


@dataclass(frozen=True)
class StorePolicy:
    """Bounds of the outbox on disk and what gives way first (Fledge-style explicit policies).

    Telemetry: expires after its TTL; over the soft cap it is thinned (keep
    every Nth of the oldest half), then dropped oldest first.  Events expire
    after their TTL and are dropped oldest first only when no telemetry is
    left to give.  Alarms never expire and are never dropped: a share of the
    cap is reserved for them.
    """

    max_bytes: int = 256 * 1024 * 1024
    alarm_reserve: float = 0.1
    telemetry_ttl: float | None = 7 * 86400
    event_ttl: float | None = 30 * 86400
    thin_keep_every: int = 2
    prune_interval: float = 5.0

    def ttl(self, lane: str) -> float | None:
        return {"telemetry": self.telemetry_ttl, "event": self.event_ttl}.get(lane)


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


class StoreFull(Exception):
    pass


class Outbox:
    """Durable store-and-forward queue, one table per lane."""

    def __init__(self, path: str, *, commit_interval: float = 0.5, queue_size: int = 10000, clock: Clock | None = None,
                 policy: StorePolicy | None = None):
        self.path = path
        self.commit_interval = commit_interval
        self.clock = clock or Clock()
        self.policy = policy or StorePolicy()
        # Telemetry waits in a bounded queue (backpressure on pollers); alarms
        # and events have their own, so they never queue behind telemetry.
        self._queue: asyncio.Queue[_Item] = asyncio.Queue(maxsize=queue_size)
        self._urgent_items: deque[_Item] = deque()
        self._urgent_limit = max(1000, queue_size)
        self._wakeup = asyncio.Event()
        self._urgent = asyncio.Event()
        self._acked: dict[str, _Ranges] = {lane: _Ranges() for lane in LANES}
        self.counters: dict[str, LaneCounters] = {lane: LaneCounters() for lane in LANES}
        self.commits = 0
        self.commit_errors = 0
        self.last_error: str | None = None
        self.degraded = False  # commits are failing: telemetry is shed instead of blocking pollers
        self.boot = 0
        self.epoch = ""
        self.recovered_from: str | None = None  # path of a corrupt file moved aside at open
        self.on_commit: list = []  # callables, run after each successful commit
        self._db: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._writer_task: asyncio.Task | None = None
        self._closing = False
        self._next_prune = 0.0
        self._page_size = 4096

    # -- lifecycle -------------------------------------------------------
    async def open(self) -> None:
        try:
            await self._open_db()
        except sqlite3.OperationalError as exc:
            # locked (another instance?), I/O error, cannot open: not corruption, never move aside
            await self._discard_connections()
            raise RuntimeError(f"cannot open outbox {self.path}: {exc}") from None
        except sqlite3.DatabaseError as exc:  # not a database / malformed / quick_check failed
            await self._discard_connections()
            self.recovered_from = self._move_aside(str(exc))
            await self._open_db()
        self._reader = await aiosqlite.connect(self.path, isolation_level=None)
        await self._reader.execute("PRAGMA query_only=1")
        self._writer_task = asyncio.create_task(self._writer(), name="outbox-writer")
        if self.recovered_from:
            from core.records import event_body

            await self.put("alarm", [event_body(self.clock.time(), "store.corrupt", severity="critical",
                                                moved_to=self.recovered_from, detail=self.last_error or "")], wait_commit=True)

    async def _open_db(self) -> None:
        self._db = db = await aiosqlite.connect(self.path, isolation_level=None)
        await db.execute("PRAGMA busy_timeout=5000")
        async with db.execute("PRAGMA quick_check") as cur:
            result = [r[0] for r in await cur.fetchall()]
        if result != ["ok"]:
            raise sqlite3.DatabaseError("quick_check: " + "; ".join(result[:3]))
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute("PRAGMA synchronous=FULL")
        await db.execute("PRAGMA journal_size_limit=16777216")
        async with db.execute("PRAGMA page_size") as cur:
            self._page_size = (await cur.fetchone())[0]
        await db.execute(f"PRAGMA max_page_count={max(64, self.policy.max_bytes // self._page_size)}")
        await db.execute("BEGIN IMMEDIATE")
        for stmt in SCHEMA:
            await db.execute(stmt)
        meta = {k: v async for k, v in await db.execute("SELECT key, value FROM meta")}
        self.boot = int(meta.get("boot", 0)) + 1
        self.epoch = meta.get("epoch") or secrets.token_hex(8)
        await db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                             [("boot", str(self.boot)), ("epoch", self.epoch)])
        await db.execute("COMMIT")
        for lane in LANES:
            c = self.counters[lane] = LaneCounters()
            async with db.execute("SELECT name, value FROM counters WHERE lane=?", (lane,)) as cur:
                for name, value in await cur.fetchall():
                    if name.startswith("dropped:"):
                        c.dropped[name[8:]] = value
                    elif name in ("produced", "acknowledged", "expired"):
                        setattr(c, name, value)
            async with db.execute(f"SELECT count(*) FROM {lane}") as cur:
                c.pending = (await cur.fetchone())[0]
            async with db.execute("SELECT seq FROM sqlite_sequence WHERE name=?", (lane,)) as cur:
                row = await cur.fetchone()
            c.last_seq = row[0] if row else 0
            if not c.reconciles():
                # a file from before counters existed, or edited by hand: adopt what is there
                log.warning("outbox %s: %s counters did not reconcile (%s); adopting %d pending rows",
                            self.path, lane, c.as_dict(), c.pending)
                c.produced = c.acknowledged + c.pending + c.expired + sum(c.dropped.values())

    async def _discard_connections(self) -> None:
        if self._db is not None:
            try:
                await self._db.close()
            except Exception:
                pass
            self._db = None

    def _move_aside(self, reason: str) -> str:
        """Keep a corrupt file for forensics and start afresh."""
        stamp = int(self.clock.time())
        target = f"{self.path}.corrupt-{stamp}"
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(self.path + suffix):
                os.replace(self.path + suffix, target + suffix)
        self.last_error = reason
        log.error("outbox %s is corrupt (%s): moved to %s, starting a fresh one", self.path, reason, target)
        return target

    async def close(self) -> None:
        """Commit what is queued and acknowledged, then close."""
        if self._db is None:
            return
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

    @property
    def is_open(self) -> bool:
        return self._db is not None and not self._closing

    # -- producers ---------------------------------------------------------
    async def put(self, lane: Lane, bodies: list[bytes], *, wait_commit: bool = False, ts: float | None = None,
                  topic: str | None = None) -> list[int] | None:
        """Queue records for the writer.

        Telemetry waits while its queue is full (backpressure), unless commits
        are failing, in which case the oldest queued telemetry is shed (counted)
        so polling goes on.  Alarms and events never wait behind telemetry.
        With ``wait_commit`` it returns only once the records are committed,
        i.e. accepted, and returns their sequence numbers.
        """
        if self._closing:
            raise RuntimeError("outbox is closing")
        if topic is not None:  # TODO(outbox topic column): stored in the body until the column exists
            bodies = [b[:-1] + b',"topic":' + orjson.dumps(topic) + b"}" for b in bodies]
        done = asyncio.get_running_loop().create_future() if wait_commit else None
        item = _Item(lane, self.clock.time() if ts is None else ts, bodies, done)
        if lane == "telemetry":
            if self._queue.full() and self.degraded:
                old = self._queue.get_nowait()
                self._shed(old, "store_unavailable")
            await self._queue.put(item)
        else:
            if len(self._urgent_items) >= self._urgent_limit and lane == "event":
                raise RuntimeError("event queue full: the store is not committing")
            self._urgent_items.append(item)
            self._urgent.set()
        self._wakeup.set()
        if done is not None:
            return await done
        return None

    def _shed(self, item: _Item, reason: str) -> None:
        c = self.counters[item.lane]
        c.shed[reason] = c.shed.get(reason, 0) + len(item.bodies)
        if item.done is not None and not item.done.done():
            item.done.set_exception(StoreFull(f"{item.lane} records shed: {reason}"))

    async def flush(self) -> None:
        """Return once everything queued so far is committed (durably)."""
        done = asyncio.get_running_loop().create_future()
        self._urgent_items.append(_Item("event", self.clock.time(), [], done))
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
        acked = self._acked[lane]
        while True:
            async with self._reader.execute(f"SELECT seq, body FROM {lane} WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit)) as cur:
                rows = await cur.fetchall()
            if not acked or not rows or acked.ends[-1] < rows[0][0] or acked.starts[0] > rows[-1][0]:
                return rows  # no acknowledged range reaches this page (the usual case while draining)
            kept = [r for r in rows if not acked.covers(r[0])]
            if kept or len(rows) < limit:
                return kept
            after = rows[-1][0]  # a whole page already acknowledged: look further

    def pending(self, lane: Lane) -> int:
        return self.counters[lane].pending

    # -- the writer ----------------------------------------------------------
    def _has_work(self) -> bool:
        return bool(self._urgent_items) or not self._queue.empty() or any(self._acked.values())

    async def _writer(self) -> None:
        last_commit = -1e9
        failures = 0
        held: list[_Item] = []  # alarms/events that could not be committed yet
        while True:
            if not self._has_work() and not held:
                if self._closing:
                    return
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), timeout=self.policy.prune_interval)
                except asyncio.TimeoutError:
                    await self._maybe_prune()
                    continue
            # Batch telemetry until the commit interval has passed; urgent
            # lanes (alarm, event) and shutdown commit at once.
            delay = last_commit + self.commit_interval - self.clock.monotonic()
            if delay > 0 and not self._urgent.is_set() and not self._closing and not held:
                try:
                    await asyncio.wait_for(self._urgent.wait(), timeout=delay)
                except asyncio.TimeoutError:
                    pass
            self._urgent.clear()
            items: list[_Item] = held
            held = []
            while self._urgent_items:
                items.append(self._urgent_items.popleft())
            while not self._queue.empty():
                items.append(self._queue.get_nowait())
            acks = {lane: self._acked[lane].items() for lane in LANES}
            started = self.clock.monotonic()
            try:
                await self._commit(items, acks)
            except sqlite3.Error as exc:
                failures += 1
                self.commit_errors += 1
                self.last_error = str(exc)
                self.degraded = True
                await self._rollback()
                full = "full" in str(exc).lower()
                telemetry = [it for it in items if it.lane == "telemetry"]
                held = [it for it in items if it.lane != "telemetry"]
                if full or failures > 3:
                    # Give the space (or the retry) to alarms and events: shed this telemetry batch.
                    for it in telemetry:
                        self._shed(it, "store_full" if full else "store_error")
                else:
                    held = items
                if failures == 1 or failures % 50 == 0:
                    log.error("outbox commit failed (%s): %d alarm/event records kept in memory%s; retrying",
                              exc, sum(len(i.bodies) for i in held if i.lane != "telemetry"),
                              f", {sum(len(i.bodies) for i in telemetry)} telemetry records shed" if (full or failures > 3) else "")
                if full:
                    await self._maybe_prune(force=True)
                if self._closing and failures > 20:
                    for it in held:
                        self._shed(it, "store_error")
                    return
                await asyncio.sleep(min(2.0, 0.05 * failures))
                continue
            if failures:
                log.info("outbox commits work again after %d failure(s)", failures)
            failures = 0
            self.degraded = False
            last_commit = started  # pace commits from their start: a slow commit does not stretch the cycle
            for lane, ranges in acks.items():
                self._acked[lane].remove(ranges)
            for it in items:
                if it.done is not None and not it.done.done():
                    it.done.set_result(it.seqs)
            for cb in self.on_commit:
                cb()
            await self._maybe_prune()

    async def _rollback(self) -> None:
        try:
            await self._db.execute("ROLLBACK")
        except Exception:
            pass

    async def _commit(self, items: list[_Item], acks: dict[str, list[tuple[int, int]]]) -> None:
        db = self._db
        assert db is not None
        rows: dict[str, list[tuple[float, bytes]]] = {lane: [] for lane in LANES}
        for it in items:
            rows[it.lane].extend((it.ts, b) for b in it.bodies)
        await db.execute("BEGIN IMMEDIATE")
        deleted: dict[str, int] = {}
        for lane in LANES:
            if rows[lane]:
                await db.executemany(f"INSERT INTO {lane} (ts, body) VALUES (?, ?)", rows[lane])
            if acks[lane]:
                before = db.total_changes
                await db.executemany(f"DELETE FROM {lane} WHERE seq BETWEEN ? AND ?", acks[lane])
                deleted[lane] = db.total_changes - before
        delta = [(len(rows[lane]), lane, "produced") for lane in LANES if rows[lane]]
        delta += [(n, lane, "acknowledged") for lane, n in deleted.items() if n]
        if delta:
            await self._count(delta)
        seqs = {}
        for lane in LANES:
            if rows[lane]:
                async with db.execute("SELECT seq FROM sqlite_sequence WHERE name=?", (lane,)) as cur:
                    seqs[lane] = (await cur.fetchone())[0]
        await db.execute("COMMIT")
        for lane, last in seqs.items():
            # AUTOINCREMENT keys of one transaction are consecutive, in insertion order
            nxt = last - len(rows[lane]) + 1
            for it in items:
                if it.lane == lane:
                    it.seqs = list(range(nxt, nxt + len(it.bodies)))
                    nxt += len(it.bodies)
        self.commits += 1
        for lane in LANES:
            c = self.counters[lane]
            n = len(rows[lane])
            c.produced += n
            c.pending += n - deleted.get(lane, 0)
            c.acknowledged += deleted.get(lane, 0)
            if lane in seqs:
                c.last_seq = seqs[lane]

    async def _count(self, delta: list[tuple[int, str, str]]) -> None:
        """Add to persisted counters (inside the caller's transaction)."""
        await self._db.executemany("INSERT OR IGNORE INTO counters (lane, name, value) VALUES (?, ?, 0)", [(l, n) for _, l, n in delta])
        await self._db.executemany("UPDATE counters SET value = value + ? WHERE lane = ? AND name = ?", delta)

    # -- bounds: TTLs and the size cap ----------------------------------------
    async def used_bytes(self) -> int:
        async with self._db.execute("PRAGMA page_count") as cur:
            pages = (await cur.fetchone())[0]
        async with self._db.execute("PRAGMA freelist_count") as cur:
            free = (await cur.fetchone())[0]
        return (pages - free) * self._page_size

    async def _maybe_prune(self, force: bool = False) -> None:
        now = self.clock.monotonic()
        if not force and now < self._next_prune:
            return
        self._next_prune = now + self.policy.prune_interval
        try:
            await self._prune(force)
        except sqlite3.Error as exc:
            await self._rollback()
            log.warning("outbox prune failed: %s", exc)

    async def _prune(self, force: bool) -> None:
        cutoff_now = self.clock.time()
        for lane in ("telemetry", "event"):
            ttl = self.policy.ttl(lane)
            if ttl:
                await self._delete_oldest(lane, "expired", limit=None, older_than=cutoff_now - ttl)
        soft = int(self.policy.max_bytes * (1 - self.policy.alarm_reserve))
        used = await self.used_bytes()
        if used <= soft and not force:
            return
        target = int(soft * 0.9)
        c = self.counters["telemetry"]
        if used > target and c.pending > 1 and self.policy.thin_keep_every > 1:
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
        db = self._db
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
            await self._count([(removed, "telemetry", "dropped:reduced_fidelity")])
        await db.execute("COMMIT")
        self._applied("telemetry", "dropped:reduced_fidelity", removed)

    async def _delete_oldest(self, lane: str, counter: str, limit: int | None, older_than: float | None = None) -> int:
        """Delete the oldest rows of a lane (optionally only those older than a time); counted."""
        db = self._db
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
                await self._count([(removed, lane, counter)])
            await db.execute("COMMIT")
            self._applied(lane, counter, removed)
            total += removed
            if removed < chunk:
                break
        if total:
            log.warning("outbox: %d %s records %s", total, lane, counter.replace("dropped:", "dropped: "))
        return total

    def _applied(self, lane: str, counter: str, n: int) -> None:
        if not n:
            return
        c = self.counters[lane]
        c.pending -= n
        if counter == "expired":
            c.expired += n
        else:
            reason = counter.split(":", 1)[1]
            c.dropped[reason] = c.dropped.get(reason, 0) + n
