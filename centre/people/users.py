"""Users and their grants in the store: create, find, change a password, grant and revoke roles.

There is no default user and no default password: the first admin is made with
``canopy-centre users add NAME --role admin``, which prints a one-time password (or reads one
from stdin) and marks it to be changed at the first login.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from centre.people.roles import Grant, check_grant
from centre.store import schema
from centre.store.engine import write_transaction

USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
LANGUAGES = ("en", "zh-CN")


class UserError(ValueError):
    """A user operation that cannot be done, in words for the person who asked."""


@dataclass(frozen=True, slots=True)
class User:
    id: int
    username: str
    display_name: str | None
    language: str
    phone: str | None
    email: str | None
    active: bool
    must_change_password: bool
    grants: tuple[Grant, ...]

    def public(self) -> dict:
        """What the API shows of a user (never the hash)."""
        return {"username": self.username, "display_name": self.display_name, "language": self.language,
                "phone": self.phone, "email": self.email, "active": self.active,
                "must_change_password": self.must_change_password,
                "grants": [{"role": g.role, "site": g.site, "scope_kind": g.scope_kind, "scope": g.scope}
                           for g in self.grants]}


def check_username(name: str) -> str:
    if not USERNAME.match(name):
        raise UserError(f"user name {name!r}: letters, digits and _ . @ - only, at most 64, starting with a letter or digit")
    return name


async def add_user(engine, username: str, password_hash: str, grants: Iterable[Grant], *, display_name: str | None = None,
                   language: str = "en", phone: str | None = None, email: str | None = None,
                   must_change_password: bool = True) -> int:
    """Create a user with its grants in one transaction; returns its id.  UserError if the name is taken."""
    check_username(username)
    if language not in LANGUAGES:
        raise UserError(f"language {language!r}: one of {', '.join(LANGUAGES)}")
    grants = list(dict.fromkeys(check_grant(g) for g in grants))
    now = time.time()
    try:
        async with write_transaction(engine) as conn:
            uid = (await conn.execute(sa.insert(schema.users).returning(schema.users.c.id), [{
                "username": username, "display_name": display_name, "password_hash": password_hash, "language": language,
                "phone": phone, "email": email, "active": True, "must_change_password": must_change_password,
                "created_at": now, "password_changed_at": now}])).scalar_one()
            await _insert_grants(conn, uid, grants)
    except IntegrityError:
        raise UserError(f"user {username!r} exists already") from None
    return uid


async def add_grants(engine, username: str, grants: Iterable[Grant]) -> None:
    grants = [check_grant(g) for g in grants]
    async with write_transaction(engine) as conn:
        uid = await _id_of(conn, username)
        have = set(await _grants_of(conn, uid))
        await _insert_grants(conn, uid, [g for g in grants if g not in have])


async def revoke_grants(engine, username: str, grants: Iterable[Grant]) -> int:
    """Remove these grants; returns how many there were."""
    rg = schema.role_grants
    removed = 0
    async with write_transaction(engine) as conn:
        uid = await _id_of(conn, username)
        for g in grants:
            res = await conn.execute(sa.delete(rg).where(
                rg.c.user_id == uid, rg.c.role == g.role, rg.c.scope_kind == g.scope_kind,
                rg.c.site.is_(None) if g.site is None else rg.c.site == g.site,
                rg.c.scope.is_(None) if g.scope is None else rg.c.scope == g.scope))
            removed += res.rowcount
    return removed


async def set_password(engine, username: str, password_hash: str, *, must_change: bool, conn=None) -> None:
    u = schema.users
    stmt = sa.update(u).where(u.c.username == username).values(
        password_hash=password_hash, must_change_password=must_change, password_changed_at=time.time())
    if conn is not None:
        await conn.execute(stmt)
        return
    async with write_transaction(engine) as c:
        if (await c.execute(stmt)).rowcount != 1:
            raise UserError(f"no user {username!r}")


async def set_language(engine, username: str, language: str) -> None:
    """The person's language, kept in the account so every page and every device starts in it."""
    if language not in LANGUAGES:
        raise UserError(f"language {language!r}: one of {', '.join(LANGUAGES)}")
    await _update(engine, username, language=language)


async def set_active(engine, username: str, active: bool, *, conn=None) -> None:
    await _update(engine, username, conn=conn, active=active)


async def _update(engine, username: str, *, conn=None, **values) -> None:
    """One user's columns; ``UserError`` when there is no such user (in ``conn``'s transaction when given)."""
    u = schema.users
    stmt = sa.update(u).where(u.c.username == username).values(**values)
    if conn is not None:
        if (await conn.execute(stmt)).rowcount != 1:
            raise UserError(f"no user {username!r}")
        return
    async with write_transaction(engine) as c:
        if (await c.execute(stmt)).rowcount != 1:
            raise UserError(f"no user {username!r}")


async def find(conn, *, username: str | None = None, user_id: int | None = None) -> tuple[User, str | None] | None:
    """(user, password_hash) by name or id, or None."""
    u = schema.users
    q = sa.select(u).where(u.c.username == username if username is not None else u.c.id == user_id)
    row = (await conn.execute(q)).mappings().first()
    if row is None:
        return None
    return _user(row, await _grants_of(conn, row["id"])), row["password_hash"]


async def list_users(engine) -> list[User]:
    u, rg = schema.users, schema.role_grants
    async with engine.connect() as conn:
        rows = (await conn.execute(sa.select(u).order_by(u.c.username))).mappings().all()
        grants: dict[int, list[Grant]] = {}
        for r in await conn.execute(sa.select(rg).order_by(rg.c.id)):
            grants.setdefault(r.user_id, []).append(Grant(r.role, r.site, r.scope_kind, r.scope))
    return [_user(r, grants.get(r["id"], [])) for r in rows]


def _user(row, grants) -> User:
    return User(row["id"], row["username"], row["display_name"], row["language"], row["phone"], row["email"],
                bool(row["active"]), bool(row["must_change_password"]), tuple(grants))


async def _grants_of(conn, uid: int) -> list[Grant]:
    rg = schema.role_grants
    rows = await conn.execute(sa.select(rg).where(rg.c.user_id == uid).order_by(rg.c.id))
    return [Grant(r.role, r.site, r.scope_kind, r.scope) for r in rows]


async def _insert_grants(conn, uid: int, grants: list[Grant]) -> None:
    if grants:
        await conn.execute(sa.insert(schema.role_grants), [
            {"user_id": uid, "role": g.role, "site": g.site, "scope_kind": g.scope_kind, "scope": g.scope} for g in grants])


async def _id_of(conn, username: str) -> int:
    uid = (await conn.execute(sa.select(schema.users.c.id).where(schema.users.c.username == username))).scalar()
    if uid is None:
        raise UserError(f"no user {username!r}")
    return uid
