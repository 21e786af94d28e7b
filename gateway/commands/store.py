"""Durable command state in ``state_dir/commands.sqlite``, written off the event loop.

- ``seen``: command ids (per issuer) until their validity window is over, so
  a replay is refused even after a restart;
- ``cycles``: the open valve cycles, written *before* a valve is opened, so a
  cycle cut short by a crash or power loss is reported after the restart;
- ``runs``: automatic-program cycles per local day (at most K a day survives restarts);
- ``kv``: lockouts, the close-all hold, pending relocks.

Why it looks like this: an SD card's fsync can take a few hundred milliseconds,
and the same event loop times RS-485 frames and feeds the uplink.  So the loop
never touches the file.  ``cycles``, ``runs`` and ``kv`` are small and mirrored
in memory: reads are plain lookups, and a write changes the mirror at once and
queues the SQL for one writer task, which runs it on aiosqlite's thread (WAL,
``synchronous=FULL``), several queued writes per transaction.  Every write
returns a future that resolves once its transaction is committed; a caller
that must not act before the write is on disk awaits it (a command id before
the command runs, a cycle before the valve opens).  Writes commit in the order
they were made, so awaiting one also covers every write queued before it.

``on_commit`` (tests and ``bench/looplag.py``) is called on the writer thread
as each COMMIT starts, i.e. just before SQLite's fsync: a hook that sleeps
simulates a slow SD card.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta

import aiosqlite
import orjson

from core.backoff import RateLimitedLog

log = logging.getLogger("canopy.commands")

SCHEMA = [
    "CREATE TABLE IF NOT EXISTS seen (key TEXT PRIMARY KEY, until REAL NOT NULL)",
    "CREATE INDEX IF NOT EXISTS seen_until ON seen(until)",
    "CREATE TABLE IF NOT EXISTS cycles (valve TEXT PRIMARY KEY, body BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS runs (program TEXT NOT NULL, day TEXT NOT NULL, count INTEGER NOT NULL, PRIMARY KEY (program, day))",
    "CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, body BLOB NOT NULL)",
]
MAX_SEEN = 200_000  # ids kept at most; the oldest-expiring go first beyond this
RUN_DAYS = 7  # program run counts older than this are forgotten
MAX_QUEUED = 10_000  # writes waiting for the writer; beyond this a write fails at once
MAX_BATCH = 256  # writes per transaction

_TRIM_SEEN = ("DELETE FROM seen WHERE key IN (SELECT key FROM seen ORDER BY until "
              "LIMIT max(0, (SELECT count(*) FROM seen) - ?))")


class StoreError(Exception):
    """The command state could not be written (closed, overloaded, or the disk failed)."""


@dataclass(slots=True)
class _Write:
    statements: list[tuple[str, tuple]]
    done: asyncio.Future  # result: rowcount of the first statement


class CommandStore:
    def __init__(self, path: str, *, on_commit: Callable[[], None] | None = None):
        self.path = path
        self.on_commit = on_commit
        self.write_errors = 0
        self._db: aiosqlite.Connection | None = None
        self._queue: deque[_Write] = deque()
        self._wake = asyncio.Event()
        self._committing = False
        self._writer: asyncio.Task | None = None
        self._kv: dict[str, object] = {}
        self._cycles: dict[str, dict] = {}
        self._runs: dict[tuple[str, str], int] = {}
        self._ratelog = RateLimitedLog(log)

    # -- lifecycle ------------------------------------------------------------------------------
    async def open(self) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        try:
            self._db = await self._connect()
        except sqlite3.DatabaseError as exc:
            # a corrupt state file must not keep valves from being driven safe: set it aside
            aside = f"{self.path}.corrupt-{int(time.time())}"
            log.error("command state %s is unreadable (%s); moved to %s and starting empty", self.path, exc, aside)
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(self.path + suffix):
                    os.replace(self.path + suffix, aside + suffix)
            self._db = await self._connect()
        await self._load()
        self._writer = asyncio.create_task(self._write_loop(), name="commands-store-writer")

    async def _connect(self) -> aiosqlite.Connection:
        db = await aiosqlite.connect(self.path, isolation_level=None)
        try:
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA synchronous=FULL")
            for statement in SCHEMA:
                await db.execute(statement)
            await (await db.execute("SELECT count(*) FROM seen")).fetchone()
            if self.on_commit is not None:
                await db.set_trace_callback(self._traced)
        except BaseException:
            await db.close()
            raise
        if os.stat(self.path).st_mode & 0o077:
            os.chmod(self.path, 0o600)
        return db

    async def _load(self) -> None:
        """The small tables into memory: reads on the loop never wait for the disk."""
        db = self._db
        self._kv = {k: v for k, body in await db.execute_fetchall("SELECT key, body FROM kv")
                    if (v := _loads(body)) is not None}
        self._cycles = {valve: _loads(body) or {} for valve, body in await db.execute_fetchall("SELECT valve, body FROM cycles")}
        self._runs = {(p, d): n for p, d, n in await db.execute_fetchall("SELECT program, day, count FROM runs")}

    async def close(self) -> None:
        """Commit what is queued, then close (the runtime bounds how long this may take)."""
        if self._db is None:
            return
        try:
            await self.flush()
        finally:
            if self._writer is not None:
                self._writer.cancel()
                await asyncio.gather(self._writer, return_exceptions=True)
                self._writer = None
            db, self._db = self._db, None
            for w in self._queue:
                _fail(w.done, StoreError("the command store was closed before this write"))
            self._queue.clear()
            await db.close()

    async def flush(self) -> None:
        """Wait until every write made so far is committed (or has failed)."""
        if self._queue:
            await asyncio.wait([self._queue[-1].done])
        while self._committing:
            await asyncio.sleep(0.001)

    def idle(self) -> bool:
        return not self._queue and not self._committing

    # -- replay ids -----------------------------------------------------------------------------
    async def remember(self, key: str, until: float) -> bool:
        """Record an id, durably; False if it was already there (a replay)."""
        return await self._submit(("INSERT OR IGNORE INTO seen (key, until) VALUES (?, ?)", (key, until))) == 1

    async def purge(self, now: float) -> int:
        """Forget ids whose validity is over (and the oldest beyond MAX_SEEN)."""
        return await self._submit(("DELETE FROM seen WHERE until < ?", (now,)), (_TRIM_SEEN, (MAX_SEEN,)))

    # -- cycles ---------------------------------------------------------------------------------
    def save_cycle(self, valve: str, body: dict) -> asyncio.Future:
        self._cycles[valve] = dict(body)
        return self._submit(("INSERT OR REPLACE INTO cycles (valve, body) VALUES (?, ?)", (valve, orjson.dumps(body))))

    def clear_cycle(self, valve: str) -> asyncio.Future:
        self._cycles.pop(valve, None)
        return self._submit(("DELETE FROM cycles WHERE valve = ?", (valve,)))

    def cycles(self) -> dict[str, dict]:
        return {valve: dict(body) for valve, body in self._cycles.items()}

    # -- program runs per day -------------------------------------------------------------------
    def runs(self, program: str, day: str) -> int:
        return self._runs.get((program, day), 0)

    def add_run(self, program: str, day: str) -> int:
        """Count one more run of ``program`` on ``day`` (the mirror at once) and return the count."""
        cutoff = (date.fromisoformat(day) - timedelta(days=RUN_DAYS)).isoformat()
        for key in [k for k in self._runs if k[0] == program and k[1] < cutoff]:
            del self._runs[key]
        count = self._runs[(program, day)] = self._runs.get((program, day), 0) + 1
        self._submit(("INSERT INTO runs (program, day, count) VALUES (?, ?, 1) "
                      "ON CONFLICT(program, day) DO UPDATE SET count = count + 1", (program, day)),
                     ("DELETE FROM runs WHERE program = ? AND day < ?", (program, cutoff)))
        return count

    # -- small values ---------------------------------------------------------------------------
    def get(self, key: str, default=None):
        return self._kv.get(key, default)

    def put(self, key: str, value) -> asyncio.Future:
        if value is None:
            self._kv.pop(key, None)
            return self._submit(("DELETE FROM kv WHERE key = ?", (key,)))
        body = orjson.dumps(value)
        self._kv[key] = orjson.loads(body)
        return self._submit(("INSERT OR REPLACE INTO kv (key, body) VALUES (?, ?)", (key, body)))

    # -- the writer -----------------------------------------------------------------------------
    def _submit(self, *statements: tuple[str, tuple]) -> asyncio.Future:
        done = asyncio.get_running_loop().create_future()
        done.add_done_callback(_retrieve)  # a write nobody awaits is logged by the writer, not by asyncio
        if self._db is None:
            _fail(done, StoreError("the command store is not open"))
        elif len(self._queue) >= MAX_QUEUED:
            self.write_errors += 1
            _fail(done, StoreError(f"{MAX_QUEUED} writes already waiting for the disk"))
        else:
            self._queue.append(_Write(list(statements), done))
            self._wake.set()
        return done

    async def _write_loop(self) -> None:
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = [self._queue.popleft() for _ in range(min(len(self._queue), MAX_BATCH))]
            self._committing = True
            try:
                results = await self._commit(batch)
            except asyncio.CancelledError:
                for w in batch:
                    _fail(w.done, StoreError("the command store was closed during this write"))
                raise
            except Exception as exc:
                self.write_errors += len(batch)
                self._ratelog("write", "commands: %d write(s) to the command state failed: %s", len(batch), exc)
                for w in batch:
                    _fail(w.done, StoreError(f"cannot write the command state: {exc}"))
            else:
                for w, n in zip(batch, results):
                    if not w.done.done():
                        w.done.set_result(n)
            finally:
                self._committing = False

    async def _commit(self, batch: list[_Write]) -> list[int]:
        db = self._db
        await db.execute("BEGIN IMMEDIATE")
        try:
            results = []
            for w in batch:
                first = None
                for sql, params in w.statements:
                    cursor = await db.execute(sql, params)
                    first = cursor.rowcount if first is None else first
                results.append(first)
            await db.execute("COMMIT")
        except BaseException:
            try:
                await db.execute("ROLLBACK")
            except Exception:
                pass
            raise
        return results

    def _traced(self, sql: str) -> None:
        """sqlite3's trace callback, on the writer thread as each statement starts."""
        if sql == "COMMIT" and self.on_commit is not None:
            self.on_commit()


def _loads(body):
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


def _fail(fut: asyncio.Future, exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)


def _retrieve(fut: asyncio.Future) -> None:
    if not fut.cancelled():
        fut.exception()
