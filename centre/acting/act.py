"""The service layer the API (and the command line) calls when a person acts: record the intent, show where it is.

``act`` checks the intent (:func:`intents.check`), stores it as a ``pending`` row with its
audit line in one transaction, and wakes the sender; nothing is signed here (that happens
when it is sent).  ``permission`` says which role permission an intent needs, so the web
layer refuses a farmer's door unlock with the same words as everywhere else.  ``view``
and ``open_intents`` give the row with its state in words ("waiting: gateway offline
since 10:32").
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from centre.acting import rows
from centre.acting.config import ActingConfig
from centre.acting.intents import Intent, check, describe, new_id, status_text
from centre.hub import Change
from centre.people import roles
from centre.store import schema
from centre.store.engine import write_transaction

_PERMISSION = {"irrigate": roles.IRRIGATION, "close": roles.IRRIGATION, "close_all": roles.IRRIGATION,
               "resume_programs": roles.IRRIGATION, "unlock": roles.DOORS, "lock": roles.DOORS,
               "reset_lockout": roles.DOORS, "override": roles.CONTROLS, "acknowledge": roles.ACK_ALERTS,
               "resolve": roles.RESOLVE_ALERTS}


@dataclass(frozen=True, slots=True)
class Acted:
    id: str
    intent: str  # the sentence the person saw
    valid_until: float
    status: str
    status_text: str


def permission(kind: str, action: str) -> str:
    """The role permission (``centre.people.roles``) an intent of this kind and action needs."""
    if kind == "ack":
        return _PERMISSION.get(action, roles.RESOLVE_ALERTS)
    return _PERMISSION.get(action, roles.CONTROLS)


def timezone(cfg: ActingConfig) -> ZoneInfo | None:
    return ZoneInfo(cfg.timezone) if cfg.timezone else None


async def act(centre, cfg: ActingConfig, *, user: str, kind: str, site: str, gateway: str, target: str, action: str,
              params: dict | None = None, valid_for: float | None = None, now: float | None = None,
              ip: str | None = None) -> Acted:
    """Record what ``user`` asked; raises IntentError (its message is for the person) when no gateway could take it."""
    now = time.time() if now is None else now
    intent = Intent(new_id(), user, kind, site, gateway, target, action, dict(params or {}), now,
                    now + (cfg.default_validity if valid_for is None else valid_for))
    check(intent, max_validity=cfg.max_validity)
    tz = timezone(cfg)
    text = describe(intent, tz)
    async with write_transaction(centre.engine) as conn:
        await rows.insert_intent(conn, intent, text, ip=ip)
        row = await rows.one(conn, intent.id)
    centre.hub.publish([Change("command", {"id": intent.id, "kind": kind, "status": "pending", "site": site,
                                           "gateway": gateway, "reason": None, "intent": text})])
    return Acted(intent.id, text, intent.valid_until, "pending", status_text(_mapping(row), _gateway(row), now, tz))


async def view(centre, cfg: ActingConfig, cid: str, *, now: float | None = None) -> dict | None:
    """One intent (or any commands row) with its state in words; None when the id is unknown."""
    async with centre.engine.connect() as conn:
        row = await rows.one(conn, cid)
    return None if row is None else _view(row, time.time() if now is None else now, timezone(cfg))


async def open_intents(centre, cfg: ActingConfig, *, site: str | None = None, limit: int = 200,
                       now: float | None = None) -> list[dict]:
    """Acks and commands still waiting for an answer (pending or sent), oldest first, optionally of one site."""
    C, G = schema.commands, schema.gateways
    q = (sa.select(C, G.c.status.label("gw_status"), G.c.status_since.label("gw_since"), G.c.reason.label("gw_reason"))
         .select_from(C.outerjoin(G, sa.and_(G.c.site == C.c.site, G.c.gateway == C.c.gateway)))
         .where(C.c.rank <= rows.RANK["sent"], C.c.kind.in_(("command", "ack"))).order_by(C.c.created_at).limit(limit))
    if site is not None:
        q = q.where(C.c.site == site)
    async with centre.engine.connect() as conn:
        found = list(await conn.execute(q))
    now, tz = time.time() if now is None else now, timezone(cfg)
    return [_view(r, now, tz) for r in found]


def _view(row, now: float, tz) -> dict:
    m = _mapping(row)
    keep = ("id", "kind", "site", "gateway", "on_behalf_of", "issuer", "action", "target", "params", "intent",
            "created_at", "valid_until", "status", "reason", "detail", "sent_at", "sends", "result_at")
    return {**{k: m.get(k) for k in keep}, "status_text": status_text(m, _gateway(row), now, tz)}


def _mapping(row) -> dict:
    return dict(row._mapping)


def _gateway(row) -> dict | None:
    m = row._mapping
    if m.get("gw_status") is None:
        return None
    return {"gateway": m["gateway"], "status": m["gw_status"], "status_since": m["gw_since"], "reason": m["gw_reason"]}
