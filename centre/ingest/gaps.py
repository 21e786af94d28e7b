"""Gap tracking per (site, gateway, epoch, lane), against the store -- not against one instance's stream.

With a shared subscription each instance sees only its share of a lane, so the receiver
rule (docs/protocol.md#receiver-rule) runs over what is *stored*: the ``lanes`` table keeps
its floor (every seq at or below it is stored, or was given up as a recorded gap), and a
scan finds the missing runs above it with one window query per lane, and the tail above the
highest seq stored up to the last seq the gateway's ``…/state`` announces.  A run still
missing after ``ingest.gap_report_after`` seconds is recorded in ``gaps`` (``open``) and
handed to ``centre.request_replay`` (the gap-repair hook; ``repair_requested`` when a
request went out); when its records arrive it becomes ``repaired``; after
``ingest.gap_give_up_after`` it is ``unrepairable``, with its size, and the floor moves
past it.  A ``partial`` replay answer that says part of a recorded gap is no longer held
(not_held.py) makes that part ``unrepairable`` at once: the gap is cut, the part that may
still come stays open (a row of its own, asked for again).  Only the leader scans
(``centre.is_leader("gaps")``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

import sqlalchemy as sa

from centre.hub import Change
from centre.ingest import not_held
from centre.store import schema
from centre.store.engine import write_transaction

log = logging.getLogger("centre.gaps")

LaneKey = tuple[str, str, str, str]  # site, gateway, epoch, lane
OPEN = ("open", "repair_requested")


@dataclass(frozen=True, slots=True)
class GapRef:
    """A recorded run of missing seqs (a row of ``gaps``), as handed to ``centre.request_replay``."""

    id: int
    site: str
    gateway: str
    epoch: str
    lane: str
    first_seq: int
    last_seq: int


@dataclass(slots=True)
class Missing:
    first: int
    last: int
    since: float  # centre time first seen
    remaining: int
    gap_id: int | None = None  # its gaps row, once recorded


@dataclass(slots=True)
class LaneScan:
    scanned_to: int
    missing: dict[int, Missing] = field(default_factory=dict)  # first seq -> run
    answers: set[str] = field(default_factory=set)  # replay answers already read (commands ids)
    gone: list[tuple[int, int]] = field(default_factory=list)  # seqs the gateway said it no longer holds


def seq_table(lane: str, key: LaneKey):
    """The table holding a lane's records, and the WHERE clause of one (site, gateway, epoch, lane)."""
    t = schema.telemetry if lane == "telemetry" else schema.records
    where = [t.c.site == key[0], t.c.gateway == key[1], t.c.epoch == key[2]]
    if lane != "telemetry":
        where.append(t.c.lane == lane)
    return t, where


def boundaries(rows: list[tuple[int, int | None, int | None]], lo: int) -> tuple[int, list[tuple[int, int]]]:
    """(seq, prev, next) rows of the edges above ``lo`` -> (highest seq, missing runs).  Pure."""
    top, runs = lo, []
    for seq, prev, nxt in rows:
        if prev is None and seq > lo + 1:
            runs.append((lo + 1, seq - 1))
        if nxt is not None and nxt > seq + 1:
            runs.append((seq + 1, nxt - 1))
        top = max(top, seq)
    return top, runs


class GapTracker:
    def __init__(self, centre, *, clock=time.time):
        self.centre = centre
        self.cfg = centre.cfg.ingest
        self.clock = clock
        self.lanes: dict[LaneKey, LaneScan] = {}
        self.counters = {"scans": 0, "recorded": 0, "repaired": 0, "unrepairable": 0, "replay_requests": 0,
                         "not_held": 0}

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.gap_check_interval)
            if not self.centre.is_leader("gaps"):
                self.lanes.clear()  # another instance scans; start from the store when we lead again
                continue
            try:
                await self.scan()
            except (sa.exc.SQLAlchemyError, OSError) as exc:
                log.warning("gap scan failed: %s", exc)

    async def scan(self) -> list[Change]:
        """One round over every lane written to recently; returns (and publishes) the gap changes."""
        now = self.clock()
        lanes = schema.lanes
        g = schema.gateways
        async with self.centre.engine.connect() as conn:
            rows = (await conn.execute(sa.select(lanes).where(lanes.c.updated_at > now - self.cfg.gap_give_up_after * 2))).all()
            states = {} if not rows else {(r.site, r.gateway): r.state for r in await conn.execute(
                sa.select(g.c.site, g.c.gateway, g.c.state).where(g.c.site.in_(sorted({r.site for r in rows}))))}
        changes: list[Change] = []
        for row in rows:
            key = (row.site, row.gateway, row.epoch, row.lane)
            changes += await self._scan_lane(key, row.floor, now, announced_last(states.get(key[:2]), key[2], key[3]))
        self.counters["scans"] += 1
        self.centre.hub.publish(changes)
        return changes

    async def _scan_lane(self, key: LaneKey, floor: int, now: float, tail: int | None = None) -> list[Change]:
        """``tail``: the lane's last seq as the gateway's ``…/state`` gives it: what is above the highest seq
        stored is missing too (the last messages of a stream that went to a dead member: no later seq shows it)."""
        async with write_transaction(self.centre.engine) as conn:
            state = self.lanes.get(key)
            if state is None:
                state = self.lanes[key] = LaneScan(floor)
                await self._load_recorded(conn, key, state)
            top, runs = await self._edges(conn, key, state.scanned_to)
            if tail is not None:
                above = max([top] + [m.last for m in state.missing.values()]) + 1
                if tail >= above:
                    runs.append((above, tail))
            for first, last in runs:  # only what no run tracks yet: a tail run may cover part of a later run
                known = not_held.merge([(m.first, m.last) for m in state.missing.values()])
                for a, b, covered in not_held.cut(first, last, known):
                    if not covered:
                        state.missing[a] = Missing(a, b, now, b - a + 1)
            state.scanned_to = top
            changes = await self._recheck(conn, key, state, now)
            low = min((m.first for m in state.missing.values()), default=top + 1)
            new_floor = max(floor, low - 1)
            if new_floor > floor:
                await conn.execute(sa.update(schema.lanes).where(*_lane_where(key)).values(floor=new_floor, updated_at=now))
        return changes

    async def _load_recorded(self, conn, key: LaneKey, state: LaneScan) -> None:
        g = schema.gaps
        q = sa.select(g).where(g.c.site == key[0], g.c.gateway == key[1], g.c.epoch == key[2], g.c.lane == key[3],
                               g.c.state.in_(OPEN))
        for r in await conn.execute(q):
            state.missing[r.first_seq] = Missing(r.first_seq, r.last_seq, r.opened_at, r.size, r.id)

    async def _edges(self, conn, key: LaneKey, lo: int) -> tuple[int, list[tuple[int, int]]]:
        t, where = seq_table(key[3], key)
        w = {"order_by": t.c.seq}
        inner = sa.select(t.c.seq, sa.func.lag(t.c.seq).over(**w).label("prev"),
                          sa.func.lead(t.c.seq).over(**w).label("nxt")).where(*where, t.c.seq > lo).subquery()
        q = sa.select(inner.c.seq, inner.c.prev, inner.c.nxt).where(
            sa.or_(inner.c.prev.is_(None), inner.c.nxt.is_(None), inner.c.nxt > inner.c.seq + 1)).order_by(inner.c.seq)
        return boundaries([tuple(r) for r in await conn.execute(q)], lo)

    async def _recheck(self, conn, key: LaneKey, state: LaneScan, now: float) -> list[Change]:
        """Fill, record, request repair or give up on each missing run of a lane."""
        changes = await self._not_held(conn, key, state, now)
        t, where = seq_table(key[3], key)
        for first, m in sorted(state.missing.items()):
            present = (await conn.execute(sa.select(sa.func.count()).select_from(t).where(
                *where, t.c.seq.between(m.first, m.last)))).scalar_one()
            m.remaining = m.last - m.first + 1 - present
            if m.remaining <= 0:
                del state.missing[first]
                if m.gap_id is not None:
                    changes.append(await self._set(conn, m, "repaired", now, "every record arrived"))
                    self.counters["repaired"] += 1
            elif now - m.since >= self.cfg.gap_give_up_after and m.gap_id is not None:
                del state.missing[first]
                changes.append(await self._set(conn, m, "unrepairable", now,
                                               f"{m.remaining} record(s) still missing after {self.cfg.gap_give_up_after:.0f} s"))
                self.counters["unrepairable"] += 1
                log.warning("gap %s/%s %s %s seqs %d-%d: %d record(s) unrepairable", *key, m.first, m.last, m.remaining)
            elif now - m.since >= self.cfg.gap_report_after:
                changes.append(await self._record_and_request(conn, key, m, now))
        return changes

    async def _not_held(self, conn, key: LaneKey, state: LaneScan, now: float) -> list[Change]:
        """Cut every recorded gap that a replay answer says is partly gone: that part unrepairable now."""
        recorded = [m for m in state.missing.values() if m.gap_id is not None]
        if not recorded:
            return []
        for cid, rec in await not_held.replay_answers(conn, key[0], key[1], [m.gap_id for m in recorded], state.answers):
            state.answers.add(cid)
            state.gone = not_held.merge(state.gone + not_held.gone_runs(rec, key[3], key[2]))
        changes: list[Change] = []
        for m in recorded:
            if not_held.touches(m.first, m.last, state.gone):
                changes += await self._cut(conn, key, state, m, now)
        return changes

    async def _cut(self, conn, key: LaneKey, state: LaneScan, m: Missing, now: float) -> list[Change]:
        """``m`` in pieces along what is gone; the gone pieces still missing records become unrepairable rows."""
        del state.missing[m.first]
        t, where = seq_table(key[3], key)
        changes, row_id = [], m.gap_id
        for a, b, gone in not_held.cut(m.first, m.last, state.gone):
            present = (await conn.execute(sa.select(sa.func.count()).select_from(t).where(
                *where, t.c.seq.between(a, b)))).scalar_one()
            piece = Missing(a, b, m.since, b - a + 1 - present)
            if piece.remaining <= 0:
                continue
            piece.gap_id = await self._piece_row(conn, key, piece, row_id, now)
            row_id = None  # the first piece keeps the gap's row, the others get their own
            if gone:
                detail = f"{piece.remaining} record(s) no longer held by the gateway (its replay answer)"
                changes.append(await self._set(conn, piece, "unrepairable", now, detail))
                self.counters["unrepairable"] += 1
                self.counters["not_held"] += piece.remaining
                log.warning("gap %s/%s %s %s seqs %d-%d: %d record(s) no longer held by the gateway", *key, a, b,
                            piece.remaining)
            else:  # may still come: _recheck asks for it again (its own row: a request of its own)
                state.missing[a] = piece
        if row_id is not None:  # every record of it arrived meanwhile
            changes.append(await self._set(conn, m, "repaired", now, "every record arrived"))
            self.counters["repaired"] += 1
        return changes

    async def _piece_row(self, conn, key: LaneKey, piece: Missing, row_id: int | None, now: float) -> int:
        """The gaps row of a piece: the cut gap's own row (re-bounded), or a new one."""
        g = schema.gaps
        if row_id is not None:
            await conn.execute(sa.update(g).where(g.c.id == row_id).values(first_seq=piece.first, last_seq=piece.last,
                                                                           size=piece.remaining, updated_at=now))
            return row_id
        res = await conn.execute(sa.insert(g).values(
            site=key[0], gateway=key[1], epoch=key[2], lane=key[3], first_seq=piece.first, last_seq=piece.last,
            size=piece.remaining, state="open", opened_at=piece.since, updated_at=now, requests=0).returning(g.c.id))
        self.counters["recorded"] += 1
        return res.scalar_one()

    async def _record_and_request(self, conn, key: LaneKey, m: Missing, now: float) -> Change:
        g = schema.gaps
        if m.gap_id is None:
            res = await conn.execute(sa.insert(g).values(
                site=key[0], gateway=key[1], epoch=key[2], lane=key[3], first_seq=m.first, last_seq=m.last,
                size=m.remaining, state="open", opened_at=m.since, updated_at=now, requests=0).returning(g.c.id))
            m.gap_id = res.scalar_one()
            self.counters["recorded"] += 1
            log.info("gap %s/%s %s %s seqs %d-%d open for %.0f s: recorded", *key, m.first, m.last, now - m.since)
        state = "open"
        hook = self.centre.request_replay
        if hook is not None:
            if await hook(GapRef(m.gap_id, *key, m.first, m.last)):
                state = "repair_requested"
                self.counters["replay_requests"] += 1
                await conn.execute(sa.update(g).where(g.c.id == m.gap_id).values(requests=g.c.requests + 1))
        return await self._set(conn, m, state, now, None)

    async def _set(self, conn, m: Missing, state: str, now: float, detail: str | None) -> Change:
        g = schema.gaps
        await conn.execute(sa.update(g).where(g.c.id == m.gap_id).values(state=state, size=max(m.remaining, 0),
                                                                          updated_at=now, detail=detail))
        return Change("gap", {"id": m.gap_id, "state": state, "first_seq": m.first, "last_seq": m.last,
                              "size": max(m.remaining, 0)})


def announced_last(doc, epoch: str, lane: str) -> int | None:
    """``outbox.{lane}.last_seq`` of a ``…/state`` document, if it speaks of this epoch (docs/protocol.md#online)."""
    outbox = doc.get("outbox") if isinstance(doc, dict) else None
    if not isinstance(outbox, dict) or outbox.get("epoch") != epoch or not isinstance(outbox.get(lane), dict):
        return None
    last = outbox[lane].get("last_seq")
    return last if isinstance(last, int) and not isinstance(last, bool) and last > 0 else None


def _lane_where(key: LaneKey) -> list:
    c = schema.lanes.c
    return [c.site == key[0], c.gateway == key[1], c.epoch == key[2], c.lane == key[3]]
