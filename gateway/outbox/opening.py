"""Opening the outbox file: integrity check, durability pragmas, schema, and this start's ``boot`` and ``epoch``.

``boot`` is stored durably before any record of that boot is written.  When
the disk is full (or failing) at start, an existing outbox still opens: the
new ``boot`` (and a new file's epoch) is kept unsaved and written in the same
transaction as the first records that can be committed, and the store starts
degraded, publishing alarms and events from memory (``memory.py``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import sqlite3
from dataclasses import dataclass, field

import aiosqlite

from gateway.outbox.degraded import is_space_or_io
from gateway.outbox.schema import SCHEMA, TABLES, VERSION, migrate

log = logging.getLogger("canopy.store")


@dataclass
class Boot:
    boot: int
    epoch: str
    unsaved: list[tuple[str, str]] = field(default_factory=list)  # meta rows to write with the first commit
    failure: sqlite3.Error | None = None  # why they could not be written now


async def connect_checked(path: str, max_bytes: int) -> tuple[aiosqlite.Connection, int]:
    """The writer's connection, checked (``DatabaseError`` when corrupt) and set up; returns it and the page size."""
    db = await aiosqlite.connect(path, isolation_level=None)
    try:
        await db.execute("PRAGMA busy_timeout=5000")
        async with db.execute("PRAGMA quick_check") as cur:
            result = [r[0] for r in await cur.fetchall()]
        if result != ["ok"]:
            raise sqlite3.DatabaseError("quick_check: " + "; ".join(result[:3]))
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute("PRAGMA synchronous=FULL")
        await db.execute("PRAGMA journal_size_limit=16777216")
        async with db.execute("PRAGMA page_size") as cur:
            page_size = (await cur.fetchone())[0]
        await db.execute(f"PRAGMA max_page_count={max(64, max_bytes // page_size)}")
    except BaseException:
        with contextlib.suppress(Exception):
            await db.close()
        raise
    return db, page_size


async def start_boot(db: aiosqlite.Connection, path: str, *, bump: bool = True) -> Boot:
    """Schema and upgrade, then ``boot`` + 1 (when ``bump``) and the epoch, committed when the disk lets us."""
    try:
        await db.execute("BEGIN IMMEDIATE")
        for stmt in SCHEMA:
            await db.execute(stmt)
        moved = await migrate(db)
        meta = {k: v async for k, v in await db.execute("SELECT key, value FROM meta")}
        boot = _boot_of(meta, bump)
        await db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", boot.unsaved)
        await db.execute("COMMIT")
    except sqlite3.OperationalError as exc:
        return await _start_unsaved(db, path, bump, exc)
    if moved:
        log.info("outbox %s: upgraded; %d pending records had their topic moved to the topic column", path, moved)
    boot.unsaved = []
    return boot


def _boot_of(meta: dict[str, str], bump: bool) -> Boot:
    boot = int(meta.get("boot", 0)) + (1 if bump else 0)
    epoch = meta.get("epoch") or secrets.token_hex(8)
    return Boot(boot, epoch, [("boot", str(boot)), ("epoch", epoch)])


async def _start_unsaved(db: aiosqlite.Connection, path: str, bump: bool, exc: sqlite3.OperationalError) -> Boot:
    """The disk refused the start's transaction: go on with an existing, current file; re-raise otherwise."""
    with contextlib.suppress(Exception):
        await db.execute("ROLLBACK")
    if not is_space_or_io(exc) or not await _is_current(db):
        raise exc
    async with db.execute("SELECT key, value FROM meta") as cur:
        boot = _boot_of(dict(await cur.fetchall()), bump)
    boot.failure = exc
    log.error("outbox %s: cannot write at start (%s): boot %d stays unsaved until the store can commit",
              path, exc, boot.boot)
    return boot


async def _is_current(db: aiosqlite.Connection) -> bool:
    """The file already has every table at the current version (nothing needs writing before records can go in)."""
    async with db.execute("PRAGMA user_version") as cur:
        version = (await cur.fetchone())[0]
    async with db.execute(f"SELECT count(*) FROM sqlite_master WHERE type='table' AND name IN "
                          f"({', '.join('?' * len(TABLES))})", TABLES) as cur:
        tables = (await cur.fetchone())[0]
    return version >= VERSION and tables == len(TABLES)


def move_aside(path: str, stamp: int) -> str:
    """Keep a corrupt file for forensics; the caller starts afresh."""
    target = f"{path}.corrupt-{stamp}"
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.replace(path + suffix, target + suffix)
    return target
