"""Logging in, logging out and changing one's password: throttled, audited, the same for every front end.

Every outcome is an audit row: ``login`` ok / failed (wrong password or unknown user: the
same answer for both) / denied (throttled, disabled, busy), ``logout``, ``password.change``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from centre.people import audit, passwords, sessions, throttle, users
from centre.people.config import PeopleConfig
from centre.people.sessions import Session
from centre.store.engine import write_transaction


class Refused(Exception):
    """A refused login or password change: ``kind`` for the status code, ``message`` for the person."""

    def __init__(self, kind: str, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.kind = kind  # wrong | throttled | disabled | busy | policy
        self.message = message
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class LoggedIn:
    session: Session
    token: str  # goes to the browser only, in an HttpOnly cookie


async def login(engine, cfg: PeopleConfig, username: str, password: str, *, ip: str | None,
                user_agent: str | None = None) -> LoggedIn:
    now = time.time()
    ukey, ikey = throttle.user_key(username), throttle.ip_key(ip)
    block = await throttle.blocked(engine, [ukey, ikey], now)
    if block is not None:
        await audit.record(engine, actor=username, action="login", outcome="denied", ip=ip,
                           detail={"reason": "throttled", "key": block.key, "retry_after": round(block.retry_after, 1)})
        raise Refused("throttled", block.message, block.retry_after)
    async with engine.connect() as conn:
        found = await users.find(conn, username=username)
    user, stored = found if found is not None else (None, None)
    try:
        ok, rehash = await passwords.verify_password(stored, password)
    except passwords.Busy as exc:
        await audit.record(engine, actor=username, action="login", outcome="denied", ip=ip, detail={"reason": "busy"})
        raise Refused("busy", str(exc), 5.0) from None
    if not ok or user is None:
        await throttle.failed(engine, {ukey: cfg.per_user, ikey: cfg.per_ip}, now)
        await audit.record(engine, actor=username, action="login", outcome="failed", ip=ip,
                           detail={"reason": "wrong password" if user is not None else "unknown user"})
        raise Refused("wrong", "wrong user name or password")
    if not user.active:
        await audit.record(engine, actor=username, action="login", outcome="denied", ip=ip, detail={"reason": "disabled"})
        raise Refused("disabled", "this account is disabled: ask an administrator")
    await throttle.clear(engine, ukey)
    async with write_transaction(engine) as conn:
        if rehash:
            await users.set_password(engine, user.username, rehash, must_change=user.must_change_password, conn=conn)
        token, session = await sessions.start(conn, user, cfg, ip=ip, user_agent=user_agent)
        await audit.record(engine, actor=user.username, action="login", outcome="ok", ip=ip, conn=conn,
                           detail={"must_change_password": user.must_change_password})
    return LoggedIn(session, token)


async def logout(engine, session: Session, *, ip: str | None) -> None:
    async with write_transaction(engine) as conn:
        await sessions.end(conn, session.id)
        await audit.record(engine, actor=session.user.username, action="logout", outcome="ok", ip=ip, conn=conn)


async def change_password(engine, cfg: PeopleConfig, session: Session, current: str, new: str, *, ip: str | None) -> None:
    """Check the current password (throttled like a login), apply the rules, store the new hash, and end the
    user's other sessions.  Raises :class:`Refused`."""
    name, now = session.user.username, time.time()
    block = await throttle.blocked(engine, [throttle.user_key(name)], now)
    if block is not None:
        await audit.record(engine, actor=name, action="password.change", outcome="denied", ip=ip,
                           detail={"reason": "throttled"})
        raise Refused("throttled", block.message, block.retry_after)
    async with engine.connect() as conn:
        found = await users.find(conn, user_id=session.user.id)
    ok, _ = await passwords.verify_password(found[1] if found else None, current)
    if not ok:
        await throttle.failed(engine, {throttle.user_key(name): cfg.per_user}, now)
        await audit.record(engine, actor=name, action="password.change", outcome="failed", ip=ip,
                           detail={"reason": "wrong current password"})
        raise Refused("wrong", "the current password is wrong")
    problem = passwords.policy_problem(new, username=name, min_length=cfg.password_min_length)
    if problem is None and new == current:
        problem = "the new password must differ from the current one"
    if problem is not None:
        await audit.record(engine, actor=name, action="password.change", outcome="denied", ip=ip, detail={"reason": problem})
        raise Refused("policy", problem)
    new_hash = await passwords.hash_password(new)
    async with write_transaction(engine) as conn:
        await users.set_password(engine, name, new_hash, must_change=False, conn=conn)
        ended = await sessions.end_all(conn, session.user.id, keep=session.id)
        await audit.record(engine, actor=name, action="password.change", outcome="ok", ip=ip, conn=conn,
                           detail={"other_sessions_ended": ended})
