"""The real gateway daemon (`canopy run`) configured with `keys show`'s snippet: a command made while it is
stopped opens the simulated valve once it is back, and its result is stored -- signed for the farmer; a gap
below its retention is repaired as far as it can be and the rest recorded unrepairable at once."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa
import yaml

from centre.acting.act import act, view
from centre.acting.keys import KeyStore, gateway_snippet
from centre.store import schema
from centre.store.engine import write_transaction
from tests.centre.acting.support import FAST, ActingRun
from tests.centre.acting.test_sending import reaches, status_of
from tests.centre.support import wait_for
from tests.support import site_config

SITE, GW = "test-site", "gw-1"


def commands_section(store: KeyStore) -> dict:
    cmds = yaml.safe_load(gateway_snippet(SITE, store.keys(SITE)))["commands"]
    cmds["valves"] = [{"id": "zone-2", "zone": 2, "device": "valves", "point": "zone_2", "pulse_point": "zone_2_pulse",
                       "max_run": "10m"}]
    return cmds


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_command_for_a_stopped_gateway_runs_when_it_is_back(db_url, tmp_path, farm_sim, broker, gateway_factory):
    store = KeyStore(tmp_path / "keys")
    store.generate(SITE)
    cfg = site_config(tmp_path, sim_port=farm_sim.port, broker={"host": "127.0.0.1", "port": broker.port},
                      commands=commands_section(store))
    run = await ActingRun(db_url, broker.port, store.dir).start()
    try:
        gw = gateway_factory(cfg)
        await wait_for(lambda: _status(run, "online"), 20, what="the gateway online")
        rc, _ = gw.terminate()
        assert rc == 0
        await wait_for(lambda: _status(run, "offline"), 10, what="the gateway offline")

        cmd = await act(run.centre, FAST, user="farmer-zhang", kind="command", site=SITE, gateway=GW, target="zone-2",
                        action="irrigate", params={"duration_s": 2}, valid_for=120)
        assert "offline since" in cmd.status_text
        assert (await status_of(run.engine, cmd.id)).status == "pending"

        gateway_factory(cfg)  # back
        row = await reaches(run.engine, cmd.id, "executed", timeout=30)
        assert row.result["on_behalf_of"] == "farmer-zhang" and row.result["issuer"] == "centre-1"
        assert row.result["state"]["zone_2"] is True and row.sends == 1
        v = await view(run.centre, FAST, cmd.id)
        assert v["status"] == "executed" and v["status_text"].startswith("executed ")
    finally:
        await run.stop()


async def _status(run, status: str) -> bool:
    async with run.engine.connect() as conn:
        row = (await conn.execute(sa.select(schema.gateways.c.status).where(schema.gateways.c.gateway == GW))).first()
    return row is not None and row.status == status


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_what_the_gateway_no_longer_holds_is_unrepairable_at_once(db_url, tmp_path, farm_sim, broker, gateway_factory):
    """A gap reaching below the gateway's retention: the signed replay brings back what it still holds, and its
    ``partial`` answer makes the rest unrepairable with its size at once -- not after ``gap_give_up_after`` (6 h)."""
    store = KeyStore(tmp_path / "keys")
    store.generate(SITE)
    cfg = site_config(tmp_path, sim_port=farm_sim.port, broker={"host": "127.0.0.1", "port": broker.port},
                      commands=commands_section(store), store={"retention": {"max_bytes": 60_000}})  # ~500 readings kept
    run = await ActingRun(db_url, broker.port, store.dir).start()
    t = schema.telemetry
    try:
        gateway_factory(cfg)
        await wait_for(lambda: _top(run.engine, 1500), 90, what="1500 readings stored (the oldest pruned)")
        await run.stop()
        async with write_transaction(run.engine) as conn:  # as if the broker had dropped 1..top-10 for the centre
            top = (await conn.execute(sa.select(sa.func.max(t.c.seq)))).scalar_one()
            await conn.execute(sa.delete(t).where(t.c.seq <= top - 10))
            await conn.execute(sa.update(schema.lanes).where(schema.lanes.c.lane == "telemetry").values(floor=0))
        started = time.monotonic()
        run = await ActingRun(db_url, broker.port, store.dir).start()

        async def settled():
            async with run.engine.connect() as conn:
                rows = (await conn.execute(sa.select(schema.gaps).order_by(schema.gaps.c.first_seq))).all()
            done = rows and all(r.state in ("repaired", "unrepairable") for r in rows)
            return rows if done and any(r.state == "unrepairable" for r in rows) else None

        rows = await wait_for(settled, 60, what="the gap repaired where it can be, unrepairable where not")
        assert time.monotonic() - started < 60  # gap_give_up_after is 6 h: the answer said so
        async with run.engine.connect() as conn:
            answer = (await conn.execute(sa.select(schema.commands).where(schema.commands.c.kind == "replay"))).first()
            stored = (await conn.execute(sa.select(sa.func.count()).where(t.c.seq.between(1, top - 10)))).scalar_one()
        kept = answer.result["oldest_kept"]
        assert (answer.status, answer.reason, answer.result["missing_runs"][0]) == ("executed", "not_held", [1, kept - 1])
        assert 1 < kept < top - 10, f"retention kept {kept}.. of 1..{top - 10}: both parts of the gap are wanted"
        lost = [r for r in rows if r.state == "unrepairable"]
        assert (lost[0].first_seq, lost[0].last_seq, lost[0].size) == (1, kept - 1, kept - 1)
        assert "no longer held" in lost[0].detail and sum(r.size for r in lost) == answer.result["missing"]
        assert stored == top - 10 - sum(r.size for r in lost)  # the rest came again, each once
        assert [r.state for r in rows if r.first_seq >= kept] in (["repaired"], [])
    finally:
        await run.stop()


async def _top(engine, n: int) -> bool:
    async with engine.connect() as conn:
        return ((await conn.execute(sa.select(sa.func.max(schema.telemetry.c.seq)))).scalar() or 0) >= n
