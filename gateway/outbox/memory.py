"""Alarm and event records held in memory while the outbox cannot commit, published from there at once.

A full disk, an I/O error or a vanished file must not hold back a fire alarm
(issue 12): the records the writer could not commit are kept here, the uplink
publishes them straight away, and the writer commits them with its next
successful transaction.  They carry their own **memory epoch** (random, one per
degraded episode) and a sequence per lane inside it, never a number of the
outbox's own sequence: nothing durable says which outbox numbers a crashed
process handed out from memory, so any number taken from that sequence could
be given again after a kill -9 and a receiver de-duplicating by
``(epoch, lane, seq)`` would drop a real alarm (docs/protocol.md#records-published-from-memory).

Bounded by a record count per lane and a byte total; what does not fit is
refused to its producer (``StoreFull``), which keeps it and retries.
"""

from __future__ import annotations

import asyncio
import bisect
import secrets
from dataclasses import dataclass, field

from core.records import Lane

# A record as the uplink publishes it: (seq in the memory epoch, body, topic column)
Row = tuple[int, bytes, str | None]


class StoreFull(Exception):
    """Records were shed before being accepted (the store cannot commit)."""


@dataclass(slots=True)
class Item:
    """A producer's put: queued for the writer, or held here while the store cannot commit."""

    lane: Lane
    ts: float
    bodies: list[bytes]
    done: asyncio.Future | None = None
    topic: str | None = None
    seqs: list[int] = field(default_factory=list)  # given at commit
    mark: str | None = None  # the producer's name for its first record, kept with its seq (marks.py)


@dataclass(slots=True)
class HeldRecord:
    lane: Lane
    seq: int  # in the memory epoch
    ts: float
    body: bytes
    topic: str | None
    acked: bool = False  # the broker has it: counted at the next commit, never stored
    disk_seq: int | None = None  # given when committed


@dataclass(slots=True)
class Held:
    """One producer's put: its records and the future it may be waiting on."""

    item: Item
    records: list[HeldRecord] = field(default_factory=list)


class MemoryLog:
    """What the store could not commit yet, by lane, in the order it was put."""

    def __init__(self, max_records: int = 1000, max_bytes: int = 8 * 1024 * 1024):
        self.max_records = max_records  # per lane
        self.max_bytes = max_bytes
        self.epoch: str | None = None
        self._entries: list[Held] = []
        self._lanes: dict[str, list[HeldRecord]] = {"alarm": [], "event": []}
        self._next = {"alarm": 1, "event": 1}
        self._bytes = 0
        self._late: dict[tuple[str, str, int], int] = {}  # (epoch, lane, seq) -> disk seq, for PUBACKs after the commit

    def __len__(self) -> int:
        return len(self._entries)

    def count(self, lane: str) -> int:
        return len(self._lanes.get(lane, ()))

    def add(self, item: Item) -> None:
        """Hold a put of the alarm or event lane; ``StoreFull`` when the bound is reached."""
        lane = item.lane
        size = sum(map(len, item.bodies))
        if self.count(lane) + len(item.bodies) > self.max_records or self._bytes + size > self.max_bytes:
            raise StoreFull(f"{lane} records shed: {self.count(lane)} records ({self._bytes} bytes) already held in "
                            "memory while the store cannot commit")
        if item.bodies:
            self.begin()
        held = Held(item)
        for body in item.bodies:
            rec = HeldRecord(lane, self._next[lane], item.ts, body, item.topic)
            self._next[lane] += 1
            held.records.append(rec)
            self._lanes[lane].append(rec)
        self._bytes += size
        self._entries.append(held)

    def begin(self) -> str:
        """The memory epoch of the current episode (a fresh one when none is open)."""
        if self.epoch is None:
            self.epoch = secrets.token_hex(8)
            self._next = {"alarm": 1, "event": 1}
            self._late.clear()
        return self.epoch

    # -- the uplink ---------------------------------------------------------
    def rows(self, lane: str, after: int, limit: int) -> list[Row]:
        """Unacknowledged records of a lane with seq > after, oldest first."""
        recs = self._lanes.get(lane, [])
        i = bisect.bisect_right(recs, after, key=lambda r: r.seq)
        out: list[Row] = []
        for rec in recs[i:]:
            if not rec.acked:
                out.append((rec.seq, rec.body, rec.topic))
                if len(out) >= limit:
                    break
        return out

    def ack(self, epoch: str, lane: str, first: int, last: int) -> list[int]:
        """The broker has these records; returns the disk seqs of those committed meanwhile (to acknowledge there)."""
        if epoch == self.epoch:
            recs = self._lanes.get(lane, [])
            i = bisect.bisect_left(recs, first, key=lambda r: r.seq)
            for rec in recs[i:]:
                if rec.seq > last:
                    break
                rec.acked = True
        return [s for seq in range(first, last + 1) if (s := self._late.pop((epoch, lane, seq), None)) is not None]

    # -- the writer ------------------------------------------------------------
    def snapshot(self) -> list[Held]:
        """Everything held now, for one commit attempt."""
        return list(self._entries)

    def committed(self, entries: list[Held]) -> list[tuple[str, int]]:
        """These were committed (``disk_seq`` set, or acknowledged and counted): forget them.

        Returns ``(lane, disk seq)`` of records acknowledged while the commit ran, to acknowledge on disk.
        """
        done = {id(e) for e in entries}
        gone = {id(r) for e in entries for r in e.records}
        self._entries = [e for e in self._entries if id(e) not in done]
        acked_meanwhile = []
        for e in entries:
            for rec in e.records:
                self._bytes -= len(rec.body)
                if rec.disk_seq is not None:
                    if rec.acked:
                        acked_meanwhile.append((rec.lane, rec.disk_seq))
                    elif self.epoch is not None:
                        self._late[(self.epoch, rec.lane, rec.seq)] = rec.disk_seq
        for lane, recs in self._lanes.items():
            self._lanes[lane] = [r for r in recs if id(r) not in gone]
        if not self._entries:
            self.epoch = None  # the episode is over; PUBACKs still in flight are mapped through _late
        return acked_meanwhile

    def drop_all(self) -> dict[str, int]:
        """Forget everything (the store closes without having committed it); returns how many records per lane."""
        lost = {lane: len(recs) for lane, recs in self._lanes.items() if recs}
        self._entries.clear()
        for recs in self._lanes.values():
            recs.clear()
        self._bytes = 0
        return lost

