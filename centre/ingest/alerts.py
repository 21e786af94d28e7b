"""Alert lifecycle records -> alert_events rows and the alerts' current view (docs/alerts.md#alert-lifecycle).

The view is *folded* from every lifecycle record of the alert in the store, not patched
by the newest one: records arrive out of order (two lanes, several instances, replays),
and a fold of the same set always gives the same view.  On PostgreSQL the fold of one
alert runs under a transaction-scoped advisory lock, so two instances committing records
of the same alert at once cannot each miss the other's.
"""

from __future__ import annotations

import zlib

import sqlalchemy as sa

from centre.store import schema
from centre.store.engine import insert

LIFECYCLE = {"alert.raised": 0, "alert.escalated": 1, "alert.updated": 1, "alert.acknowledged": 2, "alert.resolved": 3}
STATUS_RANK = {"raised": 0, "escalated": 1, "acknowledged": 2, "resolved": 3}
_COMMON = ("rule", "class", "severity", "subject", "device", "location", "raised_at", "message", "lang")


def event_row(key: dict, rec: dict) -> dict:
    t = rec["type"]
    actor = rec.get("by") if t == "alert.acknowledged" else rec.get("resolved_by") if t == "alert.resolved" else None
    groups = rec.get("groups")
    return {**key, "alert": str(rec.get("alert"))[:64], "type": t, "ts": float(rec["ts"]),
            "status": _s(rec.get("status"), 16), "step": _int(rec.get("step")), "actor": _s(actor, 160),
            "groups": groups if isinstance(groups, list) else None}


def fold(site: str, gateway: str, alert: str, bodies: list[dict]) -> dict:
    """The current view of one alert from all its lifecycle records (any order, duplicates harmless)."""
    view: dict = {"site": site, "gateway": gateway, "alert": alert, "status": "raised", "step": 0, "groups": [],
                  "next_escalation_at": None, "acked_at": None, "acked_by": None, "ack_note": None,
                  "resolved_at": None, "resolved_by": None, "texts": None, "updated_at": 0.0}
    rank = -1
    for rec in sorted(bodies, key=lambda r: (float(r.get("ts", 0)), LIFECYCLE.get(r.get("type"), 0))):
        t = rec.get("type")
        for f in _COMMON:
            if rec.get(f) is not None:
                view[f] = rec[f]
        groups = rec.get("groups")
        if isinstance(groups, list) and len(groups) >= len(view["groups"]):
            view["groups"] = groups
        view["updated_at"] = max(view["updated_at"], float(rec.get("ts", 0)))
        status = rec.get("status") if t != "alert.updated" else None
        if t in ("alert.raised", "alert.updated") and _texts(rec.get("texts")):
            view["texts"] = _texts(rec.get("texts"))  # what happened, in each language (the latest rise)
        if t in ("alert.raised", "alert.escalated"):
            view["step"] = max(view["step"], _int(rec.get("step")) or 0)
            view["next_escalation_at"] = rec.get("next_escalation_at")
        elif t == "alert.acknowledged":
            view.update(acked_at=float(rec["ts"]), acked_by=_s(rec.get("by"), 128), ack_note=_s(rec.get("note"), 512))
        elif t == "alert.resolved":
            view.update(resolved_at=float(rec["ts"]), resolved_by=_s(rec.get("resolved_by"), 160))
            view["acked_by"] = view["acked_by"] or _s(rec.get("acked_by"), 128)
        if status in STATUS_RANK and STATUS_RANK[status] >= rank:
            rank = STATUS_RANK[status]
            view["status"] = status
    if rank >= STATUS_RANK["acknowledged"]:
        view["next_escalation_at"] = None
    return {k: v for k, v in view.items() if k in schema.alerts.c}


async def refold(conn, touched: set[tuple[str, str, str]]) -> list[dict]:
    """Recompute the view of every touched alert from the store; returns the new views."""
    views = []
    ev, rec = schema.alert_events, schema.records
    join = ev.join(rec, sa.and_(ev.c.site == rec.c.site, ev.c.gateway == rec.c.gateway, ev.c.epoch == rec.c.epoch,
                                ev.c.lane == rec.c.lane, ev.c.seq == rec.c.seq))
    for site, gateway, alert in sorted(touched):
        if conn.dialect.name == "postgresql":
            lock = zlib.crc32(f"alert:{site}/{gateway}/{alert}".encode()) - 2**31
            await conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": lock})
        q = sa.select(rec.c.body).select_from(join).where(ev.c.site == site, ev.c.gateway == gateway, ev.c.alert == alert)
        bodies = [r[0] for r in await conn.execute(q)]
        view = fold(site, gateway, alert, bodies)
        stmt = insert(schema.alerts, conn.dialect.name)
        stmt = stmt.on_conflict_do_update(index_elements=["site", "gateway", "alert"],
                                          set_={c: stmt.excluded[c] for c in view if c not in ("site", "gateway", "alert")})
        await conn.execute(stmt, [view])
        views.append(view)
    return views


def _texts(v) -> dict[str, str] | None:
    """A record's ``texts`` as stored: language -> line, strings only, bounded."""
    if not isinstance(v, dict):
        return None
    out = {k[:16]: s[:1024] for k, s in list(v.items())[:8] if isinstance(k, str) and isinstance(s, str)}
    return out or None


def _s(v, n: int) -> str | None:
    return v[:n] if isinstance(v, str) else None


def _int(v) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None
