"""kill -9 of the centre mid-stream loses nothing: the broker keeps what was not acknowledged after commit."""

from __future__ import annotations

import asyncio
import time

import sqlalchemy as sa

from centre.store import schema
from centre.store.engine import create_engine
from tests.centre.support import CentreProcess, CentreRun, Publisher, centre_config, count, reading, wait_for

T0 = 1_795_348_800.0
N = 20_000


async def test_kill9_mid_stream_loses_nothing(db_url, broker, tmp_path):
    centre = CentreProcess(tmp_path, db_url, broker.port).start()
    engine = create_engine(db_url)
    pub = Publisher(broker.port)
    try:
        await centre.wait_connected()

        def stream():  # ~5,000 readings/s, as a gateway fleet would
            for first in range(1, N + 1, 100):
                pub.telemetry([reading(s, T0 + s) for s in range(first, first + 100)])
                time.sleep(0.02)
            pub.flush(60)

        streaming = asyncio.create_task(asyncio.to_thread(stream))

        async def some():
            return await count(engine, schema.telemetry) >= 3000

        await wait_for(some, what="3000 readings stored")
        centre.kill9()  # mid-stream: what it received and had not committed dies with it
        killed_at = await count(engine, schema.telemetry)
        await asyncio.sleep(0.3)
        centre.start()
        await streaming
        assert killed_at < N, "the stream was over before the kill"
        await centre.wait_connected()

        async def all_in():
            return await count(engine, schema.telemetry) >= N

        await wait_for(all_in, timeout=60, what=f"{N} readings after kill -9 and restart")
        async with engine.connect() as conn:
            n, lo, hi = (await conn.execute(sa.select(sa.func.count(), sa.func.min(schema.telemetry.c.seq),
                                                      sa.func.max(schema.telemetry.c.seq)))).one()
            total = (await conn.execute(sa.select(sa.func.sum(schema.telemetry_hourly.c.count)))).scalar_one()
        assert (n, lo, hi) == (N, 1, N)
        assert total == N  # the rollup counted each reading once, across the crash
        assert centre.stop() == 0
    finally:
        pub.close()
        centre.stop()
        await engine.dispose()


async def test_nothing_acknowledged_before_commit(db_url, broker):
    """Messages received while the store cannot commit are not acknowledged: after a crash the broker sends them again."""
    pub = Publisher(broker.port)
    run = await CentreRun(centre_config(db_url, broker.port)).start()
    blocker = create_engine(db_url)
    try:
        async with blocker.connect() as conn:
            if conn.dialect.name == "sqlite":
                await conn.execution_options(sqlite_begin="IMMEDIATE")
                await conn.begin()  # BEGIN IMMEDIATE: holds the write lock
            else:
                await conn.begin()
                await conn.execute(sa.text("LOCK TABLE telemetry IN ACCESS EXCLUSIVE MODE"))
            for first in range(1, 501, 50):
                pub.telemetry([reading(s, T0 + s) for s in range(first, first + 50)])
            pub.flush()

            async def received():
                return run.ingest.counters["messages"] >= 1

            await wait_for(received, what="messages received")
            assert run.ingest.counters["acked"] == 0
            await run.crash()
            await conn.rollback()
        await run.engine.dispose()
        run = await CentreRun(centre_config(db_url, broker.port)).start()

        async def all_in():
            return await count(run.engine, schema.telemetry) == 500

        await wait_for(all_in, what="all 500 readings from the broker's session")
    finally:
        pub.close()
        await run.stop()
        await blocker.dispose()
