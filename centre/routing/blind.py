""""Site is blind" (a leader job): a gateway offline, or silent, longer than ``routing.blind.after`` raises an alert.

Nobody watches a site whose gateway has gone quiet: its own alarms cannot reach anyone.
So the centre raises an alert of its own, class ``site.blind``, and routes it like any
other (console, webhook, e-mail) -- checked every ``check_interval`` (1 s), so it goes out
within a second or two of the limit.  *Offline* counts from the gateway's offline
``…/state`` (its will, or a clean shutdown); *silent* from the last message of any kind
(a gateway publishes its state every 30 s even when nothing happens).  When the gateway is
heard again the alert is resolved, and that is told too (``notify_on: resolved`` not needed).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import sqlalchemy as sa

from centre.hub import Change
from centre.routing import outbox
from centre.routing.config import RoutingConfig
from centre.routing.plan import AlertNote
from centre.routing.tables import blind_alerts as B
from centre.store import schema
from centre.store.engine import write_transaction

log = logging.getLogger("centre.routing")
CLASS = "site.blind"


@dataclass(frozen=True, slots=True)
class Blindness:
    why: str  # offline | silent
    since: float
    detail: str


def judge(gw, now: float, limit: float, words=None) -> Blindness | None:
    """Is this gateway (a ``gateways`` row) blind now?  Pure.  ``words(ts)`` formats a time for people."""
    words = words or (lambda ts: time.strftime("%H:%M", time.localtime(ts)))
    if gw.status == "offline":
        since = gw.status_since or gw.last_seen
        if now - since >= limit:
            reason = f" ({gw.reason})" if gw.reason else ""
            return Blindness("offline", since, f"gateway {gw.gateway} offline since {words(since)}{reason}: "
                                               f"site {gw.site} is blind")
        return None
    if now - gw.last_seen >= limit:
        return Blindness("silent", gw.last_seen, f"gateway {gw.gateway} silent since {words(gw.last_seen)} "
                                                 f"({now - gw.last_seen:.0f} s): site {gw.site} is blind")
    return None


def blind_note(alert_id: int, site: str, gateway: str, event: str, ts: float, detail: str, cfg: RoutingConfig,
               why: str) -> AlertNote:
    return AlertNote(key=f"blind-{alert_id}/{event}", site=site, gateway=gateway, alert=f"blind-{alert_id}", event=event,
                     ts=ts, groups=tuple(cfg.blind.groups), severity=cfg.blind.severity, cls=CLASS,
                     subject=f"{site}/{gateway}", message=detail, source="centre", extra={"why": why})


class BlindWatch:
    def __init__(self, centre, cfg: RoutingConfig, *, kick=None, clock=time.time, words=None):
        self.centre = centre
        self.cfg = cfg
        self.kick = kick or (lambda: None)
        self.clock = clock
        self.words = words
        self.counters = {"rounds": 0, "raised": 0, "resolved": 0}

    async def run(self) -> None:
        while True:
            await self.round()
            await asyncio.sleep(self.cfg.blind.check_interval)

    async def round(self) -> list[Change]:
        now = self.clock()
        g = schema.gateways
        async with self.centre.engine.connect() as conn:  # read first: a write transaction only when something changed
            gws = list(await conn.execute(sa.select(g.c.site, g.c.gateway, g.c.status, g.c.status_since, g.c.reason,
                                                    g.c.last_seen)))
            open_ = {(r.site, r.gateway): r for r in await conn.execute(sa.select(B).where(B.c.status == "raised"))}
        todo = []
        for gw in gws:
            verdict = judge(gw, now, self.cfg.blind.limit(gw.site), self.words)
            was = open_.get((gw.site, gw.gateway))
            if (verdict is None) != (was is None):
                todo.append((gw, verdict, was))
        self.counters["rounds"] += 1
        if not todo:
            return []
        async with write_transaction(self.centre.engine) as conn:
            notes = [await (self._raise(conn, gw, v, now) if v is not None else self._resolve(conn, was, now))
                     for gw, v, was in todo]
            fresh = await outbox.plan_and_insert(conn, notes, self.cfg, now)
        changes = [Change("alert", {"site": n.site, "gateway": n.gateway, "alert": n.alert, "source": "centre",
                                    "status": n.event, "class": CLASS, "severity": n.severity, "message": n.message})
                   for n in notes]
        changes += [Change("notification", r["payload"] | {"channel": "console", "id": r["id"]})
                    for r in fresh if r["channel"] == "console"]
        self.centre.hub.publish(changes)
        if any(r["channel"] != "console" for r in fresh):
            self.kick()
        return changes

    async def _raise(self, conn, gw, v: Blindness, now: float) -> AlertNote:
        res = await conn.execute(sa.insert(B).values(site=gw.site, gateway=gw.gateway, status="raised", why=v.why,
                                                     detail=v.detail, since=v.since, raised_at=now).returning(B.c.id))
        aid = res.scalar_one()
        self.counters["raised"] += 1
        log.warning("site blind: %s", v.detail)
        return blind_note(aid, gw.site, gw.gateway, "raised", now, v.detail, self.cfg, v.why)

    async def _resolve(self, conn, was, now: float) -> AlertNote:
        await conn.execute(sa.update(B).where(B.c.id == was.id).values(status="resolved", resolved_at=now))
        self.counters["resolved"] += 1
        detail = f"gateway {was.gateway} is heard again: site {was.site} can see (blind for {now - was.since:.0f} s)"
        log.info("%s", detail)
        return blind_note(was.id, was.site, was.gateway, "resolved", now, detail, self.cfg, was.why)
