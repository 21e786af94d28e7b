"""Login sessions: an opaque random token for the browser, only its SHA-256 in the store.

A stolen database therefore holds no usable session.  Each session has its own CSRF token
(double-submit: the browser echoes it in a header), an idle limit and an absolute limit
(``people.session_idle`` / ``session_max``).  ``last_seen_at`` is written at most once a
minute per session, not on every request.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

import sqlalchemy as sa

from centre.people import audit, users
from centre.people.config import PeopleConfig
from centre.people.users import User
from centre.store import schema
from centre.store.engine import write_transaction

TOUCH_EVERY = 60.0  # seconds between last_seen_at writes


@dataclass(frozen=True, slots=True)
class Session:
    id: str  # the token's hash
    user: User
    csrf: str
    created_at: float
    expires_at: float


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def start(conn, user: User, cfg: PeopleConfig, *, ip: str | None, user_agent: str | None) -> tuple[str, Session]:
    """A new session for the user, in ``conn``'s transaction: returns (token for the browser, the session)."""
    token, csrf, now = secrets.token_urlsafe(32), secrets.token_urlsafe(24), time.time()
    session = Session(token_hash(token), user, csrf, now, now + cfg.session_max)
    await conn.execute(sa.insert(schema.sessions), [{
        "id": session.id, "user_id": user.id, "csrf": csrf, "created_at": now, "last_seen_at": now,
        "expires_at": session.expires_at, "ip": ip[:64] if ip else None,
        "user_agent": user_agent[:256] if user_agent else None}])
    return token, session


async def lookup(engine, token: str, cfg: PeopleConfig) -> Session | None:
    """The live session of this token (with its user and grants), or None when unknown, ended, expired or idle."""
    if not token or len(token) > 128:
        return None
    return await lookup_id(engine, token_hash(token), cfg)


async def lookup_id(engine, sid: str, cfg: PeopleConfig) -> Session | None:
    """:func:`lookup` by the token's hash (a live stream re-checks its session this way, keeping it alive)."""
    s, now = schema.sessions, time.time()
    async with engine.connect() as conn:
        row = (await conn.execute(sa.select(s).where(s.c.id == sid))).mappings().first()
        if row is None or row["ended_at"] is not None or now >= row["expires_at"] \
                or now - row["last_seen_at"] > cfg.session_idle:
            return None
        found = await users.find(conn, user_id=row["user_id"])
    if found is None or not found[0].active:
        return None
    if now - row["last_seen_at"] > TOUCH_EVERY:
        async with write_transaction(engine) as conn:
            await conn.execute(sa.update(s).where(s.c.id == sid, s.c.ended_at.is_(None)).values(last_seen_at=now))
    return Session(sid, found[0], row["csrf"], row["created_at"], row["expires_at"])


async def end(conn, session_id: str) -> None:
    s = schema.sessions
    await conn.execute(sa.update(s).where(s.c.id == session_id, s.c.ended_at.is_(None)).values(ended_at=time.time()))


async def reset_password(engine, username: str, new_hash: str, *, actor: str, ip: str | None = None) -> int:
    """A new one-time password, every session ended and the audit row, in one transaction (CLI and admin page);
    returns how many sessions ended."""
    async with write_transaction(engine) as conn:
        found = await users.find(conn, username=username)
        if found is None:
            raise users.UserError(f"no user {username!r}")
        await users.set_password(engine, username, new_hash, must_change=True, conn=conn)
        ended = await end_all(conn, found[0].id)
        await audit.record(engine, actor=actor, action="users.reset_password", outcome="ok", target=username, ip=ip,
                           conn=conn, detail={"sessions_ended": ended})
    return ended


async def set_active(engine, username: str, active: bool, *, actor: str, ip: str | None = None) -> int:
    """Enable or disable an account (disabling ends its sessions) and audit it, in one transaction (CLI and admin
    page); returns how many sessions ended."""
    async with write_transaction(engine) as conn:
        await users.set_active(engine, username, active, conn=conn)
        found = await users.find(conn, username=username)
        ended = 0 if active else await end_all(conn, found[0].id)
        await audit.record(engine, actor=actor, action="users.enable" if active else "users.disable", outcome="ok",
                           target=username, ip=ip, conn=conn, detail={"sessions_ended": ended})
    return ended


async def end_all(conn, user_id: int, *, keep: str | None = None) -> int:
    """End every live session of a user (a password change, a disabled account), except ``keep``."""
    s = schema.sessions
    q = sa.update(s).where(s.c.user_id == user_id, s.c.ended_at.is_(None))
    if keep is not None:
        q = q.where(s.c.id != keep)
    return (await conn.execute(q.values(ended_at=time.time()))).rowcount


async def purge(engine, *, older_than: float) -> int:
    """Delete sessions that ended or expired before ``older_than`` (epoch s)."""
    s = schema.sessions
    async with write_transaction(engine) as conn:
        res = await conn.execute(sa.delete(s).where(sa.or_(s.c.ended_at < older_than, s.c.expires_at < older_than)))
    return res.rowcount
