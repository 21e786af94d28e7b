"""Insert many rows keyed on a record key and learn which were new: the fast path for telemetry.

SQLAlchemy's multi-row ``INSERT … ON CONFLICT DO NOTHING RETURNING`` costs about three times
what the drivers' own bulk paths do (bench/centre_ingest.py), and telemetry is where the
volume is, so each engine gets its driver's way, inside the caller's transaction:

- PostgreSQL (asyncpg): ``COPY`` into a temporary table, then one
  ``INSERT … SELECT … ON CONFLICT DO NOTHING RETURNING`` the key -- exact under
  concurrent instances, since PostgreSQL itself decides which insert won.
- SQLite (aiosqlite): the transaction holds the write lock (``BEGIN IMMEDIATE``), so the
  keys already stored in the batch's seq range are read first, and the rest inserted with
  ``executemany`` -- exact, because nobody else can write in between.

Rows must not contain JSON columns (the COPY path sends them as plain values).
"""

from __future__ import annotations

from itertools import groupby
from operator import itemgetter

import sqlalchemy as sa

GROUP = ("site", "gateway", "epoch")  # the key's prefix: one seq range per group


async def insert_new(conn, table: sa.Table, rows: list[dict], key: tuple[str, ...]) -> list[dict]:
    """Insert ``rows`` (sorted by ``key``, unique) where their key is not stored; returns the new ones."""
    if not rows:
        return []
    raw = (await conn.get_raw_connection()).driver_connection
    cols = [c.name for c in table.columns if c.name in rows[0]]
    if conn.dialect.name == "postgresql":
        if not raw.is_in_transaction():
            # SQLAlchemy's asyncpg adapter opens its transaction at the first statement it runs itself;
            # without one, COPY would commit on its own (and ON COMMIT DELETE ROWS empty the table)
            await conn.execute(sa.text("SELECT 1"))
            assert raw.is_in_transaction(), "asyncpg connection outside the SQLAlchemy transaction"
        new = await _pg(raw, table.name, cols, rows, key)
    else:
        new = await _sqlite(raw, table.name, cols, rows, key)
    get = itemgetter(*key)
    return [r for r in rows if get(r) in new]


async def _pg(raw, name: str, cols: list[str], rows: list[dict], key: tuple[str, ...]) -> set[tuple]:
    tmp = f"bulk_{name}"
    collist = ", ".join(f'"{c}"' for c in cols)
    await raw.execute(f'CREATE TEMP TABLE IF NOT EXISTS {tmp} (LIKE "{name}" INCLUDING DEFAULTS) ON COMMIT DELETE ROWS')
    await raw.copy_records_to_table(tmp, records=list(map(itemgetter(*cols), rows)), columns=cols)
    returned = await raw.fetch(f'INSERT INTO "{name}" ({collist}) SELECT {collist} FROM {tmp} ON CONFLICT DO NOTHING '
                               f'RETURNING {", ".join(key)}')
    return {tuple(r) for r in returned}


async def _sqlite(raw, name: str, cols: list[str], rows: list[dict], key: tuple[str, ...]) -> set[tuple]:
    seq = key[-1]
    prefix = key[:-1]
    where = " AND ".join(f'"{k}" = ?' for k in prefix)
    stored: set[tuple] = set()
    for group, members in groupby(rows, key=itemgetter(*prefix)):
        seqs = [r[seq] for r in members]
        async with raw.execute(f'SELECT "{seq}" FROM "{name}" WHERE {where} AND "{seq}" BETWEEN ? AND ?',
                               (*group, min(seqs), max(seqs))) as cur:
            stored.update((*group, s) for (s,) in await cur.fetchall())
    get = itemgetter(*key)
    fresh = [r for r in rows if get(r) not in stored]
    if fresh:
        marks = ", ".join("?" * len(cols))
        await raw.executemany(f'INSERT INTO "{name}" ({", ".join(cols)}) VALUES ({marks})',
                              list(map(itemgetter(*cols), fresh)))
    return set(map(get, fresh))
