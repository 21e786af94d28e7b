"""Sites and their gateways: online or offline (and why), since when, last seen, versions, state and meta."""

from __future__ import annotations

import sqlalchemy as sa
from fastapi import APIRouter, Query

from centre.people.roles import VIEW_GATEWAYS
from centre.store import schema
from centre.web.auth import CurrentUser, require
from centre.web.errors import ApiError
from centre.web.models import GatewayDetail, GatewayOut, SiteOut
from centre.web.scope import at_sites

router = APIRouter(tags=["sites and gateways"])
g = schema.gateways
_LIST_COLS = [c for c in g.c if c.name not in ("state", "meta", "first_seen")]


def gateway_row(row) -> dict:
    d = dict(row._mapping)
    d["online"] = d["status"] == "online"
    return d


@router.get("/sites", response_model=list[SiteOut], summary="The sites I may see, with how many gateways are online")
async def sites(caller: CurrentUser) -> list[dict]:
    q = (sa.select(g.c.site, sa.func.count().label("gateways"),
                   sa.func.sum(sa.case((g.c.status == "online", 1), else_=0)).label("online"),
                   sa.func.sum(sa.case((g.c.status == "offline", 1), else_=0)).label("offline"),
                   sa.func.max(g.c.last_seen).label("last_seen"))
         .where(at_sites(caller.grants, VIEW_GATEWAYS, g.c.site)).group_by(g.c.site).order_by(g.c.site))
    async with caller.web.engine.connect() as conn:
        rows = (await conn.execute(q)).mappings().all()
    return [{**r, "online": r["online"] or 0, "offline": r["offline"] or 0,
             "unknown": r["gateways"] - (r["online"] or 0) - (r["offline"] or 0)} for r in rows]


@router.get("/gateways", response_model=list[GatewayOut], summary="Gateways, offline ones first")
async def gateways(caller: CurrentUser, site: str | None = Query(None, max_length=64)) -> list[dict]:
    q = sa.select(*_LIST_COLS).where(at_sites(caller.grants, VIEW_GATEWAYS, g.c.site))
    if site is not None:
        await require(caller, VIEW_GATEWAYS, site=site, site_level=True, target=f"site {site}")
        q = q.where(g.c.site == site)
    q = q.order_by(sa.case((g.c.status == "online", 1), else_=0), g.c.site, g.c.gateway)
    async with caller.web.engine.connect() as conn:
        return [gateway_row(r) for r in await conn.execute(q)]


@router.get("/gateways/{site}/{gateway}", response_model=GatewayDetail, summary="One gateway with its state and meta")
async def gateway(site: str, gateway: str, caller: CurrentUser) -> dict:
    await require(caller, VIEW_GATEWAYS, site=site, site_level=True, target=f"gateway {site}/{gateway}")
    async with caller.web.engine.connect() as conn:
        row = (await conn.execute(sa.select(g).where(g.c.site == site, g.c.gateway == gateway))).first()
    if row is None:
        raise ApiError(404, f"no gateway {gateway} at site {site} has been seen")
    return gateway_row(row)
