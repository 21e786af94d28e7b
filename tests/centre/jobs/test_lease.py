"""The leader lease on a real PostgreSQL: one holder, and it moves within 10 s when the holder's connection dies."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import asyncpg
import pytest

from centre.jobs.config import LeaseConfig
from centre.jobs.lease import AdvisoryLease, SoleLease, lock_key, make_lease, plain_dsn
from centre.jobs.once import claim
from centre.jobs.runner import Job, LeaderJobs
from tests.centre.support import centre_config


async def _until(cond, timeout: float, what: str) -> float:
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < timeout, f"timed out after {timeout}s waiting for {what}"
        await asyncio.sleep(0.05)
    return time.monotonic() - t0


async def test_sqlite_instance_is_always_the_leader(tmp_path):
    lease = make_lease(centre_config(f"sqlite:///{tmp_path}/c.sqlite", 1883), LeaseConfig())
    assert isinstance(lease, SoleLease) and lease.is_leader("gaps")


async def test_one_leader_and_it_moves_when_its_connection_dies(pg_server):
    url = pg_server.create_database()
    a, b = AdvisoryLease(url, LeaseConfig(), instance="a"), AdvisoryLease(url, LeaseConfig(), instance="b")
    ta = asyncio.create_task(a.run())
    await _until(lambda: a.held, 10, "a to take the lease")
    tb = asyncio.create_task(b.run())
    try:
        await asyncio.sleep(2.5)  # b has tried at least once
        assert a.held and not b.held
        pid = a.conn.get_server_pid()
        admin = await asyncpg.connect(plain_dsn(url))
        try:
            await admin.fetchval("SELECT pg_terminate_backend($1)", pid)  # a's lease connection dies
        finally:
            await admin.close()
        moved = await _until(lambda: b.held, 10, "b to take the lease over")
        await _until(lambda: not a.held, 10, "a to know it lost the lease")
        assert moved < 10
        await asyncio.sleep(2.5)
        assert b.held and not a.held, "a took the lease back while b holds it"
    finally:
        for t in (ta, tb):
            t.cancel()
        await asyncio.gather(ta, tb, return_exceptions=True)


HOLDER = """
import asyncio, sys, asyncpg
async def main():
    conn = await asyncpg.connect(sys.argv[1])
    assert await conn.fetchval("SELECT pg_try_advisory_lock($1)", int(sys.argv[2]))
    print("held", flush=True)
    await asyncio.sleep(3600)
asyncio.run(main())
"""


async def test_leader_killed_with_sigkill_is_replaced_within_10s(pg_server):
    url = pg_server.create_database()
    cfg = LeaseConfig()
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, plain_dsn(url), str(lock_key(cfg.name))],
                              stdout=subprocess.PIPE, text=True)
    lease = AdvisoryLease(url, cfg, instance="b")
    task = None
    try:
        assert holder.stdout.readline().strip() == "held"
        task = asyncio.create_task(lease.run())
        await asyncio.sleep(2.5)
        assert not lease.held
        holder.kill()
        holder.wait(5)
        moved = await _until(lambda: lease.held, 10, "the lease to move after kill -9")
        assert moved < 10
    finally:
        holder.kill()
        holder.wait(5)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def test_jobs_run_only_while_the_lease_is_held():
    lease = SoleLease()
    lease._set(False)
    ran, stopped = asyncio.Event(), asyncio.Event()
    crashes = {"n": 0}

    async def job():
        ran.set()
        try:
            await asyncio.Event().wait()
        finally:
            stopped.set()

    async def flaky():
        crashes["n"] += 1
        if crashes["n"] == 1:
            raise RuntimeError("a bug")
        await asyncio.Event().wait()

    runner = LeaderJobs(lease, [Job("steady", job), Job("flaky", flaky)], restart_delay=0.05)
    task = asyncio.create_task(runner.run())
    try:
        await asyncio.sleep(0.1)
        assert not ran.is_set(), "a job ran without the lease"
        lease._set(True)
        await asyncio.wait_for(ran.wait(), 2)
        await _until(lambda: crashes["n"] == 2, 2, "the crashed job to be started again")
        assert runner.crashes == {"flaky": 1}
        lease._set(False)
        await asyncio.wait_for(stopped.wait(), 2)
        assert not runner.running
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.mark.parametrize("instances", [2])
async def test_a_slot_is_claimed_once(engine, instances):
    results = await asyncio.gather(*(claim(engine, "retention", "2026-12-06", instance=f"c{i}", now=1.0)
                                     for i in range(instances)))
    assert sorted(results) == [False, True]
    assert await claim(engine, "retention", "2026-12-07", instance="c1", now=2.0)
