"""Every error the API returns is JSON: ``{"error": code, "detail": words for a person}``, never a traceback.

Unexpected exceptions are logged here with their traceback and a short reference that the
answer repeats, so a person can report it and an operator can find it.
"""

from __future__ import annotations

import logging
import secrets

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("centre.web")

CODES = {400: "bad_request", 401: "not_logged_in", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
         409: "conflict", 413: "too_large", 415: "unsupported_media_type", 422: "invalid", 429: "too_many_requests",
         500: "internal", 503: "unavailable"}


class ApiError(Exception):
    """Raise from an endpoint for a refusal with a specific code and words."""

    def __init__(self, status: int, detail: str, *, code: str | None = None, headers: dict | None = None, **extra):
        super().__init__(detail)
        self.status, self.detail, self.headers, self.extra = status, detail, headers, extra
        self.code = code or CODES.get(status, "error")


def body(status: int, detail: str, code: str | None = None, **extra) -> dict:
    return {"error": code or CODES.get(status, "error"), "detail": detail, **extra}


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api(request: Request, exc: ApiError):
        return JSONResponse(body(exc.status, exc.detail, exc.code, **exc.extra), exc.status, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        detail = exc.detail if isinstance(exc.detail, str) else "request refused"
        return JSONResponse(body(exc.status_code, detail), exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        problems = [f"{'.'.join(str(p) for p in e['loc'] if p != 'body')}: {e['msg']}" for e in exc.errors()]
        return JSONResponse(body(422, "; ".join(problems) or "invalid request"), 422)

    app.add_middleware(CatchAll)


class CatchAll:
    """Pure ASGI: an exception no handler took becomes a JSON 500 (logged once, with a reference), instead of
    Starlette's plain-text page and a re-raise into the server."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def _send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, _send)
        except Exception as exc:
            ref = secrets.token_hex(4)
            log.error("unexpected error %s on %s %s", ref, scope.get("method"), scope.get("path"), exc_info=exc)
            if not started:
                detail = f"internal error (reference {ref}); the centre's log has the details"
                await JSONResponse(body(500, detail), 500)(scope, receive, send)
