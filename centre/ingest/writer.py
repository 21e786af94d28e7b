"""One transaction for many messages: rows inserted once, side effects only for the rows that were new.

Every insert on a record key is ``ON CONFLICT DO NOTHING … RETURNING`` the key: what comes
back is what this transaction stored, and only those records feed the hourly rollup, the
alert views and the commands table -- so a duplicate (redelivery, a lifecycle copy on
another topic, a replay, another instance) changes nothing at all.  Rows are sorted by key
so concurrent instances on PostgreSQL lock them in the same order (no deadlocks).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from operator import itemgetter

import sqlalchemy as sa

from centre.hub import Change
from centre.ingest import alerts, gateways, results
from centre.ingest.parse import Parsed
from centre.ingest.rows import latest_readings, record_row, rollup, telemetry_row
from centre.store import schema
from centre.store.bulk import insert_new
from centre.store.engine import insert


@dataclass(slots=True)
class Written:
    """What one transaction stored, for counters, the gap tracker and the hub."""

    stored: int = 0  # records new to the store
    duplicates: int = 0
    lanes: dict[tuple[str, str, str, str], int] = field(default_factory=dict)  # lane key -> lowest seq in this batch
    changes: list[Change] = field(default_factory=list)


async def write(conn, items: list[Parsed], now: float, *, readings: bool = True) -> Written:
    """Store ``items`` in the caller's transaction; ``readings``: also build the ``reading`` changes."""
    out = Written()
    tel, recs, states, metas, seen = [], [], [], {}, {}
    for p in items:
        if p.kind == "batch" and p.records:
            if p.lane == "telemetry":
                tel += [telemetry_row(p.site, p.gateway, p.epoch, rec, now) for rec in p.records]
            else:
                recs += [record_row(p.site, p.gateway, p.epoch, p.lane, p.topic, rec, now) for rec in p.records]
            k, low = (p.site, p.gateway, p.epoch, p.lane), min(rec["seq"] for rec in p.records)
            out.lanes[k] = min(out.lanes.get(k, low), low)
            gk, newest = (p.site, p.gateway), max(rec["ts"] for rec in p.records)
            seen[gk] = max(seen.get(gk, 0.0), float(newest))
        elif p.kind == "state":
            states.append(gateways.state_row(p.site, p.gateway, p.doc, now))
        elif p.kind == "meta":
            metas[(p.site, p.gateway)] = p.doc
    fresh_tel = await _insert_telemetry(conn, tel)
    fresh_recs = await _insert_records(conn, recs)
    out.stored = len(fresh_tel) + len(fresh_recs)
    out.duplicates = len(tel) + len(recs) - out.stored
    await _rollup(conn, fresh_tel)
    out.changes += await _events(conn, fresh_recs)
    await _lanes(conn, out.lanes, now)
    for gw in await gateways.upsert_states(conn, states):
        out.changes.append(Change("gateway", gw))
    await gateways.upsert_metas(conn, metas, now)
    await gateways.touch(conn, seen, now)
    if readings:
        for (site, gw), latest in latest_readings(fresh_tel).items():
            out.changes.append(Change("reading", {"site": site, "gateway": gw, "readings": latest}))
    return out


def _sorted(rows: list[dict], key: tuple[str, ...]) -> list[dict]:
    """Sorted by key, each key once (one statement may not touch a row twice)."""
    get = itemgetter(*key)
    rows.sort(key=get)
    out, last = [], None
    for r in rows:
        k = get(r)
        if k != last:
            out.append(r)
            last = k
    return out


async def _insert_telemetry(conn, rows: list[dict]) -> list[dict]:
    key = ("site", "gateway", "epoch", "seq")
    return await insert_new(conn, schema.telemetry, _sorted(rows, key), key)


async def _insert_records(conn, rows: list[dict]) -> list[dict]:
    if not rows:
        return []
    t = schema.records
    rows = _sorted(rows, ("site", "gateway", "epoch", "lane", "seq"))
    stmt = insert(t, conn.dialect.name).on_conflict_do_nothing().returning(t.c.site, t.c.gateway, t.c.epoch, t.c.lane,
                                                                             t.c.seq)
    new = {tuple(r) for r in await conn.execute(stmt, rows)}
    get = itemgetter("site", "gateway", "epoch", "lane", "seq")
    return [r for r in rows if get(r) in new]


async def _rollup(conn, fresh: list[dict]) -> None:
    deltas = rollup(fresh)
    if not deltas:
        return
    h = schema.telemetry_hourly
    stmt = insert(h, conn.dialect.name)
    ex = stmt.excluded
    stmt = stmt.on_conflict_do_update(index_elements=["site", "gateway", "device", "point", "hour"], set_={
        "count": h.c.count + ex.count, "total": h.c.total + ex.total,
        "min": sa.case((ex.min < h.c.min, ex.min), else_=h.c.min),
        "max": sa.case((ex.max > h.c.max, ex.max), else_=h.c.max),
        "unit": sa.func.coalesce(ex.unit, h.c.unit)})
    await conn.execute(stmt, [{"site": k[0], "gateway": k[1], "device": k[2], "point": k[3], "hour": k[4],
                               "count": d.count, "total": d.total, "min": d.min, "max": d.max, "unit": d.unit}
                              for k, d in sorted(deltas.items())])


async def _events(conn, fresh: list[dict]) -> list[Change]:
    """Alert lifecycle and command results among the new event/alarm records."""
    ev_rows, cmd_rows, touched = [], [], set()
    for r in fresh:
        rec, t = r["body"], r["type"]
        if t in alerts.LIFECYCLE and isinstance(rec.get("alert"), str):
            key = {k: r[k] for k in ("site", "gateway", "epoch", "lane", "seq")}
            if isinstance(orig := rec.get("copy_of"), dict):  # a raise copied to a group paged later: one event
                key |= {k: orig.get(k) for k in ("epoch", "lane", "seq")}
            ev_rows.append(alerts.event_row(key, rec))
            touched.add((r["site"], r["gateway"], rec["alert"][:64]))
        if t in results.TYPES and (row := results.result_row(r["site"], r["gateway"], rec)) is not None:
            cmd_rows.append(row)
    changes = []
    if ev_rows:
        await conn.execute(insert(schema.alert_events, conn.dialect.name).on_conflict_do_nothing(), ev_rows)
        changes += [Change("alert", v) for v in await alerts.refold(conn, touched)]
    changes += [Change("command", c) for c in await results.upsert(conn, cmd_rows)]
    return changes


async def _lanes(conn, lanes: dict[tuple[str, str, str, str], int], now: float) -> None:
    """First contact with a lane: its floor starts below the first seq seen (docs/protocol.md#receiver-rule);
    afterwards only ``updated_at`` moves, so the gap scan knows the lane is active."""
    if not lanes:
        return
    stmt = insert(schema.lanes, conn.dialect.name)
    stmt = stmt.on_conflict_do_update(  # updated_at says "written to lately" (the gap scan's list), once a minute at most
        index_elements=["site", "gateway", "epoch", "lane"], set_={"updated_at": stmt.excluded.updated_at},
        where=schema.lanes.c.updated_at < stmt.excluded.updated_at - 60)
    await conn.execute(stmt, [{"site": k[0], "gateway": k[1], "epoch": k[2], "lane": k[3], "floor": low - 1,
                               "first_seq": low, "updated_at": now} for k, low in sorted(lanes.items())])
