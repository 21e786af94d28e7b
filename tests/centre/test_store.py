"""The store: migrations make the same schema on both engines, and the key drops duplicates."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.script import ScriptDirectory

from centre.store import schema
from centre.store.engine import insert, write_transaction
from centre.store.migrate import alembic_config, current


async def test_migrations_create_every_table(engine):
    async with engine.connect() as conn:
        names = set(await conn.run_sync(lambda c: sa.inspect(c).get_table_names()))
    assert set(schema.metadata.tables) <= names
    heads = ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads()
    assert await current(engine) == sorted(heads)  # every module's branch is applied


async def test_record_key_drops_duplicates(engine):
    row = {"site": "s", "gateway": "g", "epoch": "0123456789abcdef", "lane": "event", "seq": 1, "ts": 1.5,
           "type": "device.status", "topic": "event", "body": {"seq": 1, "type": "device.status"}, "received_at": 2.0}
    for _ in range(2):
        async with write_transaction(engine) as conn:
            stmt = insert(schema.records, conn.dialect.name).on_conflict_do_nothing().returning(schema.records.c.seq)
            await conn.execute(stmt, [row])
    async with engine.connect() as conn:
        assert (await conn.execute(sa.select(sa.func.count()).select_from(schema.records))).scalar() == 1
        body = (await conn.execute(sa.select(schema.records.c.body))).scalar()
    assert body == {"seq": 1, "type": "device.status"}


async def test_retention_keeps_the_rollup(engine):
    from centre.ingest.retention import DAY, prune

    now = 1_795_348_800.0
    rows = [{"site": "s", "gateway": "g", "epoch": "e", "seq": i, "ts": now - i * 3 * 3600, "device": "d", "point": "p",
             "value": 1.0, "received_at": now} for i in range(1, 40)]  # 3 h apart: ~5 days
    hourly = [{"site": "s", "gateway": "g", "device": "d", "point": "p", "hour": int(now - d * DAY), "count": 1, "total": 1.0,
               "min": 1.0, "max": 1.0} for d in (1, 10, 400)]
    async with write_transaction(engine) as conn:
        await conn.execute(sa.insert(schema.telemetry), rows)
        await conn.execute(sa.insert(schema.telemetry_hourly), hourly)
    gone = await prune(engine, raw_days=2, hourly_days=365, now=now)
    assert gone == {"telemetry": 39 - 16, "telemetry_hourly": 1}  # kept: ts >= now - 48 h, i.e. i <= 16
    async with engine.connect() as conn:
        assert (await conn.execute(sa.select(sa.func.min(schema.telemetry.c.ts)))).scalar() >= now - 2 * DAY
