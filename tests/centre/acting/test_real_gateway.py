"""The real gateway daemon (`canopy run`) configured with `keys show`'s snippet: a command made while it is
stopped opens the simulated valve once it is back, and its result is stored -- signed for the farmer."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
import yaml

from centre.acting.act import act, view
from centre.acting.keys import KeyStore, gateway_snippet
from centre.store import schema
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
