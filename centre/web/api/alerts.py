"""Alerts the user may see (their sites, groups, households, zones): open ones, recent ones, one with its timeline."""

from __future__ import annotations

import time
from typing import Literal

import sqlalchemy as sa
from fastapi import APIRouter, Query

from centre.people.roles import VIEW_ALERTS
from centre.store import schema
from centre.web.auth import CurrentUser, require
from centre.web.errors import ApiError
from centre.web.models import AlertDetail, AlertOut
from centre.web.scope import alerts_visible

router = APIRouter(tags=["alerts"])
a, ev, rec = schema.alerts, schema.alert_events, schema.records
SEVERITY_ORDER = sa.case((a.c.severity == "critical", 0), (a.c.severity == "warning", 1), (a.c.severity == "info", 2),
                         else_=3)


def alert_target(view: dict) -> dict:
    """The scope dimensions of an alert, as :func:`centre.web.auth.require` takes them."""
    loc = view.get("location") if isinstance(view.get("location"), dict) else {}
    groups = view.get("groups") if isinstance(view.get("groups"), list) else []
    return {"site": view.get("site"), "group": [x for x in groups if isinstance(x, str)],
            "household": loc.get("household"), "zone": loc.get("zone")}


@router.get("/alerts", response_model=list[AlertOut], response_model_by_alias=True,
            summary="Alerts in my scope: open (by severity, oldest first), recent (open + resolved lately) or all")
async def alerts(caller: CurrentUser, state: Literal["open", "recent", "all"] = "open",
                 site: str | None = Query(None, max_length=64), severity: str | None = Query(None, max_length=16),
                 recent_hours: float = Query(24.0, gt=0, le=24 * 366), limit: int = Query(500, ge=1, le=10_000)) -> list:
    q = sa.select(a).where(alerts_visible(caller.grants, caller.web.engine.dialect.name))
    if site is not None:
        q = q.where(a.c.site == site)
    if severity is not None:
        q = q.where(a.c.severity == severity)
    if state == "open":
        q = q.where(a.c.status != "resolved").order_by(SEVERITY_ORDER, a.c.raised_at, a.c.alert)
    else:
        if state == "recent":
            q = q.where(sa.or_(a.c.status != "resolved", a.c.resolved_at >= time.time() - recent_hours * 3600))
        q = q.order_by(a.c.updated_at.desc(), a.c.alert)
    async with caller.web.engine.connect() as conn:
        return [dict(r._mapping) for r in await conn.execute(q.limit(limit))]


@router.get("/alerts/{site}/{gateway}/{alert}", response_model=AlertDetail, response_model_by_alias=True,
            summary="One alert and its timeline: raised, escalated to whom, acknowledged by whom, resolved")
async def alert(site: str, gateway: str, alert: str, caller: CurrentUser) -> dict:
    async with caller.web.engine.connect() as conn:
        row = (await conn.execute(sa.select(a).where(a.c.site == site, a.c.gateway == gateway, a.c.alert == alert))).first()
        if row is None:
            raise ApiError(404, f"no alert {alert} from {site}/{gateway}")
        view = dict(row._mapping)
        await require(caller, VIEW_ALERTS, **alert_target(view), target=f"alert {site}/{gateway}/{alert}")
        join = ev.join(rec, sa.and_(ev.c.site == rec.c.site, ev.c.gateway == rec.c.gateway, ev.c.epoch == rec.c.epoch,
                                    ev.c.lane == rec.c.lane, ev.c.seq == rec.c.seq))
        q = (sa.select(ev.c.ts, ev.c.type, ev.c.status, ev.c.step, ev.c.actor, ev.c.groups, rec.c.body).select_from(join)
             .where(ev.c.site == site, ev.c.gateway == gateway, ev.c.alert == alert).order_by(ev.c.ts, ev.c.seq))
        timeline = [_item(r) for r in await conn.execute(q)]
    return {"alert": view, "timeline": timeline}


def _item(r) -> dict:
    body = r.body if isinstance(r.body, dict) else {}
    recipients = body.get("recipients")
    return {"ts": r.ts, "type": r.type, "status": r.status, "step": r.step, "actor": r.actor, "groups": r.groups,
            "group": body.get("group") if isinstance(body.get("group"), str) else None,
            "recipients": [x for x in recipients if isinstance(x, str)] if isinstance(recipients, list) else None,
            "note": body.get("note") if isinstance(body.get("note"), str) else None}
