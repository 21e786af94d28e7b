"""The uplink's reads: the next page of a lane's pending rows, past the ones already acknowledged.

Acknowledged rows leave their table only with the next commit (batched: SD-card wear), so a
page may start with rows the broker already has; those are skipped here, not sent twice.
Each page is one trip to the reader connection's thread (inthread.py): an alarm is sent sooner.
"""

from __future__ import annotations

import sqlite3

import aiosqlite

from core.records import Lane
from gateway.outbox.inthread import in_thread
from gateway.outbox.ranges import AckedRanges
from gateway.outbox.retention import Row


async def next_page(reader: aiosqlite.Connection, acked: AckedRanges, lane: Lane, after: int, limit: int) -> list[Row]:
    """Oldest pending rows of ``lane`` with seq > ``after``, skipping acknowledged ones (the caller holds the reader)."""
    while True:
        rows = await in_thread(reader, _page_in, lane, after, limit)
        if not acked or not rows or acked.ends[-1] < rows[0][0] or acked.starts[0] > rows[-1][0]:
            return rows  # no acknowledged range reaches this page (the usual case while draining)
        kept = [r for r in rows if not acked.covers(r[0])]
        if kept or len(rows) < limit:
            return kept
        after = rows[-1][0]  # a whole page already acknowledged: look further


def _page_in(conn: sqlite3.Connection, lane: Lane, after: int, limit: int) -> list[Row]:
    return conn.execute(f"SELECT seq, body, topic FROM {lane} WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit)).fetchall()
