"""Telemetry retention: raw readings for ``retention.raw_days``, the hourly rollup for ``retention.hourly_days``.

A year of 1,000 points at one a minute is 525 million raw rows but 8.8 million hourly ones,
so the raw table is pruned and the rollup stays.  Deletes go an hour of data at a time,
each in its own short transaction, so pruning a backlog never holds the store for long.
Only the leader prunes (``centre.is_leader("retention")``).
"""

from __future__ import annotations

import asyncio
import logging
import time

import sqlalchemy as sa

from centre.store import schema
from centre.store.engine import write_transaction

log = logging.getLogger("centre.retention")

DAY = 86400.0
STEP = 3600.0


async def prune(engine, raw_days: float, hourly_days: float, now: float) -> dict[str, int]:
    """Delete what is older than the retention; returns rows deleted per table."""
    t, h = schema.telemetry, schema.telemetry_hourly
    out = {"telemetry": 0, "telemetry_hourly": 0}
    cut = now - raw_days * DAY
    async with engine.connect() as conn:
        oldest = (await conn.execute(sa.select(sa.func.min(t.c.ts)))).scalar()
    while oldest is not None and oldest < cut:
        upto = min(cut, oldest + STEP)
        async with write_transaction(engine) as conn:
            out["telemetry"] += (await conn.execute(sa.delete(t).where(t.c.ts < upto))).rowcount
        oldest = upto
    async with write_transaction(engine) as conn:
        res = await conn.execute(sa.delete(h).where(h.c.hour < now - hourly_days * DAY))
        out["telemetry_hourly"] = res.rowcount
    return out


async def run_retention(centre, interval: float = 3600.0, clock=time.time) -> None:
    r = centre.cfg.retention
    while True:
        if centre.is_leader("retention"):
            try:
                gone = await prune(centre.engine, r.raw_days, r.hourly_days, clock())
                if any(gone.values()):
                    log.info("retention: deleted %(telemetry)d raw readings, %(telemetry_hourly)d hourly rows", gone)
            except (sa.exc.SQLAlchemyError, OSError) as exc:
                log.warning("retention failed: %s", exc)
        await asyncio.sleep(interval)
