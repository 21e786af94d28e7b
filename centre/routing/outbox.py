"""The notifications outbox in the store: who belongs to a group, rows in (once), rows due, rows done.

Planning is pure (:mod:`centre.routing.plan`); this module is its I/O.  Inserting is
``ON CONFLICT (key) DO NOTHING … RETURNING``: only rows new to the store come back, so only
they are shown on the console and handed to the delivery workers.
"""

from __future__ import annotations

import sqlalchemy as sa

from centre.routing.plan import AlertNote, Person, plan
from centre.routing.config import RoutingConfig
from centre.routing.tables import notifications as N
from centre.store import schema
from centre.store.engine import insert

U, R = schema.users, schema.role_grants


async def members(conn, site: str, group: str, usernames: list[str]) -> list[Person]:
    """Active users named in the routing config, plus those granted a role scoped to ``group`` (at ``site``)."""
    granted = sa.select(R.c.user_id).where(R.c.scope_kind == "group", R.c.scope == group,
                                           sa.or_(R.c.site.is_(None), R.c.site == site))
    q = sa.select(U.c.username, U.c.display_name, U.c.email, U.c.phone, U.c.language).where(
        U.c.active.is_(True), sa.or_(U.c.username.in_(usernames), U.c.id.in_(granted))).order_by(U.c.username)
    return [Person(r.username, r.display_name, r.email, r.phone, r.language or "en") for r in await conn.execute(q)]


async def plan_and_insert(conn, notes: list[AlertNote], cfg: RoutingConfig, now: float) -> list[dict]:
    """Plan every note, insert the rows; returns the rows that were new (with their ids)."""
    people: dict[tuple, list[Person]] = {}
    for note in notes:
        for group in note.told():
            routing = cfg.group(note.site, group)
            if routing is not None and (k := (note.site, group, tuple(routing.users))) not in people:
                people[k] = await members(conn, note.site, group, routing.users)
    rows = [r for note in notes for r in plan(note, cfg, lambda s, g, u: people[(s, g, tuple(u))], now)]
    return await insert_rows(conn, rows)


async def insert_rows(conn, rows: list[dict]) -> list[dict]:
    if not rows:
        return []
    uniq = {r["key"]: r for r in rows}
    stmt = insert(N, conn.dialect.name).on_conflict_do_nothing(index_elements=["key"]).returning(N.c.id, N.c.key)
    ids = {r.key: r.id for r in await conn.execute(stmt, [uniq[k] for k in sorted(uniq)])}
    return [{**uniq[k], "id": i} for k, i in ids.items()]


async def due(conn, now: float, limit: int, skip: set[int]) -> list:
    q = (sa.select(N).where(N.c.status == "queued", N.c.next_attempt_at <= now).order_by(N.c.next_attempt_at, N.c.id)
         .limit(limit + len(skip)))
    return [r for r in await conn.execute(q) if r.id not in skip][:limit]


async def done(conn, nid: int, now: float) -> None:
    await conn.execute(sa.update(N).where(N.c.id == nid).values(status="sent", sent_at=now, attempts=N.c.attempts + 1,
                                                                last_error=None))


async def retry(conn, nid: int, error: str, next_at: float | None) -> None:
    """Another attempt at ``next_at``, or ``failed`` for good when ``next_at`` is None."""
    values = {"attempts": N.c.attempts + 1, "last_error": error[:512]}
    if next_at is None:
        values["status"] = "failed"
    else:
        values["next_attempt_at"] = next_at
    await conn.execute(sa.update(N).where(N.c.id == nid).values(**values))
