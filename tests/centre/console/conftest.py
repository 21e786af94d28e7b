"""Fixtures for the console's browser tests: a real centre with the console mounted, ingesting from a real
mosquitto, its store holding people and places (``centre``), and Debian's chromium (``browser``)."""

from __future__ import annotations

import pytest

from centre.store.migrate import upgrade_async
from tests.centre.console.support import ConsoleCentre, chromium, make_people, seed_places, with_console
from tests.centre.web.support import cheap_argon2


@pytest.fixture(autouse=True)
def _console_mounted(monkeypatch):
    from centre.web import service

    monkeypatch.setattr(service, "create_app", with_console(service.create_app))
    cheap_argon2(monkeypatch)


@pytest.fixture
async def centre(tmp_path, broker):
    url = f"sqlite:///{tmp_path / 'centre.sqlite'}"
    await upgrade_async(url)
    c = ConsoleCentre(url, broker.port)
    await make_people(c.engine)
    await seed_places(c.engine)
    await c.start()
    yield c
    await c.stop()


@pytest.fixture
async def browser():
    async with chromium() as b:
        yield b
