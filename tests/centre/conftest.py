"""Fixtures for the centre: a real PostgreSQL (session), a migrated database per test on each engine.

- ``pg_server``: one PostgreSQL cluster for the session (tests/centre/pg.py); fails, never skips,
  when PostgreSQL is missing.
- ``db_url``: parametrised ``sqlite`` / ``postgresql``: a fresh database migrated to every head
  (``centre.store.migrate.upgrade``), as a plain URL (``sqlite:///…`` or ``postgresql://…``).
- ``engine``: an ``AsyncEngine`` on ``db_url`` (``centre.store.engine.create_engine``), disposed after.
"""

from __future__ import annotations

import pytest

from centre.store.engine import create_engine
from centre.store.migrate import upgrade_async
from tests.centre.pg import PgServer


@pytest.fixture(scope="session")
def pg_server():
    server = PgServer().start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
async def db_url(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'centre.sqlite'}"
    else:
        url = request.getfixturevalue("pg_server").create_database()
    await upgrade_async(url)
    return url


@pytest.fixture
async def engine(db_url):
    eng = create_engine(db_url)
    yield eng
    await eng.dispose()
