"""Two real centre processes on one PostgreSQL: kill -9 the leader, the other takes the lease within 10 s and runs
its jobs -- here, sending a command a person made after the leader died."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import yaml

from centre.acting.act import act
from centre.acting.config import ActingConfig
from centre.acting.keys import KeyStore
from centre.hub import Hub
from centre.store.engine import create_engine
from centre.store.migrate import upgrade_async
from tests.centre.acting.fake_gateway import FakeGateway
from tests.centre.acting.test_sending import status_of
from tests.centre.support import CentreProcess, wait_for
from tests.support import free_port

SITE, GW = "sunny-court", "gw-3"


def centre_process(tmp_path, url: str, port: int, instance: str) -> CentreProcess:
    proc = CentreProcess(tmp_path, url, port, instance)
    doc = yaml.safe_load(proc.file.read_text())
    doc["http"] = {"host": "127.0.0.1", "port": free_port()}  # two instances on one host
    proc.file.write_text(yaml.safe_dump(doc))
    return proc


async def leads(proc: CentreProcess, instance: str) -> bool:
    return f"leader lease taken by {instance}".encode() in proc.log.read_bytes()


async def _got(gw, cid: str) -> bool:
    return [e.id for e in gw.received] == [cid]


async def test_the_leader_dies_and_its_jobs_move_within_10s(pg_server, broker, tmp_path):
    url = pg_server.create_database()
    await upgrade_async(url)
    store = KeyStore(tmp_path / "keys")  # keys_dir "keys", next to the centre.yaml files
    store.generate(SITE)
    c1 = centre_process(tmp_path, url, broker.port, "c1").start()
    c2 = None
    engine = create_engine(url)
    gw = None
    try:
        await c1.wait_connected()
        await wait_for(lambda: leads(c1, "c1"), 15, what="c1 to lead")
        c2 = centre_process(tmp_path, url, broker.port, "c2").start()
        await c2.wait_connected()
        gw = FakeGateway(broker.port, SITE, GW, {k.issuer: k.public_key for k in store.keys(SITE)}).start()
        await asyncio.sleep(2.5)
        assert not await leads(c2, "c2")

        c1.kill9()
        t0 = time.monotonic()
        await wait_for(lambda: leads(c2, "c2"), 15, what="c2 to take the lease")
        assert time.monotonic() - t0 < 10

        centre = SimpleNamespace(engine=engine, hub=Hub())  # a person acting through any instance's API
        cmd = await act(centre, ActingConfig(), user="farmer-zhang", kind="command", site=SITE, gateway=GW,
                        target="zone-2", action="irrigate", params={"duration_s": 60}, valid_for=120)
        async def sent():  # by c2; the gateway's answer may sit in dead c1's share of the subscription
            row = await status_of(engine, cmd.id)
            return row if row.status in ("sent", "executed") else None

        assert (await wait_for(sent, 20, what="the command sent")).sends == 1
        await wait_for(lambda: _got(gw, cmd.id), 10, what="the command at the gateway")
    finally:
        if gw is not None:
            gw.stop()
        for p in (c1, c2):
            if p is not None:
                p.stop()
        await engine.dispose()
