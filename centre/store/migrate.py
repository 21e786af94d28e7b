"""Alembic, run from code: ``canopy-centre db upgrade`` and the tests call :func:`upgrade`.

The scripts live in ``centre/store/migrations/versions``.  Several modules add tables in
parallel, so every migration names ``0001_base`` (or a later one of its own module) as its
``down_revision`` and :func:`upgrade` goes to ``heads``: branches from different modules
are all applied, in dependency order.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from centre.store.engine import async_url

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", async_url(url).replace("%", "%%"))
    return cfg


def upgrade(url: str, target: str = "heads") -> None:
    """Bring the database at ``url`` to ``target`` (every head by default).  Blocking: call it in a thread
    from async code (:func:`upgrade_async`)."""
    command.upgrade(alembic_config(url), target)


async def upgrade_async(url: str, target: str = "heads") -> None:
    await asyncio.to_thread(upgrade, url, target)


async def current(engine) -> list[str]:
    """The revisions the database is at (empty before the first upgrade)."""
    async with engine.connect() as conn:
        if not await conn.run_sync(lambda c: sa.inspect(c).has_table("alembic_version")):
            return []
        return sorted(r[0] for r in await conn.execute(sa.text("SELECT version_num FROM alembic_version")))
