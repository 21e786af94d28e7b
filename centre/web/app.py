"""The FastAPI application: the API under ``/api``, health and metrics at the root, JSON errors everywhere.

``create_app(web)`` is all a server or a test needs.  Other modules add their endpoints by
``app.include_router(router, prefix="/api")`` on the app that :func:`create_app` returns, or
by listing a router module in :data:`ROUTERS` (each depends on ``CurrentUser`` and calls
:func:`centre.web.auth.require`).  OpenAPI is at ``/api/openapi.json`` (for logged-in users,
like everything else but ``/health``, ``/metrics`` and ``POST /api/login``); there is no
Swagger page, whose assets would come from a CDN.
"""

from __future__ import annotations

import importlib

from fastapi import APIRouter, FastAPI

from centre.web import errors, ops, stream
from centre.web.api import alerts, commands, gateways, readings, session
from centre.web.auth import SignedIn
from centre.web.context import Web

MAX_BODY = 64 * 1024  # bytes: no request of this API is bigger; larger ones are refused before they are read
# routers other modules add (``router`` attribute), mounted under /api when the module exists
ROUTERS = ("centre.acting.api", "centre.web.api.admin", "centre.web.api.households")
_SECURITY_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
                     (b"x-frame-options", b"DENY")]
_NO_STORE = (b"cache-control", b"no-store")  # API answers; the console's static files revalidate instead
_REVALIDATE = (b"cache-control", b"no-cache")


def create_app(web: Web) -> FastAPI:
    app = FastAPI(title="Canopy Centre", summary="People's view of the gateways: alerts, sites, readings, commands",
                  version="1", openapi_url=None, docs_url=None, redoc_url=None, max_body_size=MAX_BODY)
    app.state.web = web
    errors.install(app)
    app.add_middleware(SecurityHeaders)
    api = APIRouter(prefix="/api")
    for module in (session, gateways, alerts, readings, commands, stream):
        api.include_router(module.router)
    for name in ROUTERS:
        try:
            api.include_router(importlib.import_module(name).router)
        except ModuleNotFoundError as exc:
            if exc.name is None or not name.startswith(exc.name):
                raise

    @api.get("/openapi.json", include_in_schema=False)
    async def openapi(caller: SignedIn) -> dict:
        return app.openapi()

    app.include_router(api)
    app.include_router(ops.router)
    # the people's pages (duty desk, volunteer, farmer): imported by name, as console imports web
    importlib.import_module("centre.console.routes").mount(app)
    return app


class SecurityHeaders:
    """Pure ASGI (streams pass untouched): no sniffing, no framing, no referrer, no caching of API answers."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        cache = _REVALIDATE if scope.get("path", "").startswith("/console/") else _NO_STORE

        async def _send(message):
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + _SECURITY_HEADERS + [cache]
            await send(message)

        await self.app(scope, receive, _send)
