"""``/api/admin/users``: the people an administrator manages -- the same functions as ``canopy-centre users``.

Add a user (a one-time password, shown once in the answer and never stored in clear),
change their roles and scopes, disable or enable them, reset their password.  Each change
calls :mod:`centre.people.users` / :mod:`centre.people.passwords` / :mod:`centre.people.sessions`
exactly as the CLI does and is audited with the same action names (``users.add``,
``users.grant``, ``users.revoke``, ``users.disable``, ``users.enable``, ``users.reset_password``),
the actor being the logged-in administrator.  Every grant touched must lie within the
administrator's own ``users.manage`` sites (:func:`centre.web.api.admin_access.cover`).
An administrator cannot disable themselves or change their own roles (no lock-out by a slip).
"""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from centre.people import audit, passwords, sessions, users
from centre.people.roles import MANAGE_USERS, Grant, check_grant, parse_scope
from centre.people.users import User, UserError
from centre.web.api.admin_access import cover, gate, visible
from centre.web.auth import Caller, CurrentUser, refuse
from centre.web.errors import ApiError

router = APIRouter(prefix="/users", tags=["admin"])


class GrantIn(BaseModel):
    role: str = Field(max_length=32, description="duty_desk, volunteer, grid_leader, farmer, installer, admin")
    site: str | None = Field(None, max_length=64, description="null: every site")
    scope_kind: str = Field("site", max_length=16, description="site | group | household | zone")
    scope: str | None = Field(None, max_length=64, description="the group, household or zone; null for a whole site")


class UserIn(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    display_name: str | None = Field(None, max_length=256)
    language: str = Field("en", max_length=8)
    phone: str | None = Field(None, max_length=64)
    email: str | None = Field(None, max_length=256)
    grants: list[GrantIn] = Field(min_length=1, max_length=50)


class GrantsIn(BaseModel):
    grants: list[GrantIn] = Field(max_length=50, description="the user's grants after the change (the whole list)")


def to_grants(items: list[GrantIn]) -> list[Grant]:
    """Checked grants; a 422 that says what is wrong otherwise."""
    out = []
    for i in items:
        try:
            kind, scope = parse_scope(f"{i.scope_kind}:{i.scope or ''}") if i.scope_kind != "site" else ("site", None)
            out.append(check_grant(Grant(i.role, i.site or None, kind, scope)))
        except ValueError as exc:
            raise ApiError(422, str(exc)) from None
    return list(dict.fromkeys(out))


async def _user(caller: Caller, username: str) -> User:
    async with caller.web.engine.connect() as conn:
        found = await users.find(conn, username=username)
    if found is None:
        raise ApiError(404, f"no user {username!r}")
    return found[0]


async def _managed(caller: Caller, username: str, action: str) -> User:
    """The user, when the caller may manage them (their every grant within the caller's sites)."""
    sites = await gate(caller, MANAGE_USERS, f"user {username}")
    user = await _user(caller, username)
    if user.grants:
        await cover(caller, MANAGE_USERS, [g.site for g in user.grants], f"user {username}")
    elif sites is not None:
        raise await refuse(caller.web, status=403, actor=caller.username, action=MANAGE_USERS, ip=caller.ip,
                           target=f"user {username}",
                           detail=f"user {username} has no role: only an administrator of every site may {action} them")
    return user


def _not_self(caller: Caller, username: str, what: str) -> None:
    if username == caller.username:
        raise ApiError(409, f"you cannot {what} your own account: ask another administrator")


async def _audit(caller: Caller, action: str, target: str, detail: dict, conn=None) -> None:
    await audit.record(caller.web.engine, actor=caller.username, action=action, outcome="ok", target=target,
                       ip=caller.ip, detail=detail, conn=conn)


@router.get("", summary="Users I manage, with their grants (never a password)")
async def list_users(caller: CurrentUser) -> list[dict]:
    sites = await gate(caller, MANAGE_USERS, "users")
    found = await users.list_users(caller.web.engine)
    return [u.public() for u in found
            if sites is None or any(visible(sites, g.site) for g in u.grants)]


@router.post("", status_code=201, summary="Add a user: the answer carries a one-time password, shown once")
async def add(body: UserIn, caller: CurrentUser) -> dict:
    await gate(caller, MANAGE_USERS, f"user {body.username}")
    grants = to_grants(body.grants)
    await cover(caller, MANAGE_USERS, [g.site for g in grants], f"user {body.username}")
    password = passwords.one_time_password()
    try:
        users.check_username(body.username)
        await users.add_user(caller.web.engine, body.username, await passwords.hash_password(password), grants,
                             display_name=body.display_name or None, language=body.language,
                             phone=body.phone or None, email=body.email or None)
    except UserError as exc:
        raise ApiError(409 if "exists" in str(exc) else 422, str(exc)) from None
    except passwords.Busy as exc:
        raise ApiError(503, str(exc)) from None
    await _audit(caller, "users.add", body.username, {"grants": [str(g) for g in grants]})
    return {"user": (await _user(caller, body.username)).public(), "one_time_password": password}


@router.put("/{username}/grants", summary="Set a user's grants: the ones missing are added, the others revoked")
async def set_grants(username: str, body: GrantsIn, caller: CurrentUser) -> dict:
    user = await _managed(caller, username, "change")
    _not_self(caller, username, "change the roles of")
    wanted = to_grants(body.grants)
    have = list(user.grants)
    add, drop = [g for g in wanted if g not in have], [g for g in have if g not in wanted]
    await cover(caller, MANAGE_USERS, [g.site for g in add + drop], f"user {username}")
    if add:
        await users.add_grants(caller.web.engine, username, add)
        await _audit(caller, "users.grant", username, {"grants": [str(g) for g in add]})
    if drop:
        removed = await users.revoke_grants(caller.web.engine, username, drop)
        await _audit(caller, "users.revoke", username, {"grants": [str(g) for g in drop], "removed": removed})
    return {"user": (await _user(caller, username)).public(), "added": len(add), "revoked": len(drop)}


async def _set_active(caller: Caller, username: str, active: bool) -> dict:
    await _managed(caller, username, "enable" if active else "disable")
    if not active:
        _not_self(caller, username, "disable")
    ended = await sessions.set_active(caller.web.engine, username, active, actor=caller.username, ip=caller.ip)
    return {"user": (await _user(caller, username)).public(), "sessions_ended": ended}


@router.post("/{username}/disable", summary="The user can no longer log in; their sessions end now")
async def disable(username: str, caller: CurrentUser) -> dict:
    return await _set_active(caller, username, False)


@router.post("/{username}/enable", summary="Allow a disabled user to log in again")
async def enable(username: str, caller: CurrentUser) -> dict:
    return await _set_active(caller, username, True)


@router.post("/{username}/reset-password", summary="A new one-time password (shown once); ends the user's sessions")
async def reset_password(username: str, caller: CurrentUser) -> dict:
    await _managed(caller, username, "reset")
    _not_self(caller, username, "reset the password of")
    password = passwords.one_time_password()
    try:
        new_hash = await passwords.hash_password(password)
    except passwords.Busy as exc:
        raise ApiError(503, str(exc)) from None
    ended = await sessions.reset_password(caller.web.engine, username, new_hash, actor=caller.username, ip=caller.ip)
    return {"user": (await _user(caller, username)).public(), "one_time_password": password, "sessions_ended": ended}
