"""One commit of the outbox writer: held records, queued records, deletions and counters in one transaction.

Records held in memory while the store could not commit go in first (they are
older); those the broker already acknowledged (published from memory) are
only counted, produced and acknowledged, never stored.  Acknowledged rows
leave their lane's table; while retention is on they are moved, in this same
transaction, to ``retained_{lane}`` for replay (``retention.py``): no commit
of their own, however many PUBACKs.  ``commit_in`` is the SQL (``write_commit`` runs it in one hop), mirrored
statement for statement by tests/gateway/outbox/test_power_loss.py;
``hand_out`` gives each new row its sequence number once COMMIT returned.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field

import aiosqlite

from core.records import LANES
from gateway.outbox import marks
from gateway.outbox.counters import LaneCounters, add_counts_in
from gateway.outbox.inthread import in_thread
from gateway.outbox.memory import Held, HeldRecord

Rows = dict[str, list[tuple[float, bytes, str | None]]]


@dataclass
class Plan:
    rows: Rows = field(default_factory=lambda: {lane: [] for lane in LANES})
    owners: dict[str, list] = field(default_factory=lambda: {lane: [] for lane in LANES})  # who gets each new seq
    counted: dict[str, int] = field(default_factory=lambda: dict.fromkeys(LANES, 0))  # acknowledged from memory
    marks: list[tuple[str, int, str]] = field(default_factory=list)  # (lane, index in rows[lane], key): marks.py


def plan(items: list, held: list[Held]) -> Plan:
    """What one commit inserts, in order: held records not yet acknowledged, then the queued items' bodies."""
    p = Plan()
    for e in held:
        for i, rec in enumerate(e.records):
            if rec.acked:
                p.counted[rec.lane] += 1
            else:
                if i == 0 and e.item.mark is not None:
                    p.marks.append((rec.lane, len(p.rows[rec.lane]), e.item.mark))
                p.rows[rec.lane].append((rec.ts, rec.body, rec.topic))
                p.owners[rec.lane].append(rec)
    for it in items:
        if it.mark is not None and it.bodies:
            p.marks.append((it.lane, len(p.rows[it.lane]), it.mark))
        p.rows[it.lane].extend((it.ts, b, it.topic) for b in it.bodies)
        p.owners[it.lane].extend([it] * len(it.bodies))
    return p


@dataclass
class Written:
    """What one commit did, per lane: rows deleted from the lane's table, its last seq, retained totals now."""

    deleted: dict[str, int]
    seqs: dict[str, int]
    retained: dict[str, dict[str, int]]  # lane -> {"retained": rows, "retained_bytes": bytes}, read back when they moved


async def write_commit(db: aiosqlite.Connection, p: Plan, acks: dict[str, list[tuple[int, int]]],
                       meta: list[tuple[str, str]], retain_at: float | None = None) -> Written:
    """The transaction, run whole in the connection's thread (one hop: inthread.py).  ``meta``: rows not yet
    durable (boot).  ``retain_at``: acknowledged rows are kept (``retained_{lane}``, acknowledged at that time)
    instead of deleted; None: deleted."""
    return await in_thread(db, commit_in, p, acks, meta, retain_at)


def commit_in(conn: sqlite3.Connection, p: Plan, acks: dict[str, list[tuple[int, int]]],
              meta: list[tuple[str, str]], retain_at: float | None) -> Written:
    """:func:`write_commit`'s SQL, with the plain connection (a failure leaves the rollback to the caller)."""
    rows, counted = p.rows, p.counted
    conn.execute("BEGIN IMMEDIATE")
    if meta:
        conn.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", meta)
    deleted: dict[str, int] = {}
    for lane in LANES:
        if rows[lane]:
            conn.executemany(f"INSERT INTO {lane} (ts, body, topic) VALUES (?, ?, ?)", rows[lane])
        if acks[lane]:
            if retain_at is not None:
                conn.executemany(f"INSERT INTO counters (lane, name, value) SELECT ?, 'retained_bytes', "
                                 f"coalesce(sum(length(body)), 0) FROM {lane} WHERE seq BETWEEN ? AND ? "
                                 "ON CONFLICT (lane, name) DO UPDATE SET value = value + excluded.value",
                                 [(lane, a, b) for a, b in acks[lane]])
                conn.executemany(f"INSERT OR IGNORE INTO retained_{lane} (seq, ts, body, topic, acked_at) "
                                 f"SELECT seq, ts, body, topic, ? FROM {lane} WHERE seq BETWEEN ? AND ?",
                                 [(retain_at, a, b) for a, b in acks[lane]])
            before = conn.total_changes
            conn.executemany(f"DELETE FROM {lane} WHERE seq BETWEEN ? AND ?", acks[lane])
            deleted[lane] = conn.total_changes - before
    delta = [(len(rows[lane]) + counted[lane], lane, "produced") for lane in LANES if rows[lane] or counted[lane]]
    delta += [(deleted.get(lane, 0) + counted[lane], lane, "acknowledged") for lane in LANES
              if deleted.get(lane) or counted[lane]]
    if retain_at is not None:
        delta += [(n, lane, "retained") for lane, n in deleted.items() if n]
    if delta:
        add_counts_in(conn, delta)
    seqs = {}
    for lane in LANES:
        if rows[lane]:
            seqs[lane] = conn.execute("SELECT seq FROM sqlite_sequence WHERE name=?", (lane,)).fetchone()[0]
    if p.marks:  # AUTOINCREMENT keys of one transaction are consecutive, in insertion order
        marks.write_in(conn, [(key, lane, seqs[lane] - len(rows[lane]) + 1 + i) for lane, i, key in p.marks])
    retained: dict[str, dict[str, int]] = {}
    if retain_at is not None and any(deleted.values()):
        for lane, name, value in conn.execute("SELECT lane, name, value FROM counters "
                                              "WHERE name IN ('retained', 'retained_bytes')").fetchall():
            retained.setdefault(lane, {})[name] = value
    conn.execute("COMMIT")
    return Written(deleted, seqs, retained)


def hand_out(c: LaneCounters, owners: list, deleted: int, counted: int, last: int | None,
             retained: dict[str, int] | None = None) -> None:
    """After COMMIT: the lane's counters in memory, and each new row's seq to its item or held record."""
    added = len(owners)
    c.produced += added + counted
    c.pending += added - deleted
    c.acknowledged += deleted + counted
    if retained:
        c.retained = retained.get("retained", c.retained)
        c.retained_bytes = retained.get("retained_bytes", c.retained_bytes)
    if last is None:
        return
    c.last_seq = last
    nxt = last - added + 1  # AUTOINCREMENT keys of one transaction are consecutive, in insertion order
    for owner in owners:
        if isinstance(owner, HeldRecord):
            owner.disk_seq = nxt
        else:
            owner.seqs.append(nxt)
        nxt += 1
