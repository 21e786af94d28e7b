"""Commands and acks people made through the centre, and how each ended (pending, sent, executed, rejected ...).

A user sees the commands of the sites where a role lets them view commands, and always
their own (a volunteer sees whether their ack reached the gateway).
"""

from __future__ import annotations

import sqlalchemy as sa
from fastapi import APIRouter, Query

from centre.people.roles import VIEW_COMMANDS, allowed
from centre.store import schema
from centre.web.auth import CurrentUser, require
from centre.web.errors import ApiError
from centre.web.models import CommandDetail, CommandOut
from centre.web.scope import at_sites

router = APIRouter(tags=["commands"])
c = schema.commands
_LIST_COLS = [col for col in c.c if col.name not in ("envelope", "result", "rank")]


@router.get("/commands", response_model=list[CommandOut], summary="Commands and acks, newest first")
async def commands(caller: CurrentUser, site: str | None = Query(None, max_length=64),
                   gateway: str | None = Query(None, max_length=64), status: str | None = Query(None, max_length=16),
                   kind: str | None = Query(None, max_length=16), mine: bool = False,
                   limit: int = Query(200, ge=1, le=5000)) -> list[dict]:
    own = c.c.on_behalf_of == caller.username
    q = sa.select(*_LIST_COLS).where(own if mine else sa.or_(own, at_sites(caller.grants, VIEW_COMMANDS, c.c.site)))
    for col, value in ((c.c.site, site), (c.c.gateway, gateway), (c.c.status, status), (c.c.kind, kind)):
        if value is not None:
            q = q.where(col == value)
    async with caller.web.engine.connect() as conn:
        return [dict(r._mapping) for r in await conn.execute(q.order_by(c.c.created_at.desc(), c.c.id).limit(limit))]


@router.get("/commands/{command_id}", response_model=CommandDetail, summary="One command: its envelope and result")
async def command(command_id: str, caller: CurrentUser) -> dict:
    async with caller.web.engine.connect() as conn:
        row = (await conn.execute(sa.select(c).where(c.c.id == command_id))).first()
    if row is None:
        raise ApiError(404, f"no command {command_id}")
    d = dict(row._mapping)
    if d["on_behalf_of"] != caller.username and allowed(caller.grants, VIEW_COMMANDS, site=d["site"], site_level=True):
        await require(caller, VIEW_COMMANDS, site=d["site"], site_level=True, target=f"command {command_id}")
    return d
