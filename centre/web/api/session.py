"""Logging in and out, who am I, my language, changing my password.

The session token travels only in an HttpOnly, SameSite=Strict cookie (Secure when the
request came over HTTPS); the CSRF token in a readable cookie and in the answers here, for
the page to echo in ``X-CSRF-Token``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from centre.people import audit, users
from centre.people import login as people_login
from centre.people.roles import PERMISSIONS
from centre.people.sessions import Session
from centre.web.auth import CSRF_COOKIE, SESSION_COOKIE, SignedIn, check_json_body, client_ip, web_of
from centre.web.errors import ApiError
from centre.web.models import MeOut, Ok

router = APIRouter(tags=["session"])

_STATUS = {"wrong": 401, "throttled": 429, "disabled": 403, "busy": 503, "policy": 400}


class LoginIn(BaseModel):
    username: str = Field(min_length=1, max_length=128)
    password: str = Field(min_length=1, max_length=1024)


class PasswordIn(BaseModel):
    current: str = Field(min_length=1, max_length=1024)
    new: str = Field(min_length=1, max_length=1024)


class MeIn(BaseModel):
    """What a person may change about their own account here (names, roles and phones are the admin's)."""

    model_config = ConfigDict(extra="forbid")
    language: Literal[users.LANGUAGES] = Field(description="the language every console page starts in: en or zh-CN")


def me_body(session: Session) -> dict:
    user = session.user
    return {**user.public(), "csrf": session.csrf, "session_expires_at": session.expires_at,
            "permissions": sorted({p for g in user.grants for p in PERMISSIONS.get(g.role, ())})}


def _refused(exc: people_login.Refused) -> ApiError:
    headers = {"Retry-After": str(max(1, round(exc.retry_after)))} if exc.retry_after else None
    extra = {"retry_after": round(exc.retry_after, 1)} if exc.retry_after else {}
    return ApiError(_STATUS[exc.kind], exc.message, code=exc.kind if exc.kind != "wrong" else "wrong_credentials",
                    headers=headers, **extra)


@router.post("/login", response_model=MeOut, summary="Log in: sets the session and CSRF cookies",
             dependencies=[Depends(check_json_body)])
async def login(body: LoginIn, request: Request, response: Response) -> dict:
    web = web_of(request)
    try:
        done = await people_login.login(web.engine, web.people, body.username, body.password, ip=client_ip(request),
                                        user_agent=request.headers.get("user-agent"))
    except people_login.Refused as exc:
        raise _refused(exc) from None
    secure = request.url.scheme == "https"
    max_age = int(web.people.session_max)
    response.set_cookie(SESSION_COOKIE, done.token, max_age=max_age, path="/", httponly=True, samesite="strict",
                        secure=secure)
    response.set_cookie(CSRF_COOKIE, done.session.csrf, max_age=max_age, path="/", httponly=False, samesite="strict",
                        secure=secure)
    return me_body(done.session)


@router.post("/logout", response_model=Ok, summary="End this session")
async def logout(caller: SignedIn, response: Response) -> dict:
    await people_login.logout(caller.web.engine, caller.session, ip=caller.ip)
    response.delete_cookie(SESSION_COOKIE, path="/")
    response.delete_cookie(CSRF_COOKIE, path="/")
    return {"ok": True}


@router.get("/me", response_model=MeOut, summary="The logged-in user, their grants and permissions, and the CSRF token")
async def me(caller: SignedIn) -> dict:
    return me_body(caller.session)


@router.patch("/me", response_model=MeOut, summary="Change my own settings: the language my pages start in")
async def update_me(body: MeIn, caller: SignedIn) -> dict:
    before = caller.user.language
    await users.set_language(caller.web.engine, caller.username, body.language)
    await audit.record(caller.web.engine, actor=caller.username, action="me.language", outcome="ok",
                       target=caller.username, ip=caller.ip, detail={"from": before, "to": body.language})
    session = replace(caller.session, user=replace(caller.user, language=body.language))
    return me_body(session)


@router.post("/password", response_model=Ok, summary="Change my password (ends my other sessions)")
async def change_password(body: PasswordIn, caller: SignedIn) -> dict:
    try:
        await people_login.change_password(caller.web.engine, caller.web.people, caller.session, body.current, body.new,
                                           ip=caller.ip)
    except people_login.Refused as exc:
        raise _refused(exc) from None
    return {"ok": True}
