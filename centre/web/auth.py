"""Who is asking, and may they: the session cookie, CSRF, and :func:`require` -- the one role/scope check.

Every endpoint except ``/health``, ``/metrics`` and ``POST /api/login`` depends on
:data:`CurrentUser` (or :data:`SignedIn` for the few a user with a one-time password may
use: me, password, logout).  That dependency

- finds the session from the ``canopy_session`` cookie (401 when missing, unknown, ended,
  idle or expired -- audited);
- on every state-changing request (POST, PUT, PATCH, DELETE) checks CSRF: the
  ``X-CSRF-Token`` header must equal the session's CSRF token (the browser reads it from the
  ``canopy_csrf`` cookie or from ``/api/me``), and a body must be JSON (a cross-site form
  cannot send either);
- refuses everything but me/password/logout while the user must change a one-time password.

Action endpoints (ack an alert, irrigate, unlock ...) then call::

    await require(caller, "alerts.ack", site=alert.site, group=alert.groups, household=..., zone=...)
    await require(caller, "irrigation.control", site=site, zone="2", target="valve zone-2")
    await require(caller, "doors.control", site=site, household="101", target="lock door-101")

It returns the user when some grant covers the action on that target (rules in
``centre.people.roles``) and otherwise writes an audit row (outcome ``denied``, with the
reason) and raises a 403 whose ``detail`` says why.  Pass every dimension the target has:
a target with no group, household or zone needs a whole-site grant.  For lists and
streams use :func:`centre.people.roles.allowed` directly (it never raises or audits).
The caller audits its own successful action (``centre.people.audit.record``).
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from centre.people import audit, sessions
from centre.people.roles import Grant, allowed
from centre.people.sessions import Session
from centre.people.users import User
from centre.web.context import Web
from centre.web.errors import ApiError

SESSION_COOKIE = "canopy_session"
CSRF_COOKIE = "canopy_csrf"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True, slots=True)
class Caller:
    """The logged-in person behind this request."""

    session: Session
    ip: str | None
    web: Web

    @property
    def user(self) -> User:
        return self.session.user

    @property
    def username(self) -> str:
        return self.session.user.username

    @property
    def grants(self) -> tuple[Grant, ...]:
        return self.session.user.grants


def web_of(request: Request) -> Web:
    return request.app.state.web


def client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


async def refuse(web: Web, *, status: int, detail: str, actor: str, action: str, ip: str | None,
                 target: str | None = None, site: str | None = None, code: str | None = None, **extra) -> ApiError:
    """Audit a refusal and return the error to raise."""
    await audit.record(web.engine, actor=actor, action=action, outcome="denied", target=target, site=site, ip=ip,
                       detail={"status": status, "reason": detail})
    return ApiError(status, detail, code=code, **extra)


def check_json_body(request: Request) -> None:
    """A state-changing request with a body must send JSON (HTML forms cannot, so no cross-site form posts)."""
    if request.method in SAFE_METHODS:
        return
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    has_body = request.headers.get("content-length", "0") != "0" or "transfer-encoding" in request.headers
    if has_body and ctype != "application/json":
        raise ApiError(415, "send the request body as application/json")


async def signed_in(request: Request) -> Caller:
    web, ip = web_of(request), client_ip(request)
    action = f"http.{request.method.lower()}"
    token = request.cookies.get(SESSION_COOKIE)
    session = await sessions.lookup(web.engine, token, web.people) if token else None
    if session is None:
        why = "not logged in" if not token else "your session has ended or expired: log in again"
        raise await refuse(web, status=401, detail=why, actor="anonymous", action=action, ip=ip,
                           target=request.url.path)
    if request.method not in SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER, "")
        if not sent or not hmac.compare_digest(sent, session.csrf):
            raise await refuse(web, status=403, code="csrf", actor=session.user.username, action=action, ip=ip,
                               target=request.url.path,
                               detail=f"missing or wrong CSRF token: send the {CSRF_HEADER} header with the value of "
                                      f"the {CSRF_COOKIE} cookie")
        check_json_body(request)
    return Caller(session, ip, web)


async def current_user(request: Request, caller: Annotated[Caller, Depends(signed_in)]) -> Caller:
    if caller.user.must_change_password:
        raise await refuse(caller.web, status=403, code="password_change_required", actor=caller.username,
                           action=f"http.{request.method.lower()}", ip=caller.ip, target=request.url.path,
                           detail="change your one-time password first (POST /api/password)")
    return caller


SignedIn = Annotated[Caller, Depends(signed_in)]
CurrentUser = Annotated[Caller, Depends(current_user)]


async def require(caller: Caller, action: str, *, site: str | None, group: str | Iterable[str] | None = None,
                  household: str | None = None, zone: str | None = None, site_level: bool = False,
                  target: str | None = None) -> User:
    """The user, when a grant covers ``action`` on this target; else audit the refusal and raise a 403 with why."""
    reason = allowed(caller.grants, action, site=site, group=group, household=household, zone=zone,
                     site_level=site_level)
    if reason is None:
        return caller.user
    raise await refuse(caller.web, status=403, detail=reason, actor=caller.username, action=action, ip=caller.ip,
                       target=target, site=site)
