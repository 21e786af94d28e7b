"""The SQLite outbox: a record is accepted once committed, and leaves only after PUBACK.

One writer task owns every write.  Telemetry is batched into at most one
commit per ``commit_interval`` (SD-card wear); alarms and events commit at
once.  Every commit is ``synchronous=FULL``: with WAL + NORMAL a power cut can
roll back rows already acknowledged, and AUTOINCREMENT would then hand their
sequence numbers out again.  Batching keeps that to a few fsyncs per second.
Each lane has its own table (``schema.py``) whose AUTOINCREMENT key is the
lane's sequence number: it never goes back, even after every row was deleted
or the process was killed.  Bounds are ``policy.py``, bookkeeping ``counters.py``;
acknowledged records are kept a while for replay (``retention.py``).

Alarms never wait on the disk: while commits fail, alarm and event records
are held in memory and published from there (``memory.py``), a
``store.degraded`` alarm says why (``degraded.py``), and they are committed
with the first transaction that succeeds.  A file deleted or replaced under
the daemon is noticed within ``check_interval`` and put back (``fileguard.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections import deque

import aiosqlite

from core.clock import Clock
from core.records import LANES, Lane, event_body
from gateway.outbox import fileguard, marks, opening, pages, retention, transaction
from gateway.outbox.counters import LaneCounters, load_counters
from gateway.outbox.degraded import CONFIRM_AFTER, DegradedMode, Episode, reason_of
from gateway.outbox.inthread import in_thread
from gateway.outbox.memory import Held, Item, MemoryLog, StoreFull
from gateway.outbox.policy import Pruner, StorePolicy
from gateway.outbox.ranges import AckedRanges
from gateway.outbox.retention import Row  # (seq, body, topic suffix or None: the lane's own topic)
from gateway.outbox.schema import check_topic

__all__ = ["Outbox", "Row", "StoreFull", "StorePolicy"]

log = logging.getLogger("canopy.store")


class Outbox(DegradedMode):
    """Durable store-and-forward queue, one table per lane."""

    def __init__(self, path: str, *, commit_interval: float = 0.5, queue_size: int = 10000, clock: Clock | None = None,
                 policy: StorePolicy | None = None, check_interval: float = 2.0, memory: MemoryLog | None = None):
        self.path = path
        self.commit_interval = commit_interval
        self.check_interval = check_interval  # how often the file at ``path`` is compared with the one open
        self.clock = clock or Clock()
        self.policy = policy or StorePolicy()
        # Telemetry waits in a bounded queue (backpressure on pollers); alarms
        # and events have their own, so they never queue behind telemetry.
        self._queue: asyncio.Queue[Item] = asyncio.Queue(maxsize=queue_size)
        self._urgent_items: deque[Item] = deque()
        self._urgent_limit = max(1000, queue_size)
        self._wakeup = asyncio.Event()
        self._urgent = asyncio.Event()
        self._acked: dict[str, AckedRanges] = {lane: AckedRanges() for lane in LANES}
        self.counters: dict[str, LaneCounters] = {lane: LaneCounters() for lane in LANES}
        self.memory = memory if memory is not None else MemoryLog()  # alarms/events published from memory while commits fail
        self.commits = 0
        self.commit_errors = 0
        self.last_error: str | None = None
        self.degraded = False  # commits are failing: telemetry is shed instead of blocking pollers
        self.episode: Episode | None = None  # a confirmed degradation (``store.degraded`` raised)
        self.boot = 0
        self.epoch = ""
        self.recovered_from: str | None = None  # path of a corrupt file moved aside at open
        self.on_commit: list = []  # callables, run when there is something new to publish
        self._fresh_alarms: list[Row] = []  # the last commit's alarm rows, until the uplink takes them
        self._db: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._reader_lock = asyncio.Lock()  # the reader is swapped when the file is put back
        self._pruner: Pruner | None = None
        self._writer_task: asyncio.Task | None = None
        self._closing = False
        self._next_check = 0.0
        self._page_size = 4096
        self._failures = 0  # consecutive failed commit attempts
        self._failing = False  # the last attempt failed: alarms and events go to memory at once
        self._held: list[Item] = []  # telemetry kept for the next attempt
        self._unsaved_meta: list[tuple[str, str]] = []  # boot/epoch not yet durable (full disk at start)
        self._opened: fileguard.OpenFiles | None = None
        self._file_problem: str | None = None  # deleted or replaced, until the file is put back
        self._put_back_failures = 0

    # -- lifecycle -------------------------------------------------------
    async def open(self) -> None:
        try:
            boot = await self._open_db(bump=True)
        except sqlite3.OperationalError as exc:
            # locked (another instance?), I/O error, cannot open: not corruption, never move aside
            raise RuntimeError(f"cannot open outbox {self.path}: {exc}") from None
        except sqlite3.DatabaseError as exc:  # not a database / malformed / quick_check failed
            self.last_error = str(exc)
            self.recovered_from = opening.move_aside(self.path, int(self.clock.time()))
            log.error("outbox %s is corrupt (%s): moved to %s, starting a fresh one", self.path, exc, self.recovered_from)
            boot = await self._open_db(bump=True)
        self._reader = await self._connect_reader()
        self._writer_task = asyncio.create_task(self._writer(), name="outbox-writer")
        if boot.failure is not None:  # the disk is full or failing already: start degraded
            self.commit_errors += 1
            self.last_error = str(boot.failure)
            self._failures = CONFIRM_AFTER
            self._failing = self.degraded = True
            self._begin_episode(reason_of(boot.failure), str(boot.failure))
        if self.recovered_from:
            await self.put("alarm", [event_body(self.clock.time(), "store.corrupt", severity="critical",
                                                moved_to=self.recovered_from, detail=self.last_error or "")], wait_commit=True)

    async def _open_db(self, *, bump: bool) -> opening.Boot:
        """The writer's connection; ``bump``: a start (boot + 1, counters read), else the file put back."""
        self._db = None
        db, self._page_size = await opening.connect_checked(self.path, self.policy.max_bytes)
        self._db = db
        try:
            boot = await opening.start_boot(db, self.path, bump=bump)
            if bump:
                for lane in LANES:
                    self.counters[lane] = await load_counters(db, lane, self.path)
        except sqlite3.Error:  # not a database, locked, cannot write: never left open
            with contextlib.suppress(Exception):
                await db.close()
            self._db = None
            raise
        if bump:
            self.boot = boot.boot
        self.epoch = boot.epoch
        if bump or not self._unsaved_meta:  # a boot not saved yet stays this run's boot
            self._unsaved_meta = boot.unsaved
        self._pruner = Pruner(db, self.policy, self.counters, self.clock, self._page_size)
        self._opened = await asyncio.to_thread(fileguard.OpenFiles.of, self.path)
        return boot

    async def _connect_reader(self) -> aiosqlite.Connection:
        reader = await aiosqlite.connect(self.path, isolation_level=None)
        await reader.execute("PRAGMA query_only=1")
        return reader

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
        for lane, n in self.memory.drop_all().items():  # published from memory, never committed
            self.counters[lane].shed["store_error"] = self.counters[lane].shed.get("store_error", 0) + n
            log.error("outbox closed with %d %s records it could never commit (published from memory)", n, lane)
        for conn in (self._reader, self._db):
            if conn is not None:
                await conn.close()
        self._db = self._reader = None

    @property
    def is_open(self) -> bool:
        return self._db is not None and not self._closing

    # -- producers ---------------------------------------------------------
    async def put(self, lane: Lane, bodies: list[bytes], *, wait_commit: bool = False, ts: float | None = None,
                  topic: str | None = None, mark: str | None = None) -> list[int] | None:
        """Queue records for the writer; with ``wait_commit``, return their seqs once committed (accepted).

        ``topic``: an alarm/event topic suffix (``cmd/result``, ``alert/{group}``), or several separated by
        one space (published on each; the records leave once every copy is acknowledged); None: the lane's own.
        Telemetry waits while its queue is full (backpressure), unless commits are failing: then the
        oldest queued telemetry is shed (counted) so polling goes on.  Alarms and events never wait:
        while commits fail they are published from memory at once, and once the store is confirmed
        degraded (``store.degraded``) the call returns ``[]`` without waiting for the disk (they are
        committed when it recovers); ``StoreFull`` when memory is full too.  ``mark``: the producer's name
        for the first record, committed with it (:meth:`marked`, marks.py).
        """
        if self._closing:
            raise RuntimeError("outbox is closing")
        topic = check_topic(lane, topic)
        done = asyncio.get_running_loop().create_future() if wait_commit else None
        item = Item(lane, self.clock.time() if ts is None else ts, bodies, done, topic, mark=mark)
        if lane == "telemetry":
            if self._queue.full() and self.degraded:
                old = self._queue.get_nowait()
                self._shed(old, "store_unavailable")
            await self._queue.put(item)
        elif self._failing:
            try:
                self._hold(item)
            except StoreFull:
                if done is not None:
                    done.exception()  # told here, by raising
                raise
        else:
            if len(self._urgent_items) >= self._urgent_limit and lane == "event":
                raise RuntimeError("event queue full: the store is not committing")
            self._urgent_items.append(item)
            self._urgent.set()
        self._wakeup.set()
        if done is not None:
            return await done
        return None

    async def marked(self, keys: list[str]) -> dict[str, marks.Marked]:
        """Which of these marks were committed, with their record's lane, seq and body (marks.py)."""
        if not keys or self._db is None:
            return {}
        return await in_thread(self._db, marks.find_in, keys)

    def _shed(self, item: Item, reason: str) -> None:
        c = self.counters[item.lane]
        c.shed[reason] = c.shed.get(reason, 0) + len(item.bodies)
        if item.done is not None and not item.done.done():
            item.done.set_exception(StoreFull(f"{item.lane} records shed: {reason}"))

    def _hold(self, item: Item) -> None:
        """Into memory, published from there at once; ``StoreFull`` (counted) when memory is full too."""
        try:
            self.memory.add(item)
        except StoreFull:
            self._shed(item, "memory_full")
            raise
        self._memory_changed()
        if self.episode is not None and item.done is not None and not item.done.done():
            item.done.set_result([])  # confirmed degraded: producers never wait on the disk

    def _memory_changed(self) -> None:
        for lane in ("alarm", "event"):
            self.counters[lane].in_memory = self.memory.count(lane)
        self._tell_readers()

    def _tell_readers(self) -> None:
        for cb in self.on_commit:
            cb()

    async def flush(self) -> None:
        """Return once everything queued so far is committed (durably), or at once while degraded."""
        done = asyncio.get_running_loop().create_future()
        item = Item("event", self.clock.time(), [], done)
        if self._failing:
            self._hold(item)
        else:
            self._urgent_items.append(item)
        self._wakeup.set()
        self._urgent.set()
        await done

    # -- consumer (uplink) -------------------------------------------------
    def ack(self, lane: Lane, first: int, last: int) -> None:
        """The broker has these records: delete them at the next commit."""
        self._acked[lane].add(first, last)
        self._wakeup.set()

    async def fetch(self, lane: Lane, after: int, limit: int) -> list[Row]:
        """Oldest pending records of a lane with seq > after, skipping acknowledged ones (pages.py)."""
        async with self._reader_lock:
            assert self._reader is not None
            return await pages.next_page(self._reader, self._acked[lane], lane, after, limit)

    def take_fresh_alarms(self) -> list[Row]:
        """The alarm rows the last commit made durable, as :meth:`fetch` would return them (once; ``on_commit``
        callbacks read them): the uplink publishes them without a trip to the reader's thread."""
        rows, self._fresh_alarms = self._fresh_alarms, []
        return rows

    def memory_rows(self, lane: Lane, after: int, limit: int) -> list[Row]:
        """Unacknowledged records held in memory with seq > after: published under ``memory.epoch``."""
        return self.memory.rows(lane, after, limit) if lane != "telemetry" else []

    def ack_memory(self, epoch: str, lane: Lane, first: int, last: int) -> None:
        """The broker has these records published from memory: counted, not stored, at the next commit."""
        for seq in self.memory.ack(epoch, lane, first, last):
            self.ack(lane, seq, seq)  # committed meanwhile: delete it there
        self._wakeup.set()

    def pending(self, lane: Lane) -> int:
        return self.counters[lane].pending

    async def holding(self, lane: Lane, lo: int, hi: int) -> retention.Holding:
        """For a replay: what the outbox holds of seqs lo..hi, pending seqs and retained rows (retention.py)."""
        async with self._reader_lock:
            return await retention.read_holding(self._reader, lane, lo, hi)

    async def oldest_held(self, lane: Lane) -> int | None:
        async with self._reader_lock:
            return await retention.oldest_held(self._reader, lane)

    # -- the writer ----------------------------------------------------------
    @property
    def writer_running(self) -> bool:
        """The writer task is alive (the watchdog keep-alive needs it)."""
        return self._writer_task is not None and not self._writer_task.done()

    def has_work(self) -> bool:
        return (bool(self._urgent_items) or not self._queue.empty() or any(self._acked.values()) or bool(self._held)
                or len(self.memory) > 0)

    async def _writer(self) -> None:
        last_commit = -1e9
        while True:
            if not self.has_work():
                if self._closing:
                    return
                if not await self._idle():
                    continue
            await self._batch_window(last_commit, self._failures > 0)
            await self._check_file()
            items = self._held + self._take_queued()
            self._held = []
            held = self.memory.snapshot()
            acks = {lane: self._acked[lane].items() for lane in LANES}
            started = self.clock.monotonic()
            try:
                await self._commit(items, acks, held)
            except sqlite3.Error as exc:
                if not await self._commit_failed(exc, items):
                    return
                continue
            last_commit = started  # pace commits from their start: a slow commit does not stretch the cycle
            await self._committed(items, acks, held)

    async def _idle(self) -> bool:
        """Sleep until there is work (True); prune and check the file when none came for a while (False)."""
        self._wakeup.clear()
        try:
            await asyncio.wait_for(self._wakeup.wait(), timeout=min(self.policy.prune_interval, self.check_interval))
            return True
        except asyncio.TimeoutError:
            await self._maybe_prune()
            await self._check_file()
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

    def _take_queued(self) -> list[Item]:
        items = list(self._urgent_items)
        self._urgent_items.clear()
        while not self._queue.empty():
            items.append(self._queue.get_nowait())
        return items

    async def _committed(self, items: list[Item], acks: dict[str, list[tuple[int, int]]], held: list[Held]) -> None:
        if self._failures:
            log.info("outbox commits work again after %d failure(s)", self._failures)
        self._failures = 0
        self._failing = False
        self.degraded = self._file_problem is not None
        for lane, ranges in acks.items():
            self._acked[lane].remove(ranges)
        for it in items:
            if it.done is not None and not it.done.done():
                it.done.set_result(it.seqs)
        self._fresh_alarms = [(seq, body, it.topic) for it in items if it.lane == "alarm"
                              for seq, body in zip(it.seqs, it.bodies)]
        if held:
            for lane, seq in self.memory.committed(held):
                self.ack(lane, seq, seq)  # its PUBACK came while the commit ran
            for e in held:
                if e.item.done is not None and not e.item.done.done():
                    e.item.done.set_result([r.disk_seq for r in e.records if r.disk_seq is not None])
            self._memory_changed()
        else:
            self._tell_readers()
        if self.episode is not None and self._file_problem is None and not len(self.memory):
            self._end_episode()
        await self._maybe_prune()

    async def _rollback(self) -> None:
        with contextlib.suppress(Exception):
            await self._db.execute("ROLLBACK")

    async def _commit(self, items: list[Item], acks: dict[str, list[tuple[int, int]]], held: list[Held] = ()) -> None:
        """One transaction (transaction.py): held records first, then queued items, deletions, counters."""
        assert self._db is not None
        p = transaction.plan(items, held)
        retain_at = self.clock.time() if self.policy.retains else None
        w = await transaction.write_commit(self._db, p, acks, self._unsaved_meta, retain_at)
        self.commits += 1
        self._unsaved_meta = []
        for lane in LANES:
            transaction.hand_out(self.counters[lane], p.owners[lane], w.deleted.get(lane, 0), p.counted[lane],
                                 w.seqs.get(lane), w.retained.get(lane))
        if self.episode is not None and held:
            self.episode.held += sum(len(e.records) for e in held)
            self.episode.delivered += sum(p.counted.values())

    # -- bounds: TTLs and the size cap (policy.py) ------------------------------
    async def used_bytes(self) -> int:
        return await self._pruner.used_bytes()

    async def _maybe_prune(self, force: bool = False) -> None:
        try:
            await self._pruner.maybe_prune(force)
        except sqlite3.Error as exc:
            await self._rollback()
            log.warning("outbox prune failed: %s", exc)

