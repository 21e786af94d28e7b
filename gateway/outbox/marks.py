"""Marks: a producer's name for a record, committed in the same transaction as the record.

The alert engine keeps the records it decided but has not seen committed (``Alert.pending``)
in its state file, and saves that file again once the commit returned.  A ``kill -9``
between the commit and that save used to send the record twice after the restart (an
escalation step paged again under a new seq).  With a mark (``alert-id|tag``) written by
the very commit that stores the record, the restarted engine asks :func:`find` which of
its pending records are already in the outbox and takes their seq instead of sending
them again: exactly once across a crash, whatever the moment.

Only the newest ``KEEP`` marks are kept: a mark is needed for the milliseconds between a
commit and the producer's next save, or across one restart.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

KEEP = 1000


@dataclass(frozen=True)
class Marked:
    lane: str
    seq: int
    body: bytes | None  # the committed body while the outbox still has it (pending or retained), else None


def write_in(conn: sqlite3.Connection, marks: list[tuple[str, str, int]]) -> None:
    """Inside the commit: ``(key, lane, seq)`` of the records just inserted; the oldest beyond ``KEEP`` go."""
    conn.executemany("INSERT OR REPLACE INTO emitted (key, lane, seq) VALUES (?, ?, ?)", marks)
    conn.execute("DELETE FROM emitted WHERE n <= (SELECT max(n) FROM emitted) - ?", (KEEP,))


def find_in(conn: sqlite3.Connection, keys: list[str]) -> dict[str, Marked]:
    """The marks among ``keys`` with their record's lane, seq and (while kept) body."""
    found: dict[str, Marked] = {}
    for key in keys:
        row = conn.execute("SELECT lane, seq FROM emitted WHERE key = ?", (key,)).fetchone()
        if row is None:
            continue
        lane, seq = row
        body = None
        for table in (lane, f"retained_{lane}"):
            got = conn.execute(f"SELECT body FROM {table} WHERE seq = ?", (seq,)).fetchone()  # lane from our own table
            if got is not None:
                body = bytes(got[0])
                break
        found[key] = Marked(lane, seq, body)
    return found
