"""Nothing a person sends is lost: real mosquitto, real SQLite and PostgreSQL, a gateway written with core.protocol.

An ack and a command made while the gateway is offline wait (pending, "gateway offline since
…"), go out signed for the person when its state says online, are re-sent with the same id
until it answers, and end executed, rejected with the gateway's reason, or expired -- visibly.
"""

from __future__ import annotations

import asyncio

import orjson
import pytest
import sqlalchemy as sa

from centre.acting.act import act, open_intents, view
from centre.acting.intents import IntentError
from centre.acting.keys import KeyStore
from centre.ingest.gaps import GapRef
from centre.store import schema
from tests.centre.acting.fake_gateway import FakeGateway
from tests.centre.acting.support import FAST, ActingRun
from tests.centre.support import wait_for

SITE, GW = "sunny-court", "gw-3"


@pytest.fixture
def keys(tmp_path):
    store = KeyStore(tmp_path / "keys")
    store.generate(SITE)
    return store


def trusted(store: KeyStore) -> dict[str, str]:
    return {k.issuer: k.public_key for k in store.keys(SITE)}


async def status_of(engine, cid: str):
    async with engine.connect() as conn:
        return (await conn.execute(sa.select(schema.commands).where(schema.commands.c.id == cid))).first()


async def reaches(engine, cid: str, status: str, timeout: float = 20):
    async def check():
        row = await status_of(engine, cid)
        return row if row is not None and row.status == status else None

    return await wait_for(check, timeout, what=f"{cid} {status}")


async def test_ack_and_command_made_offline_are_delivered_when_the_gateway_comes_online(db_url, broker, keys, tmp_path):
    run = await ActingRun(db_url, broker.port, keys.dir).start()
    gw = FakeGateway(broker.port, SITE, GW, trusted(keys)).start()
    gw.stop("shutdown")  # the centre has seen it online, then offline
    try:
        await wait_for(lambda: _gw_status(run.engine, "offline"), what="the gateway offline in the store")
        ack = await act(run.centre, FAST, user="vol-wang", kind="ack", site=SITE, gateway=GW, target="1-d70e",
                        action="acknowledge", params={"note": "on my way"}, valid_for=600)
        cmd = await act(run.centre, FAST, user="farmer-zhang", kind="command", site=SITE, gateway=GW, target="zone-2",
                        action="irrigate", params={"duration_s": 1200}, valid_for=600)
        assert cmd.intent.startswith("irrigate zone-2 for 20 min, if it can start before ")
        assert ack.status == "pending" and f"gateway {GW} offline since " in ack.status_text and "(shutdown)" in ack.status_text
        await asyncio.sleep(1.0)  # several sender rounds: nothing goes to an offline gateway
        assert (await status_of(run.engine, cmd.id)).status == "pending"
        waiting = await open_intents(run.centre, FAST, site=SITE)
        assert {w["id"] for w in waiting} == {ack.id, cmd.id}
        assert all(w["status_text"].startswith("waiting: gateway gw-3 offline since") for w in waiting)

        gw = FakeGateway(broker.port, SITE, GW, trusted(keys)).start()  # back: online after its SUBACKs
        done_cmd = await reaches(run.engine, cmd.id, "executed")
        done_ack = await reaches(run.engine, ack.id, "executed")
        by_id = {e.id: e for e in gw.received}
        assert by_id[cmd.id].on_behalf_of == "farmer-zhang" and by_id[cmd.id].issuer == "centre-1"
        assert by_id[cmd.id].params == {"duration_s": 1200} and by_id[cmd.id].v == 2
        assert by_id[ack.id].on_behalf_of == "vol-wang" and by_id[ack.id].kind == "ack"
        # signed at send time: issued when sent, not when the person acted
        assert by_id[cmd.id].issued_at >= done_cmd.created_at + 1.0
        assert by_id[cmd.id].expires_at == pytest.approx(done_cmd.valid_until, abs=0.01)
        assert done_cmd.sends == 1 and done_cmd.envelope["signature"] and done_ack.result["by"] == "vol-wang"
        v = await view(run.centre, FAST, cmd.id)
        assert v["status"] == "executed" and v["on_behalf_of"] == "farmer-zhang"
        async with run.engine.connect() as conn:
            audit = list(await conn.execute(sa.select(schema.audit).where(schema.audit.c.actor == "farmer-zhang")))
        assert audit and audit[0].action == "command" and audit[0].detail["id"] == cmd.id
        assert await open_intents(run.centre, FAST, site=SITE) == []
    finally:
        gw.stop()
        await run.stop()


async def test_unanswered_is_resent_with_the_same_id_then_rejected_with_the_reason(db_url, broker, keys):
    def answer(env):
        return {"status": "rejected", "reason": "interlock_rain", "detail": "it is raining (weather.rain_detected)"}

    run = await ActingRun(db_url, broker.port, keys.dir).start()
    gw = FakeGateway(broker.port, SITE, GW, trusted(keys), answer=answer, drop=1).start()  # the first copy is lost
    try:
        await wait_for(lambda: _gw_status(run.engine, "online"), what="the gateway online")
        cmd = await act(run.centre, FAST, user="farmer-zhang", kind="command", site=SITE, gateway=GW, target="zone-2",
                        action="irrigate", params={"duration_s": 600}, valid_for=120)
        row = await reaches(run.engine, cmd.id, "rejected")
        assert row.reason == "interlock_rain" and row.sends >= 2
        assert [e.id for e in gw.received] == [cmd.id] and orjson.loads(gw.dropped[0])["id"] == cmd.id
        v = await view(run.centre, FAST, cmd.id)
        assert v["status_text"] == "rejected by the gateway: interlock_rain (it is raining (weather.rain_detected))"
    finally:
        gw.stop()
        await run.stop()


async def test_an_intent_that_cannot_reach_its_gateway_in_time_expires_visibly(db_url, broker, keys):
    run = await ActingRun(db_url, broker.port, keys.dir).start()
    gw = FakeGateway(broker.port, SITE, GW, trusted(keys)).start()
    gw.stop("connection lost")
    try:
        await wait_for(lambda: _gw_status(run.engine, "offline"), what="the gateway offline")
        cmd = await act(run.centre, FAST, user="duty-li", kind="command", site=SITE, gateway=GW, target="door-502",
                        action="unlock", valid_for=2)
        row = await reaches(run.engine, cmd.id, "expired", timeout=10)
        assert row.detail.startswith(f"never sent: gateway {GW} offline since ") and "(connection lost)" in row.detail
        assert row.sends == 0 and row.envelope is None
        v = await view(run.centre, FAST, cmd.id)
        assert v["status_text"].startswith("expired at ") and "never sent" in v["status_text"]
        gw = FakeGateway(broker.port, SITE, GW, trusted(keys)).start()
        await asyncio.sleep(1.0)
        assert gw.received == [] and (await status_of(run.engine, cmd.id)).status == "expired"
    finally:
        gw.stop()
        await run.stop()


async def test_what_no_gateway_could_take_is_refused_when_the_person_acts(db_url, broker, keys):
    run = await ActingRun(db_url, broker.port, keys.dir).start()
    try:
        with pytest.raises(IntentError, match="action must be one of"):
            await act(run.centre, FAST, user="u1", kind="command", site=SITE, gateway=GW, target="zone-2", action="flood")
        with pytest.raises(IntentError, match="too_deep"):
            deep: dict = {}
            for _ in range(6):
                deep = {"x": deep}
            await act(run.centre, FAST, user="u1", kind="command", site=SITE, gateway=GW, target="zone-2",
                      action="irrigate", params={"duration_s": 60, "deep": deep})
        with pytest.raises(IntentError, match="validity"):
            await act(run.centre, FAST, user="u1", kind="ack", site=SITE, gateway=GW, target="1-a", action="acknowledge",
                      valid_for=-5)
        async with run.engine.connect() as conn:
            assert (await conn.execute(sa.select(sa.func.count()).select_from(schema.commands))).scalar_one() == 0
    finally:
        await run.stop()


async def test_gap_repair_sends_a_signed_replay_request(db_url, broker, keys):
    run = await ActingRun(db_url, broker.port, keys.dir).start()
    gw = FakeGateway(broker.port, SITE, GW, trusted(keys)).start()
    try:
        await wait_for(lambda: _gw_status(run.engine, "online"), what="the gateway online")
        gap = GapRef(7, SITE, GW, "0123456789abcdef", "event", 15, 20)
        assert await run.centre.request_replay(gap) is True
        assert await run.centre.request_replay(gap) is False  # one request per gap per replay_interval
        await wait_for(lambda: _received(gw, "replay"), what="the replay request at the gateway")
        (env,) = [e for e in gw.received if e.kind == "replay"]
        assert env.action == "records" and env.target == "*" and env.on_behalf_of is None
        assert env.params == {"lane": "event", "epoch": "0123456789abcdef", "from_seq": 15, "to_seq": 20}
        row = await reaches(run.engine, env.id, "executed")  # the gateway's replay.result "done"
        assert row.kind == "replay" and row.sends == 1 and "gap 7" in row.intent
    finally:
        gw.stop()
        await run.stop()


async def _received(gw, kind: str):
    return [e for e in gw.received if e.kind == kind]


async def _gw_status(engine, status: str) -> bool:
    async with engine.connect() as conn:
        row = (await conn.execute(sa.select(schema.gateways.c.status).where(schema.gateways.c.site == SITE,
                                                                            schema.gateways.c.gateway == GW))).first()
    return row is not None and row.status == status

