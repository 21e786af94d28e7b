"""Serves the console: its pages (each checked against the person's roles), its static files, and where ``/`` leads.

The centre's app mounts it with ``centre.console.routes.mount(app)``.  Pages:

- ``/`` -> the person's own page (``/desk``, ``/farm``, ``/volunteer`` or ``/admin``), or ``/login``;
- ``/login`` -> the login form (it also asks for a new password after a one-time one);
- ``/desk``, ``/farm``, ``/volunteer``, ``/admin`` -> the page, when a role allows it
  (:mod:`centre.console.pages`); not logged in -> ``/login?next=…``; a role that may not ->
  a 403 page in the person's language that links to their own page (and an audit row);
- ``/console/…`` -> the static files: JavaScript modules, the stylesheet, the catalogues.

Every page is sent with a Content-Security-Policy that allows nothing but this origin (no
inline script, no CDN), so text that came from a gateway can never run as code.  The
files are read once, when mounted: serving a page never touches the disk.
"""

from __future__ import annotations

import html
from pathlib import Path

import orjson
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from centre.console.pages import PAGES, Page, home_for, may_open, pages_for
from centre.people import audit, sessions
from centre.people.sessions import Session
from centre.web.auth import SESSION_COOKIE, client_ip, web_of

STATIC = Path(__file__).parent / "static"
LANGUAGES = ("en", "zh-CN")
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "media-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")
HEADERS = {"content-security-policy": CSP}


class Files:
    """The HTML templates and the catalogues, read once."""

    def __init__(self, root: Path = STATIC):
        self.html = {p.name: p.read_text(encoding="utf-8") for p in root.glob("*.html")}
        self.words = {lang: orjson.loads((root / "i18n" / f"{lang}.json").read_bytes()) for lang in LANGUAGES}

    def page(self, file: str, lang: str) -> str:
        return self.html[file].replace("{{lang}}", lang)

    def word(self, lang: str, key: str, **params) -> str:
        text = self.words.get(lang, self.words["en"]).get(key) or self.words["en"].get(key, key)
        for k, v in params.items():
            text = text.replace("{" + k + "}", str(v))
        return text


def mount(app: FastAPI) -> None:
    """Add the console's pages and static files to the centre's app."""
    files = Files()
    app.include_router(_router(files))
    app.mount("/console", StaticFiles(directory=STATIC, check_dir=True), name="console")


def language_of(request: Request, session: Session | None) -> str:
    """The person's language; before login, the browser's (Accept-Language)."""
    if session is not None and session.user.language in LANGUAGES:
        return session.user.language
    return "zh-CN" if request.headers.get("accept-language", "").lower().startswith("zh") else "en"


async def _session(request: Request) -> Session | None:
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    web = web_of(request)
    return await sessions.lookup(web.engine, token, web.people)


def _router(files: Files) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/")
    async def root(request: Request):
        session = await _session(request)
        home = home_for(session.user.grants) if session is not None else None
        return RedirectResponse(home.path if home else "/login", status_code=303)

    @router.get("/login")
    async def login(request: Request):
        return HTMLResponse(files.page("login.html", language_of(request, None)), headers=HEADERS)

    for page in PAGES.values():
        router.add_api_route(page.path, _page_handler(files, page), methods=["GET"])
    return router


def _page_handler(files: Files, page: Page):
    async def handler(request: Request):
        session = await _session(request)
        if session is None or session.user.must_change_password:
            return RedirectResponse(f"/login?next={page.path}", status_code=303)
        lang = language_of(request, session)
        if not may_open(session.user.grants, page):
            web = web_of(request)
            roles = ", ".join(sorted({g.role for g in session.user.grants})) or "-"
            await audit.record(web.engine, actor=session.user.username, action="console.open", outcome="denied",
                               target=page.path, ip=client_ip(request),
                               detail={"status": 403, "reason": f"roles {roles} may not open the {page.name} page"})
            return HTMLResponse(forbidden(files, page, session, lang), status_code=403, headers=HEADERS)
        return HTMLResponse(files.page(page.file, lang), headers=HEADERS)

    handler.__name__ = f"page_{page.name}"
    return handler


def forbidden(files: Files, page: Page, session: Session, lang: str) -> str:
    """The 403 page: what this page is for, who you are, and the pages you may open instead."""
    esc = html.escape
    roles = ", ".join(files.word(lang, f"role.{r}") for r in sorted({g.role for g in session.user.grants}))
    links = "".join(f'<li><a class="big-link" href="{p.path}">{esc(files.word(lang, f"page.{p.name}"))}</a></li>'
                    for p in pages_for(session.user.grants))
    return files.page("forbidden.html", lang).replace("{{title}}", esc(files.word(lang, "forbidden.title"))).replace(
        "{{body}}", esc(files.word(lang, "forbidden.body", page=files.word(lang, f"page.{page.name}"),
                                   user=session.user.username, roles=roles or "-"))).replace(
        "{{links}}", links or f"<li>{esc(files.word(lang, 'forbidden.no_page'))}</li>").replace(
        "{{logout}}", esc(files.word(lang, "header.logout")))
