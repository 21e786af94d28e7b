"""The acting module's reads and writes of ``commands`` (and the audit line of each intent).

Status moves only up in rank (``schema.COMMAND_STATUSES``): this module writes ``pending``
(0), ``sent`` (1) and ``expired`` (2), each guarded by ``rank <= 1`` so that a gateway's
answer stored meanwhile by ingest (accepted 3, executed/rejected/failed 4) always wins.
"""

from __future__ import annotations

import sqlalchemy as sa

from centre.acting.intents import Intent
from centre.store import schema
from centre.store.engine import insert

C = schema.commands
G = schema.gateways
RANK = schema.COMMAND_STATUSES


async def insert_intent(conn, intent: Intent, text: str, *, ip: str | None = None) -> None:
    """The person's intent as a pending row, and its audit line, in the caller's transaction."""
    await conn.execute(sa.insert(C).values(
        id=intent.id, kind=intent.kind, site=intent.site, gateway=intent.gateway, on_behalf_of=intent.user,
        action=intent.action, target=intent.target, params=intent.params, intent=text, created_at=intent.created_at,
        valid_until=intent.valid_until, status="pending", rank=RANK["pending"], sends=0))
    await conn.execute(sa.insert(schema.audit).values(
        ts=intent.created_at, actor=intent.user, action=intent.kind, target=f"{intent.gateway}/{intent.target}",
        site=intent.site, outcome="ok", ip=ip, detail={"id": intent.id, "action": intent.action, "intent": text,
                                                        "valid_until": intent.valid_until}))


async def waiting(conn, limit: int) -> list:
    """Rows nobody has answered yet (pending or sent), oldest first, with their gateway's status."""
    q = (sa.select(C.c.id, C.c.kind, C.c.site, C.c.gateway, C.c.on_behalf_of, C.c.action, C.c.target, C.c.params,
                   C.c.created_at, C.c.valid_until, C.c.status, C.c.sent_at, C.c.sends, C.c.envelope,
                   G.c.status.label("gw_status"), G.c.status_since.label("gw_since"), G.c.reason.label("gw_reason"),
                   G.c.capabilities.label("gw_capabilities"))
         .select_from(C.outerjoin(G, sa.and_(G.c.site == C.c.site, G.c.gateway == C.c.gateway)))
         .where(C.c.rank <= RANK["sent"], C.c.valid_until.is_not(None)).order_by(C.c.created_at).limit(limit))
    return list(await conn.execute(q))


async def mark_sent(conn, cid: str, env: dict, now: float) -> None:
    """After the broker's PUBACK: the envelope as sent, one more send; ``sent`` unless an answer came first."""
    rank_sent = RANK["sent"]
    await conn.execute(sa.update(C).where(C.c.id == cid).values(
        envelope=env, sent_at=now, sends=C.c.sends + 1, issuer=env["issuer"],
        status=sa.case((C.c.rank < rank_sent, "sent"), else_=C.c.status),
        rank=sa.case((C.c.rank < rank_sent, rank_sent), else_=C.c.rank)))


async def mark_expired(conn, cid: str, detail: str, now: float) -> bool:
    """``expired`` with why, unless the gateway answered meanwhile; True when the row changed."""
    res = await conn.execute(sa.update(C).where(C.c.id == cid, C.c.rank <= RANK["sent"]).values(
        status="expired", rank=RANK["expired"], detail=detail[:4000], result_at=now))
    return res.rowcount > 0


async def record_replay(conn, row: dict) -> None:
    """A replay request that already went out; ingest may have stored its answer first (then only fill in)."""
    stmt = insert(C, conn.dialect.name).values(**row)
    ex = stmt.excluded
    await conn.execute(stmt.on_conflict_do_update(index_elements=["id"], set_={
        "envelope": ex.envelope, "sent_at": ex.sent_at, "sends": ex.sends, "issuer": ex.issuer, "intent": ex.intent,
        "params": ex.params, "valid_until": ex.valid_until}))


async def one(conn, cid: str):
    """A commands row with its gateway (for the status text), or None."""
    q = (sa.select(C, G.c.status.label("gw_status"), G.c.status_since.label("gw_since"), G.c.reason.label("gw_reason"))
         .select_from(C.outerjoin(G, sa.and_(G.c.site == C.c.site, G.c.gateway == C.c.gateway))).where(C.c.id == cid))
    return (await conn.execute(q)).first()
