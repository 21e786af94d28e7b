"""The real gateway daemon (``canopy run``) for the console's browser tests: a community site on the simulator
whose config trusts the centre's issuer key for acks (``keys show``'s snippet), a centre with people but no
seeded gateways (the daemon is the only one), and the centre's acting component (the sender that signs a
person's ack and sends it once the gateway is back) in the test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path

import yaml

from centre.acting.keys import KeyStore, gateway_snippet
from centre.acting.service import Acting, build
from centre.jobs.lease import SoleLease
from centre.routing.config import RoutingConfig
from centre.routing.service import build_routing
from centre.store.migrate import upgrade_async
from tests.centre.acting.support import FAST
from tests.centre.console.support import COMMUNITY, ConsoleCentre, make_people
from tests.gateway.alerts.support import GROUPS, SMOKE, chain, write_site
from tests.support import GatewayProcess

GW = "gw-3"  # tests.gateway.alerts.support.site_data names the community gateway so
KEEPALIVE = 5  # the gateway's broker keepalive, the smallest its config allows (gateway/config/broker.py)


async def bare_centre(tmp_path: Path, broker_port: int) -> ConsoleCentre:
    """A real centre (web + ingest) whose store knows the people only: every gateway it shows is the daemon."""
    url = f"sqlite:///{tmp_path / 'centre.sqlite'}"
    await upgrade_async(url)
    c = ConsoleCentre(url, broker_port)
    await make_people(c.engine)
    return await c.start()


def centre_keys(tmp_path: Path) -> KeyStore:
    keys = KeyStore(tmp_path / "keys")
    keys.generate(COMMUNITY)
    return keys


def community_site(tmp_path: Path, *, sim_port: int, broker_port: int, keys: KeyStore) -> Path:
    """The smoke detectors of the community simulator, a fire chain that escalates only after 2 min, and the
    centre's issuers exactly as ``canopy-centre keys show`` prints them (nobody else may ack)."""
    issuers = yaml.safe_load(gateway_snippet(COMMUNITY, keys.keys(COMMUNITY)))["commands"]["issuers"]
    rules = {"groups": GROUPS, "classes": {"fire": chain(0, 120, 300)}, "rules": [SMOKE]}
    return write_site(tmp_path, rules, sim_port=sim_port, issuers=issuers,
                      broker={"host": "127.0.0.1", "port": broker_port, "keepalive": KEEPALIVE})


@contextlib.asynccontextmanager
async def acting(centre: ConsoleCentre, keys: KeyStore):
    """The centre's acting component (sender with the site's key, fast rounds) running while in the block."""
    centre.centre.cfg = centre.centre.cfg.model_copy(update={"keys_dir": str(keys.dir)})
    a: Acting = build(centre.centre, cfg=FAST, lease=SoleLease(), routing=build_routing(centre.centre, RoutingConfig()))
    task = asyncio.create_task(a.leader.run())
    try:
        yield a
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await a.routing.close()
        await a.publisher.close()


async def go_away(gw: GatewayProcess, how: str) -> None:
    """``stop``: SIGTERM, a clean exit that says "offline" itself.  ``kill9``: nothing said; the kernel closes
    the dead process's socket, so the broker publishes the will at once.  ``freeze``: SIGSTOP, a gateway that
    vanished with its connection left open (power cut, cable pulled): only the broker's keepalive timeout
    (1.5 x keepalive) brings the will.  Waited for in a thread: the centre in this loop keeps hearing the broker."""
    if how == "stop":
        rc, _ = await asyncio.to_thread(gw.terminate)
        assert rc == 0, gw.output()[-2000:]
    elif how == "kill9":
        await asyncio.to_thread(gw.kill9)
    else:
        gw.proc.send_signal(signal.SIGSTOP)


async def gone_for_good(gw: GatewayProcess) -> None:
    """Before the restart: a frozen daemon is killed (it would wake up holding the site's client id)."""
    if gw.alive():
        await asyncio.to_thread(gw.kill9)
