"""Two centre instances on one PostgreSQL: a browser on A sees, within 2 s, what B ingested (LISTEN/NOTIFY)."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
import sqlalchemy as sa

from centre.hub import Change
from centre.store.engine import create_engine
from centre.store.migrate import upgrade_async
from centre.web.bridge import APPLICATION_NAME, MAX_PAYLOAD, Remote, decode, encode
from centre.web.context import StreamLimits
from tests.centre.support import CentreRun, Publisher, centre_config
from tests.centre.web.support import SMOKE, Sse, login, make_people, running_web


@pytest.fixture
async def pg_url(pg_server):
    url = pg_server.create_database()
    await upgrade_async(url)
    eng = create_engine(url)
    await make_people(eng)
    await eng.dispose()
    return url


async def _bridged(*centres) -> None:
    deadline = time.monotonic() + 10
    while not all("web.bridge" in c.components and c.components["web.bridge"].connected.is_set() for c in centres):
        assert time.monotonic() < deadline, "the bridges did not connect"
        await asyncio.sleep(0.02)


async def _duty_stream(centre, stack) -> Sse:
    centre.components["web"].streams = StreamLimits(heartbeat=0.5)
    browser = await stack.enter_async_context(httpx.AsyncClient(base_url=centre.components["web.url"], timeout=10))
    await login(browser, "duty")
    sse = Sse(await stack.enter_async_context(browser.stream("GET", "/api/stream", params={"channels": "alert"})))
    await sse.until("hello")
    return sse


async def test_a_change_published_on_b_reaches_a_browser_on_a_once(pg_url):
    from contextlib import AsyncExitStack

    async with running_web(pg_url, "a") as a, running_web(pg_url, "b") as b, AsyncExitStack() as stack:
        await _bridged(a, b)
        on_a, on_b = await _duty_stream(a, stack), await _duty_stream(b, stack)
        t0 = time.monotonic()
        b.hub.publish([Change("alert", {**SMOKE, "status": "acknowledged"})])
        got = await on_a.until("alert", timeout=2)
        assert got["alert"] == "1-smoke" and got["status"] == "acknowledged" and time.monotonic() - t0 < 2
        assert (await on_b.until("alert", timeout=2))["alert"] == "1-smoke"
        for sse in (on_a, on_b):  # once each: no echo back and forth
            assert await sse.until("heartbeat", timeout=2)
            with pytest.raises(asyncio.TimeoutError):
                await sse.until("alert", timeout=1.0)
        assert a.components["web.bridge"].counters["received"] == 1
        assert b.components["web.bridge"].counters["received"] == 0


async def test_an_alert_ingested_by_b_reaches_a_browser_on_a_within_2s(pg_url, broker):
    from contextlib import AsyncExitStack

    run = await CentreRun(centre_config(pg_url, broker.port, instance="b")).start()
    pub = Publisher(broker.port, site="sunny-court", gateway="community-gw-01")
    try:
        async with running_web(pg_url, "a") as a, running_web(pg_url, centre=run.centre) as b, \
                AsyncExitStack() as stack:
            await _bridged(a, b)
            on_a = await _duty_stream(a, stack)
            now = time.time()
            raised = {"seq": 1, "ts": now, "type": "alert.raised", "alert": "9-smoke", "rule": "smoke", "class": "fire",
                      "severity": "critical", "subject": "smoke-shed", "device": "smoke-shed",
                      "location": {"building": "3"}, "raised_at": now, "groups": ["property-office"],
                      "status": "raised", "step": 0, "next_escalation_at": now + 120, "message": "smoke", "lang": "en"}
            t0 = time.monotonic()
            pub.events("alarm", [raised], pub.topics.alert_group("property-office"))
            got = await on_a.until("alert", timeout=2)
            latency = time.monotonic() - t0
            assert (got["alert"], got["status"], got["severity"]) == ("9-smoke", "raised", "critical")
            assert latency < 2, latency
            async with run.engine.connect() as conn:
                assert (await conn.execute(sa.text("SELECT count(*) FROM alerts"))).scalar() == 1
    finally:
        pub.close()
        await run.stop()


async def test_streams_resync_after_the_link_to_postgresql_broke(pg_url):
    from contextlib import AsyncExitStack

    async with running_web(pg_url, "a") as a, AsyncExitStack() as stack:
        await _bridged(a)
        sse = await _duty_stream(a, stack)
        async with a.engine.connect() as conn:  # an operator (or a failover) ends the bridge's connection
            ended = await conn.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                               "WHERE application_name = :name"), {"name": APPLICATION_NAME})
            assert ended.all() == [(True,)]
            await conn.commit()
        got = await sse.until("resync", timeout=15)
        assert "restored" in got["reason"]
        assert a.components["web.bridge"].counters["reconnects"] >= 1


def test_big_reading_changes_are_split_and_other_big_ones_trimmed():
    readings = [{"device": f"d{i}", "point": "p" * 40, "ts": 1.0, "value": i} for i in range(400)]
    payloads = encode("me", Change("reading", {"site": "s", "gateway": "g", "readings": readings}))
    assert len(payloads) > 1 and all(len(p.encode()) <= MAX_PAYLOAD for p in payloads)
    back = [decode(p, "other") for p in payloads]
    assert sum(len(c.data["readings"]) for c in back) == 400 and all(isinstance(c.data, Remote) for c in back)
    big = encode("me", Change("alert", {**SMOKE, "message": "x" * 9000}))
    assert len(big) == 1 and decode(big[0], "other").data["partial"] is True
    assert decode(big[0], "me") is None and decode("not json", "other") is None
