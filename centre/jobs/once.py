"""Once per slot across every instance: the first to claim ``(job, slot)`` runs it (migration ``acting_0001``).

The lease keeps *continuous* jobs on one instance; a *periodic* task (the nightly retention,
a daily summary) must also run exactly once per period even across a change of leader
half-way.  Claiming is one ``INSERT … ON CONFLICT DO NOTHING``: whoever inserts the row runs
the slot, everyone else skips it.
"""

from __future__ import annotations

import sqlalchemy as sa

from centre.store.engine import insert, write_transaction
from centre.store.schema import Ts, metadata

job_runs = sa.Table(
    "job_runs", metadata,
    sa.Column("job", sa.String(64), primary_key=True),
    sa.Column("slot", sa.String(64), primary_key=True),  # e.g. the day "2026-12-06" or the hour's epoch seconds
    sa.Column("instance", sa.String(64), nullable=False),
    sa.Column("claimed_at", Ts, nullable=False),
)


async def claim(engine, job: str, slot: str, *, instance: str, now: float) -> bool:
    """True for the one caller that claims ``(job, slot)`` first; False for every other."""
    async with write_transaction(engine) as conn:
        stmt = insert(job_runs, conn.dialect.name).values(job=job, slot=slot, instance=instance, claimed_at=now)
        res = await conn.execute(stmt.on_conflict_do_nothing().returning(job_runs.c.job))
        return res.first() is not None
