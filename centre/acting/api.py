"""HTTP endpoints for acting (mounted by ``centre.web.app.ROUTERS`` under ``/api``): make an ack or a command, follow it.

- ``POST /api/alerts/{site}/{gateway}/{alert}/ack`` -- acknowledge (or resolve) an alert for the logged-in person;
- ``POST /api/commands`` -- irrigate, close, unlock, … for the logged-in person;
- ``GET /api/intents`` -- what is still waiting for an answer, with its state in words;
- ``GET /api/intents/{id}`` -- one of them (or any command), the same way.

Every request is checked against the person's roles (:func:`centre.web.auth.require`; a
refusal is a 403 and audited) with the scope of what it acts on: an alert's groups and
household; a lock's household and a valve's zone from the gateway's ``…/meta``.  The answer
is 202: the intent is recorded, and it is signed and sent when its gateway can take it.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from centre.acting.act import act, open_intents, permission, view
from centre.acting.config import ActingConfig
from centre.acting.intents import IntentError
from centre.people.roles import VIEW_ALERTS, VIEW_COMMANDS, allowed
from centre.store import schema
from centre.web.auth import CurrentUser, require
from centre.web.errors import ApiError

router = APIRouter(tags=["acting"])


class AckIn(BaseModel):
    note: str | None = Field(None, max_length=500)
    resolve: bool = Field(False, description="acknowledge and close it")
    valid_for: float | None = Field(None, gt=0, description="seconds it may take to reach the gateway (default 10 min)")


class CommandIn(BaseModel):
    site: str = Field(max_length=64)
    gateway: str = Field(max_length=64)
    action: str = Field(max_length=32, description="irrigate, close, close_all, resume_programs, unlock, lock, reset_lockout, "
                                                   "override")
    target: str = Field("*", max_length=64, description="a valve, zone-N, lock or (override) control id; "
                                                        "* for close_all/resume_programs")
    params: dict[str, Any] = Field(default_factory=dict, description='e.g. {"duration_s": 1200} for irrigate; '
                                                                      '{"state": "on", "duration_s": 1800} for override')
    valid_for: float | None = Field(None, gt=0, description="seconds within which it may start (default 10 min)")


class IntentOut(BaseModel):
    id: str
    kind: str
    site: str
    gateway: str
    on_behalf_of: str | None
    action: str | None
    target: str | None
    intent: str | None = Field(description="what the person asked, with its validity, as shown when they acted")
    valid_until: float | None
    status: str = Field(description="pending | sent | expired | accepted | executed | rejected | failed")
    status_text: str = Field(description='where it stands in words: "waiting: gateway gw-3 offline since 10:32"')
    reason: str | None
    detail: str | None
    sends: int | None
    sent_at: float | None = Field(None, description="when it last went to the gateway")
    result_at: float | None = Field(None, description="when its end (executed, rejected, expired…) was known")


def _cfg(caller) -> ActingConfig:
    acting = caller.web.components.get("acting")
    return acting.cfg if acting is not None else ActingConfig()


def _centre(caller):
    return caller.web  # act() needs .engine and .hub, which the web context shares with the centre


@router.post("/alerts/{site}/{gateway}/{alert}/ack", response_model=IntentOut, status_code=202,
             summary="Acknowledge (or resolve) an alert: signed for me when it is sent to the gateway")
async def ack(site: str, gateway: str, alert: str, body: AckIn, caller: CurrentUser) -> dict:
    a = schema.alerts
    async with caller.web.engine.connect() as conn:
        row = (await conn.execute(sa.select(a.c.groups, a.c.location).where(
            a.c.site == site, a.c.gateway == gateway, a.c.alert == alert))).first()
    if row is None:
        raise ApiError(404, f"no alert {alert} from {site}/{gateway}")
    groups = [g for g in (row.groups or []) if isinstance(g, str)]
    household = (row.location or {}).get("household") if isinstance(row.location, dict) else None
    action = "resolve" if body.resolve else "acknowledge"
    await require(caller, permission("ack", action), site=site, group=groups, household=household,
                  target=f"alert {site}/{gateway}/{alert}")
    params = {"note": body.note} if body.note else {}
    return await _act(caller, kind="ack", site=site, gateway=gateway, target=alert, action=action, params=params,
                      valid_for=body.valid_for)


@router.post("/commands", response_model=IntentOut, status_code=202,
             summary="Ask a gateway to irrigate, close, unlock …: signed for me when it is sent")
async def command(body: CommandIn, caller: CurrentUser) -> dict:
    scope, perm = await _command_scope(caller, body), permission("command", body.action)
    if "zone" in scope and allowed(caller.grants, perm, site=body.site, zone=scope["zone"]) is not None:
        short = scope["zone"].removeprefix("zone-")  # a grant may name the zone "2" instead of "zone-2"
        if allowed(caller.grants, perm, site=body.site, zone=short) is None:
            scope["zone"] = short
    await require(caller, perm, site=body.site, **scope,
                  target=f"{body.action} {body.site}/{body.gateway}/{body.target}")
    return await _act(caller, kind="command", site=body.site, gateway=body.gateway, target=body.target,
                      action=body.action, params=body.params, valid_for=body.valid_for)


@router.get("/intents", response_model=list[IntentOut], summary="My sites' acks and commands still waiting for an answer")
async def intents(caller: CurrentUser, site: str | None = Query(None, max_length=64)) -> list[dict]:
    found = await open_intents(_centre(caller), _cfg(caller), site=site)
    return [i for i in found if _may_see(caller, i)]


@router.get("/intents/{command_id}", response_model=IntentOut, summary="One ack or command, with its state in words")
async def intent(command_id: str, caller: CurrentUser) -> dict:
    found = await view(_centre(caller), _cfg(caller), command_id)
    if found is None:
        raise ApiError(404, f"no command or ack {command_id}")
    if not _may_see(caller, found):
        await require(caller, VIEW_COMMANDS, site=found["site"], site_level=True, target=f"command {command_id}")
    return found


async def _act(caller, **kw) -> dict:
    try:
        done = await act(_centre(caller), _cfg(caller), user=caller.username, ip=caller.ip, **kw)
    except IntentError as exc:
        raise ApiError(422, str(exc)) from None
    return await view(_centre(caller), _cfg(caller), done.id)


def _may_see(caller, item: dict) -> bool:
    if item.get("on_behalf_of") == caller.username:
        return True
    perm = VIEW_ALERTS if item["kind"] == "ack" else VIEW_COMMANDS
    return allowed(caller.grants, perm, site=item["site"], site_level=True) is None


async def _command_scope(caller, body: CommandIn) -> dict:
    """The zone (valves) or household (locks) a command acts on, from the gateway's retained ``…/meta``."""
    g = schema.gateways
    async with caller.web.engine.connect() as conn:
        meta = (await conn.execute(sa.select(g.c.meta).where(g.c.site == body.site, g.c.gateway == body.gateway))).scalar()
    meta = meta if isinstance(meta, dict) else {}
    if body.target.startswith("zone-"):
        return {"zone": body.target}
    valve = (meta.get("valves") or {}).get(body.target)
    if isinstance(valve, dict) and valve.get("zone") is not None:
        return {"zone": f"zone-{valve['zone']}"}
    lock = (meta.get("locks") or {}).get(body.target)
    if isinstance(lock, dict):
        device = (meta.get("devices") or {}).get(lock.get("device"), {})
        return {"household": ((device or {}).get("location") or {}).get("household")}
    return {}
