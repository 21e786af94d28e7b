"""Run a whole piece of SQL work in the outbox connection's own thread, as one hop.

Each ``await db.execute`` of aiosqlite is a round trip: the statement goes to the
connection's thread and its result comes back through the event loop's ready queue.
A commit of ten statements is ten such trips, and when the loop is busy (a junk flood
on ``…/cmd`` queues thousands of callbacks) every trip waits its turn: an alarm's commit
took tens of milliseconds of pure queueing.  ``in_thread`` sends one function that does
the whole transaction with the plain ``sqlite3`` connection, so it costs one trip.

It uses ``aiosqlite.Connection._execute`` (queue a callable for the connection's
thread), private but unchanged since aiosqlite 0.17; aiosqlite is pinned (pyproject.toml)
and tests/gateway/outbox cover this path, so an upgrade that changes it fails there.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import TypeVar

import aiosqlite

T = TypeVar("T")


async def in_thread(db: aiosqlite.Connection, fn: Callable[..., T], *args) -> T:
    """``fn(conn, *args)`` in ``db``'s thread, with its ``sqlite3.Connection``, in order with its other work."""
    def call() -> T:
        conn: sqlite3.Connection = db._conn
        return fn(conn, *args)

    return await db._execute(call)
