"""Latest readings of a site and one point's series, raw or hourly (min/mean/max from the downsampled store)."""

from __future__ import annotations

import time
from typing import Annotated, Literal

import sqlalchemy as sa
from fastapi import APIRouter, Query

from centre.people.roles import VIEW_READINGS
from centre.store import schema
from centre.web.auth import CurrentUser, require
from centre.web.models import ReadingOut, SeriesOut

router = APIRouter(tags=["readings"])
t, h = schema.telemetry, schema.telemetry_hourly
Id = Annotated[str, Query(min_length=1, max_length=128)]


@router.get("/readings/latest", response_model=list[ReadingOut],
            summary="The newest reading of every point of a site (or one gateway, or one device)")
async def latest(caller: CurrentUser, site: Id, gateway: str | None = Query(None, max_length=64),
                 device: str | None = Query(None, max_length=64),
                 within_hours: float = Query(24.0 * 7, gt=0, le=24 * 366,
                                             description="ignore points silent for longer than this")) -> list[dict]:
    await require(caller, VIEW_READINGS, site=site, site_level=True, target=f"readings of {site}")
    where = [t.c.site == site, t.c.ts >= time.time() - within_hours * 3600]
    if gateway is not None:
        where.append(t.c.gateway == gateway)
    if device is not None:
        where.append(t.c.device == device)
    newest = (sa.select(t.c.gateway, t.c.device, t.c.point, sa.func.max(t.c.ts).label("ts"))
              .where(*where).group_by(t.c.gateway, t.c.device, t.c.point).subquery())
    q = (sa.select(t.c.gateway, t.c.device, t.c.point, t.c.ts, t.c.value, t.c.text, t.c.invalid, t.c.unit, t.c.seq)
         .join(newest, sa.and_(t.c.site == site, t.c.gateway == newest.c.gateway, t.c.device == newest.c.device,
                               t.c.point == newest.c.point, t.c.ts == newest.c.ts))
         .order_by(t.c.gateway, t.c.device, t.c.point, t.c.seq.desc()).limit(20_000))
    out: dict[tuple, dict] = {}
    async with caller.web.engine.connect() as conn:
        for r in await conn.execute(q):
            out.setdefault((r.gateway, r.device, r.point), dict(r._mapping))  # two readings at one ts: the newest seq
    return list(out.values())


@router.get("/readings/series", response_model=SeriesOut,
            summary="One point over time: raw readings, or hourly count/mean/min/max (kept for years)")
async def series(caller: CurrentUser, site: Id, gateway: Id, device: Id, point: Id,
                 resolution: Literal["raw", "hourly"] = "raw",
                 since: float | None = Query(None, description="epoch s; default 24 h (raw) or 30 days (hourly) ago"),
                 until: float | None = Query(None, description="epoch s; default now"),
                 limit: int = Query(5000, ge=1, le=50_000)) -> dict:
    await require(caller, VIEW_READINGS, site=site, site_level=True, target=f"series {site}/{gateway}/{device}/{point}")
    until = time.time() if until is None else until
    since = until - (86400 if resolution == "raw" else 30 * 86400) if since is None else since
    out = {"site": site, "gateway": gateway, "device": device, "point": point, "resolution": resolution,
           "since": since, "until": until, "unit": None}
    async with caller.web.engine.connect() as conn:
        if resolution == "raw":
            q = (sa.select(t.c.ts, t.c.value, t.c.text, t.c.invalid, t.c.unit)
                 .where(t.c.site == site, t.c.gateway == gateway, t.c.device == device, t.c.point == point,
                        t.c.ts >= since, t.c.ts <= until).order_by(t.c.ts.desc()).limit(limit + 1))
            rows = (await conn.execute(q)).all()
            points = [{"ts": r.ts, "value": r.value, "text": r.text, "invalid": r.invalid} for r in rows[:limit]][::-1]
            out["raw"] = points
        else:
            q = (sa.select(h.c.hour, h.c.count, h.c.total, h.c.min, h.c.max, h.c.unit)
                 .where(h.c.site == site, h.c.gateway == gateway, h.c.device == device, h.c.point == point,
                        h.c.hour >= since - 3599, h.c.hour <= until).order_by(h.c.hour.desc()).limit(limit + 1))
            rows = (await conn.execute(q)).all()
            out["hourly"] = [{"hour": r.hour, "count": r.count, "mean": r.total / r.count if r.count else 0.0,
                              "min": r.min, "max": r.max} for r in rows[:limit]][::-1]
    out["truncated"] = len(rows) > limit
    out["unit"] = next((r.unit for r in rows if r.unit), None)
    return out
