"""The alert feed (a leader job): new alert lifecycle records in the store -> notifications.

It reads what ingest *committed* (any instance's), not a hub, so the leader notifies for
records another instance ingested.  Each round takes the lifecycle records received since
its cursor, minus ``OVERLAP`` seconds (a transaction that began earlier may commit later),
and plans them; keys already planned are skipped in memory and by the table's unique key.
A new leader starts ``lookback`` seconds back, so what its predecessor did not finish is
done, once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict

import sqlalchemy as sa

from centre.hub import Change
from centre.routing import outbox
from centre.routing.config import RoutingConfig
from centre.routing.plan import AlertNote
from centre.store import schema
from centre.store.engine import write_transaction

log = logging.getLogger("centre.routing")
OVERLAP = 30.0  # seconds re-read behind the cursor
BATCH = 1000
REMEMBERED = 20_000


def note_of(row) -> AlertNote:
    """A joined (alert_events, records, alerts) row -> the step to tell people about.  Pure."""
    body = row.body if isinstance(row.body, dict) else {}

    def pick(name: str, col: str | None = None):
        v = body.get(name)
        return v if v is not None else getattr(row, col or name, None)

    groups = row.groups if isinstance(row.groups, list) else body.get("groups") or []
    return AlertNote(key=f"{row.site}/{row.gateway}/{row.epoch}/{row.lane}/{row.seq}", site=row.site,
                     gateway=row.gateway, alert=row.alert, event=row.type.removeprefix("alert."), ts=row.ts,
                     groups=tuple(str(g) for g in groups), severity=pick("severity"), cls=pick("class", "a_class"),
                     subject=pick("subject"), message=pick("message"), location=pick("location"), actor=row.actor)


class AlertFeed:
    def __init__(self, centre, cfg: RoutingConfig, *, kick=None, clock=time.time):
        self.centre = centre
        self.cfg = cfg
        self.kick = kick or (lambda: None)  # wakes the delivery workers
        self.clock = clock
        self.cursor: float | None = None
        self.seen: OrderedDict[str, None] = OrderedDict()
        self.counters = {"rounds": 0, "steps": 0, "notifications": 0}

    async def run(self) -> None:
        self.cursor = self.clock() - self.cfg.lookback
        sub = self.centre.hub.subscribe(["alert"])
        try:
            while True:
                await self.round()
                try:
                    await asyncio.wait_for(sub.get(), self.cfg.poll_interval)
                except TimeoutError:
                    pass
        finally:
            self.centre.hub.unsubscribe(sub)

    async def round(self) -> int:
        if self.cursor is None:
            self.cursor = self.clock() - self.cfg.lookback
        after: tuple = (self.cursor - OVERLAP, "", "", "", "", -1)
        fresh_total = 0
        while True:  # pages of BATCH records, in (received_at, key) order
            found = await self._read(after)
            fresh_total += await self._plan([note_of(r) for r in found])
            if found:
                self.cursor = max(self.cursor, found[-1].received_at)
            if len(found) < BATCH:
                break
            last = found[-1]
            after = (last.received_at, last.site, last.gateway, last.epoch, last.lane, last.seq)
        self.counters["rounds"] += 1
        return fresh_total

    async def _plan(self, found: list[AlertNote]) -> int:
        notes = [n for n in found if n.key not in self.seen]
        if not notes:
            return 0
        now = self.clock()
        async with write_transaction(self.centre.engine) as conn:
            fresh = await outbox.plan_and_insert(conn, notes, self.cfg, now)
        for note in notes:
            self._remember(note.key)
        self.counters["steps"] += len(notes)
        self.counters["notifications"] += len(fresh)
        self.centre.hub.publish([Change("notification", r["payload"] | {"channel": "console", "id": r["id"]})
                                 for r in fresh if r["channel"] == "console"])
        if any(r["channel"] != "console" for r in fresh):
            self.kick()
        return len(fresh)

    async def _read(self, after: tuple) -> list:
        ae, rec, al = schema.alert_events, schema.records, schema.alerts
        types = [f"alert.{e}" for e in self.cfg.notify_on]
        join = ae.join(rec, sa.and_(rec.c.site == ae.c.site, rec.c.gateway == ae.c.gateway, rec.c.epoch == ae.c.epoch,
                                    rec.c.lane == ae.c.lane, rec.c.seq == ae.c.seq)).outerjoin(
            al, sa.and_(al.c.site == ae.c.site, al.c.gateway == ae.c.gateway, al.c.alert == ae.c.alert))
        q = (sa.select(ae.c.site, ae.c.gateway, ae.c.epoch, ae.c.lane, ae.c.seq, ae.c.alert, ae.c.type, ae.c.ts,
                       ae.c.groups, ae.c.actor, rec.c.body, rec.c.received_at, al.c.severity, al.c["class"].label("a_class"),
                       al.c.subject, al.c.message, al.c.location)
             .select_from(join).where(ae.c.type.in_(types), rec.c.received_at >= after[0], sa.tuple_(
                 rec.c.received_at, ae.c.site, ae.c.gateway, ae.c.epoch, ae.c.lane, ae.c.seq) > sa.tuple_(*after))
             .order_by(rec.c.received_at, ae.c.site, ae.c.gateway, ae.c.epoch, ae.c.lane, ae.c.seq).limit(BATCH))
        async with self.centre.engine.connect() as conn:
            return list(await conn.execute(q))

    def _remember(self, key: str) -> None:
        self.seen[key] = None
        while len(self.seen) > REMEMBERED:
            self.seen.popitem(last=False)
