"""Async engines for the two stores, with the settings each needs, and the one dialect difference ingest has.

``sqlite:///path`` becomes aiosqlite in WAL mode with ``synchronous=FULL`` (a PUBACK goes to
the broker only after the commit, so a committed row must survive power loss too) and a
busy timeout; SQLAlchemy's own ``BEGIN`` is used instead of the sqlite3 module's implicit
transactions (its documented recipe).  ``postgresql://…`` becomes asyncpg.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg", "postgres": "postgresql+asyncpg"}


def async_url(url: str) -> str:
    """``sqlite:///x.db`` / ``postgresql://…`` -> the async driver's URL; an explicit driver is kept."""
    u = make_url(url)
    if "+" not in u.drivername:
        if u.drivername not in DRIVERS:
            raise ValueError(f"database URL must start with sqlite:// or postgresql:// (got {u.drivername}://)")
        u = u.set(drivername=DRIVERS[u.drivername])
    return u.render_as_string(hide_password=False)


def create_engine(url: str, *, synchronous: str = "FULL", pool_size: int = 5, echo: bool = False) -> AsyncEngine:
    """An async engine for ``url`` (SQLite or PostgreSQL), configured for the centre."""
    url = async_url(url)
    if url.startswith("sqlite"):
        engine = create_async_engine(url, echo=echo, connect_args={"timeout": 30})
        _sqlite_settings(engine, synchronous)
        return engine
    return create_async_engine(url, echo=echo, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)


def _sqlite_settings(engine: AsyncEngine, synchronous: str) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None  # SQLAlchemy emits BEGIN itself (below)
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA synchronous={synchronous}")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(conn):
        immediate = conn.get_execution_options().get("sqlite_begin") == "IMMEDIATE"
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


@asynccontextmanager
async def write_transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection in a write transaction, committed on exit.  On SQLite it takes the write lock at
    BEGIN (``BEGIN IMMEDIATE``), so two writers wait for each other instead of failing with "database is locked"."""
    async with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            await conn.execution_options(sqlite_begin="IMMEDIATE")
        async with conn.begin():
            yield conn


def is_sqlite(engine_or_conn) -> bool:
    return engine_or_conn.dialect.name == "sqlite"


def insert(table, dialect_name: str):
    """The dialect's INSERT, which has ``on_conflict_do_nothing``/``on_conflict_do_update`` on both engines."""
    return (sqlite.insert if dialect_name == "sqlite" else postgresql.insert)(table)
