"""Alembic environment for the centre: async engines (aiosqlite or asyncpg), the shared metadata."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from alembic import context
from sqlalchemy.ext.asyncio import AsyncConnection

from centre.store.engine import create_engine
from centre.store.schema import metadata

import centre.people.tables  # noqa: F401,E402 - their tables on the shared metadata


def _run(conn) -> None:
    context.configure(connection=conn, target_metadata=metadata, render_as_batch=conn.dialect.name == "sqlite",
                      compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


async def _online() -> None:
    engine = create_engine(context.config.get_main_option("sqlalchemy.url"))
    try:
        async with engine.connect() as conn:
            conn: AsyncConnection
            await conn.run_sync(_run)
            await conn.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    context.configure(url=context.config.get_main_option("sqlalchemy.url"), target_metadata=metadata,
                      literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(_online())
    else:  # called (synchronously) from async code: give the migration a loop of its own
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, _online()).result()
