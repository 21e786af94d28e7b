"""The API on each engine: ``web`` (its shared context on the ``engine`` fixture), ``app``, and ``clients`` --
a factory of httpx clients on the real app (ASGI), one per person or address, closed after the test."""

from __future__ import annotations

import pytest

from centre.hub import Hub
from centre.web.app import create_app
from centre.web.context import Web
from tests.centre.web.support import cheap_argon2, client_for


@pytest.fixture(autouse=True)
def _cheap_argon2(monkeypatch):
    cheap_argon2(monkeypatch)


@pytest.fixture
def web(engine):
    return Web(engine, Hub())


@pytest.fixture
def app(web):
    return create_app(web)


@pytest.fixture
async def clients(app):
    made = []

    def make(ip: str = "10.0.0.5", base_url: str = "http://testserver"):
        made.append(client_for(app, ip, base_url))
        return made[-1]

    yield make
    for c in made:
        await c.aclose()
