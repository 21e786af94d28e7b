"""``…/state``, ``…/meta`` and every data message -> the gateways table: who is online, since when, and why not.

Every instance subscribes to state and meta without ``$share`` (retained messages are not
delivered to shared subscriptions), so every instance writes the same upsert; it is
idempotent.  ``status_since`` moves only when the status actually changes.
"""

from __future__ import annotations

import sqlalchemy as sa

from centre.store import schema
from centre.store.engine import insert


def state_row(site: str, gateway: str, doc: dict, now: float) -> dict:
    online = doc.get("status") == "online"
    caps = doc.get("capabilities")
    return {"site": site, "gateway": gateway, "status": "online" if online else "offline",
            "reason": None if online else _s(doc.get("reason"), 128) or "unknown",
            "status_since": now, "boot": _int(doc.get("boot")), "version": _s(doc.get("version"), 32) if online else None,
            "protocol": _int(doc.get("protocol")) if online else None,
            "capabilities": caps if isinstance(caps, list) else None,
            "meta_version": _s(doc.get("meta"), 32) if online else None, "state": doc,
            "state_ts": float(doc["ts"]) if online and isinstance(doc.get("ts"), (int, float)) else None,
            "first_seen": now, "last_seen": now}


async def upsert_states(conn, rows: list[dict]) -> list[dict]:
    """Apply the latest state per gateway; returns ``{site, gateway, status, previous, reason, capabilities}``
    for each gateway whose status changed."""
    latest = {(r["site"], r["gateway"]): r for r in rows}
    if not latest:
        return []
    g = schema.gateways
    keys = sorted(latest)
    prev = {(r.site, r.gateway): r.status for r in await conn.execute(
        sa.select(g.c.site, g.c.gateway, g.c.status).where(sa.tuple_(g.c.site, g.c.gateway).in_(keys)))}
    stmt = insert(g, conn.dialect.name)
    ex = stmt.excluded
    online = ex.status == "online"
    stmt = stmt.on_conflict_do_update(index_elements=["site", "gateway"], set_={
        "status": ex.status, "reason": ex.reason, "boot": ex.boot, "state": ex.state, "last_seen": ex.last_seen,
        "status_since": sa.case((g.c.status != ex.status, ex.status_since), else_=g.c.status_since),
        # an offline message carries no health: keep what the last online state said
        "version": sa.case((online, ex.version), else_=g.c.version),
        "protocol": sa.case((online, ex.protocol), else_=g.c.protocol),
        "capabilities": sa.case((online, ex.capabilities), else_=g.c.capabilities),
        "meta_version": sa.case((online, ex.meta_version), else_=g.c.meta_version),
        "state_ts": sa.case((online, ex.state_ts), else_=g.c.state_ts),
    })
    await conn.execute(stmt, [latest[k] for k in keys])
    return [{"site": s, "gateway": gw, "status": latest[(s, gw)]["status"], "previous": prev.get((s, gw), "unknown"),
             "reason": latest[(s, gw)]["reason"], "capabilities": latest[(s, gw)]["capabilities"]}
            for s, gw in keys if prev.get((s, gw)) != latest[(s, gw)]["status"]]


async def upsert_metas(conn, metas: dict[tuple[str, str], dict], now: float) -> None:
    g = schema.gateways
    stmt = insert(g, conn.dialect.name)
    stmt = stmt.on_conflict_do_update(index_elements=["site", "gateway"], set_={
        "meta": stmt.excluded.meta, "last_seen": stmt.excluded.last_seen})
    rows = [{"site": s, "gateway": gw, "meta": doc, "first_seen": now, "last_seen": now}
            for (s, gw), doc in sorted(metas.items())]
    if rows:
        await conn.execute(stmt, rows)


async def touch(conn, seen: dict[tuple[str, str], float], now: float) -> None:
    """Data arrived from these gateways: last_seen now, last_record_ts the newest record ts."""
    if not seen:
        return
    g = schema.gateways
    stmt = insert(g, conn.dialect.name)
    ex = stmt.excluded
    stmt = stmt.on_conflict_do_update(index_elements=["site", "gateway"], set_={
        "last_seen": ex.last_seen,
        "last_record_ts": sa.case((sa.or_(g.c.last_record_ts.is_(None), g.c.last_record_ts < ex.last_record_ts),
                                   ex.last_record_ts), else_=g.c.last_record_ts)})
    await conn.execute(stmt, [{"site": s, "gateway": gw, "first_seen": now, "last_seen": now, "last_record_ts": ts}
                              for (s, gw), ts in sorted(seen.items())])


def _s(v, n: int) -> str | None:
    return v[:n] if isinstance(v, str) else None


def _int(v) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None
