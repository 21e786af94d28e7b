"""The audit log: one row for every action a person took (or the centre took for them) and every refusal.

Written in its own short transaction, after the decision, so a refusal is on record even
though nothing else happened; a failure to write it is logged loudly but never turns a
refusal into an acceptance (the caller raises its refusal anyway).
"""

from __future__ import annotations

import logging
import time

import sqlalchemy as sa

from centre.store import schema
from centre.store.engine import write_transaction

log = logging.getLogger("centre.audit")

OUTCOMES = ("ok", "denied", "failed")


async def record(engine, *, actor: str, action: str, outcome: str, target: str | None = None, site: str | None = None,
                 detail: dict | None = None, ip: str | None = None, conn=None) -> None:
    """Append one audit row; inside ``conn``'s transaction when given (the action and its record commit together)."""
    assert outcome in OUTCOMES, outcome
    row = {"ts": time.time(), "actor": (actor or "anonymous")[:128], "action": action[:64],
           "target": target[:256] if target else None, "site": site[:64] if site else None, "outcome": outcome,
           "detail": detail, "ip": ip[:64] if ip else None}
    try:
        if conn is not None:
            await conn.execute(sa.insert(schema.audit), [row])
            return
        async with write_transaction(engine) as c:
            await c.execute(sa.insert(schema.audit), [row])
    except Exception:
        if conn is not None:
            raise
        log.exception("could not write the audit row %s", row)


async def recent(engine, *, limit: int = 200, actor: str | None = None, site: str | None = None,
                 sites: set[str] | None = None) -> list[dict]:
    """Newest audit rows first (``sites``: only those sites, None: all)."""
    a = schema.audit
    q = sa.select(a).order_by(a.c.ts.desc(), a.c.id.desc()).limit(limit)
    if actor:
        q = q.where(a.c.actor == actor)
    if site:
        q = q.where(a.c.site == site)
    if sites is not None:
        q = q.where(a.c.site.in_(sorted(sites)))
    async with engine.connect() as conn:
        return [dict(r._mapping) for r in await conn.execute(q)]
