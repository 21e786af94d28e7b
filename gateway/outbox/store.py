"""The SQLite outbox: a record is accepted once committed, and leaves only after PUBACK.

One writer task owns every write.  Telemetry is batched into at most one
commit per ``commit_interval`` (SD-card wear); alarms and events commit at
once.  Every commit is ``synchronous=FULL``: with WAL + NORMAL a power cut can
roll back rows already acknowledged, and AUTOINCREMENT would then hand their
sequence numbers out again.  Batching keeps that to a few fsyncs per second.
Each lane has its own table (``schema.py``) whose AUTOINCREMENT key is the
lane's sequence number: it never goes back, even after every row was deleted
or the process was killed.  Bounds are ``policy.py``, bookkeeping ``counters.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import sqlite3
from collections import deque
from dataclasses import dataclass, field

import aiosqlite

from core.clock import Clock
from core.records import LANES, Lane, event_body
from gateway.outbox.counters import LaneCounters, add_counts, load_counters
from gateway.outbox.policy import Pruner, StorePolicy
from gateway.outbox.ranges import AckedRanges
from gateway.outbox.schema import SCHEMA, check_topic, migrate

log = logging.getLogger("canopy.store")

# A pending record as ``fetch`` returns it: (seq, body, topic suffix or None for the lane's own topic).
Row = tuple[int, bytes, str | None]


@dataclass(slots=True)
class _Item:
    lane: Lane
    ts: float
    bodies: list[bytes]
    done: asyncio.Future | None = None
    topic: str | None = None
    seqs: list[int] = field(default_factory=list)  # given at commit


class StoreFull(Exception):
    """Records were shed before being accepted (the store cannot commit)."""


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
        self._acked: dict[str, AckedRanges] = {lane: AckedRanges() for lane in LANES}
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
        self._pruner: Pruner | None = None
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
        self._pruner = Pruner(self._db, self.policy, self.counters, self.clock, self._page_size)
        self._reader = await aiosqlite.connect(self.path, isolation_level=None)
        await self._reader.execute("PRAGMA query_only=1")
        self._writer_task = asyncio.create_task(self._writer(), name="outbox-writer")
        if self.recovered_from:
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
        moved = await migrate(db)
        meta = {k: v async for k, v in await db.execute("SELECT key, value FROM meta")}
        self.boot = int(meta.get("boot", 0)) + 1
        self.epoch = meta.get("epoch") or secrets.token_hex(8)
        await db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                             [("boot", str(self.boot)), ("epoch", self.epoch)])
        await db.execute("COMMIT")
        if moved:
            log.info("outbox %s: upgraded; %d pending records had their topic moved to the topic column", self.path, moved)
        for lane in LANES:
            self.counters[lane] = await load_counters(db, lane, self.path)

    async def _discard_connections(self) -> None:
        if self._db is not None:
            with contextlib.suppress(Exception):
                await self._db.close()
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
        """Queue records for the writer; with ``wait_commit``, return their seqs once committed (accepted).

        ``topic``: an alarm/event topic suffix (``cmd/result``, ``alert/{group}``), or several separated by
        one space (published on each; the records leave once every copy is acknowledged); None: the lane's own.
        Telemetry waits while its queue is full (backpressure), unless commits are failing: then the
        oldest queued telemetry is shed (counted) so polling goes on.  Alarms and events never wait.
        """
        if self._closing:
            raise RuntimeError("outbox is closing")
        topic = check_topic(lane, topic)
        done = asyncio.get_running_loop().create_future() if wait_commit else None
        item = _Item(lane, self.clock.time() if ts is None else ts, bodies, done, topic)
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

    async def fetch(self, lane: Lane, after: int, limit: int) -> list[Row]:
        """Oldest pending records of a lane with seq > after, skipping acknowledged ones."""
        assert self._reader is not None
        acked = self._acked[lane]
        while True:
            async with self._reader.execute(f"SELECT seq, body, topic FROM {lane} WHERE seq > ? ORDER BY seq LIMIT ?",
                                            (after, limit)) as cur:
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
    @property
    def writer_running(self) -> bool:
        """The writer task is alive (the watchdog keep-alive needs it)."""
        return self._writer_task is not None and not self._writer_task.done()

    def has_work(self) -> bool:
        return bool(self._urgent_items) or not self._queue.empty() or any(self._acked.values())

    async def _writer(self) -> None:
        last_commit = -1e9
        failures = 0
        held: list[_Item] = []  # alarms/events that could not be committed yet
        while True:
            if not self.has_work() and not held:
                if self._closing:
                    return
                if not await self._idle():
                    continue
            await self._batch_window(last_commit, bool(held))
            items = held + self._take_queued()
            acks = {lane: self._acked[lane].items() for lane in LANES}
            started = self.clock.monotonic()
            try:
                await self._commit(items, acks)
            except sqlite3.Error as exc:
                failures += 1
                held = await self._commit_failed(exc, items, failures)
                if held is None:
                    return
                continue
            if failures:
                log.info("outbox commits work again after %d failure(s)", failures)
            failures = 0
            held = []
            self.degraded = False
            last_commit = started  # pace commits from their start: a slow commit does not stretch the cycle
            await self._committed(items, acks)

    async def _idle(self) -> bool:
        """Sleep until there is work (True); prune when none came for a while (False)."""
        self._wakeup.clear()
        try:
            await asyncio.wait_for(self._wakeup.wait(), timeout=self.policy.prune_interval)
            return True
        except asyncio.TimeoutError:
            await self._maybe_prune()
            return False

    async def _batch_window(self, last_commit: float, holding: bool) -> None:
        """Batch telemetry until the commit interval has passed; alarms, events, retries and shutdown go at once."""
        delay = last_commit + self.commit_interval - self.clock.monotonic()
        if delay > 0 and not self._urgent.is_set() and not self._closing and not holding:
            try:
                await asyncio.wait_for(self._urgent.wait(), timeout=delay)
            except asyncio.TimeoutError:
                pass
        self._urgent.clear()

    def _take_queued(self) -> list[_Item]:
        items = list(self._urgent_items)
        self._urgent_items.clear()
        while not self._queue.empty():
            items.append(self._queue.get_nowait())
        return items

    async def _commit_failed(self, exc: sqlite3.Error, items: list[_Item], failures: int) -> list[_Item] | None:
        """Keep alarms/events for a retry; shed telemetry when the disk is full or failures persist.

        Returns what to retry, or None when closing has waited long enough.
        """
        self.commit_errors += 1
        self.last_error = str(exc)
        self.degraded = True
        await self._rollback()
        full = "full" in str(exc).lower()
        shedding = full or failures > 3
        telemetry = [it for it in items if it.lane == "telemetry"]
        held = [it for it in items if it.lane != "telemetry"] if shedding else items
        if shedding:  # give the space (or the retry) to alarms and events
            for it in telemetry:
                self._shed(it, "store_full" if full else "store_error")
        if failures == 1 or failures % 50 == 0:
            log.error("outbox commit failed (%s): %d alarm/event records kept in memory%s; retrying",
                      exc, sum(len(i.bodies) for i in held if i.lane != "telemetry"),
                      f", {sum(len(i.bodies) for i in telemetry)} telemetry records shed" if shedding else "")
        if full:
            await self._maybe_prune(force=True)
        if self._closing and failures > 20:
            for it in held:
                self._shed(it, "store_error")
            return None
        await asyncio.sleep(min(2.0, 0.05 * failures))
        return held

    async def _committed(self, items: list[_Item], acks: dict[str, list[tuple[int, int]]]) -> None:
        for lane, ranges in acks.items():
            self._acked[lane].remove(ranges)
        for it in items:
            if it.done is not None and not it.done.done():
                it.done.set_result(it.seqs)
        for cb in self.on_commit:
            cb()
        await self._maybe_prune()

    async def _rollback(self) -> None:
        with contextlib.suppress(Exception):
            await self._db.execute("ROLLBACK")

    async def _commit(self, items: list[_Item], acks: dict[str, list[tuple[int, int]]]) -> None:
        db = self._db
        assert db is not None
        rows: dict[str, list[tuple[float, bytes, str | None]]] = {lane: [] for lane in LANES}
        for it in items:
            rows[it.lane].extend((it.ts, b, it.topic) for b in it.bodies)
        await db.execute("BEGIN IMMEDIATE")
        deleted: dict[str, int] = {}
        for lane in LANES:
            if rows[lane]:
                await db.executemany(f"INSERT INTO {lane} (ts, body, topic) VALUES (?, ?, ?)", rows[lane])
            if acks[lane]:
                before = db.total_changes
                await db.executemany(f"DELETE FROM {lane} WHERE seq BETWEEN ? AND ?", acks[lane])
                deleted[lane] = db.total_changes - before
        delta = [(len(rows[lane]), lane, "produced") for lane in LANES if rows[lane]]
        delta += [(n, lane, "acknowledged") for lane, n in deleted.items() if n]
        if delta:
            await add_counts(db, delta)
        seqs = {}
        for lane in LANES:
            if rows[lane]:
                async with db.execute("SELECT seq FROM sqlite_sequence WHERE name=?", (lane,)) as cur:
                    seqs[lane] = (await cur.fetchone())[0]
        await db.execute("COMMIT")
        self.commits += 1
        for lane in LANES:
            self._count_commit(lane, items, len(rows[lane]), deleted.get(lane, 0), seqs.get(lane))

    def _count_commit(self, lane: str, items: list[_Item], added: int, deleted: int, last: int | None) -> None:
        """After COMMIT: hand out the lane's seqs and update its counters in memory."""
        c = self.counters[lane]
        c.produced += added
        c.pending += added - deleted
        c.acknowledged += deleted
        if last is None:
            return
        c.last_seq = last
        nxt = last - added + 1  # AUTOINCREMENT keys of one transaction are consecutive, in insertion order
        for it in items:
            if it.lane == lane:
                it.seqs = list(range(nxt, nxt + len(it.bodies)))
                nxt += len(it.bodies)

    # -- bounds: TTLs and the size cap (policy.py) ------------------------------
    async def used_bytes(self) -> int:
        return await self._pruner.used_bytes()

    async def _maybe_prune(self, force: bool = False) -> None:
        now = self.clock.monotonic()
        if not force and now < self._next_prune:
            return
        self._next_prune = now + self.policy.prune_interval
        try:
            await self._pruner.prune(force)
        except sqlite3.Error as exc:
            await self._rollback()
            log.warning("outbox prune failed: %s", exc)
