"""The live stream through a real uvicorn: scoped alert changes, heartbeats, the end of a session, the bounds."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from centre.hub import Change, Hub
from centre.store.engine import create_engine
from centre.store.migrate import upgrade_async
from centre.web.context import StreamLimits
from centre.web.stream import Feed
from tests.centre.web.support import FARM, SMOKE, VALVE, Sse, login, make_people, running_web


@pytest.fixture
async def sqlite_url(tmp_path):
    url = f"sqlite:///{tmp_path / 'centre.sqlite'}"
    await upgrade_async(url)
    eng = create_engine(url)
    await make_people(eng)
    await eng.dispose()
    return url


@pytest.fixture
async def centre(sqlite_url):
    async with running_web(sqlite_url) as c:
        c.components["web"].streams = StreamLimits(heartbeat=0.3, per_user=2, total=50)
        yield c


@pytest.fixture
async def browsers(centre):
    made: list[httpx.AsyncClient] = []

    async def browser(name: str) -> httpx.AsyncClient:
        made.append(httpx.AsyncClient(base_url=centre.components["web.url"], timeout=10))
        await login(made[-1], name)
        return made[-1]
    yield browser
    for c in made:
        await c.aclose()


async def test_an_alert_change_reaches_the_streams_in_scope_only(centre, browsers):
    duty, wang, zhang = await browsers("duty"), await browsers("wang"), await browsers("zhang")
    async with duty.stream("GET", "/api/stream") as d, wang.stream("GET", "/api/stream") as w, \
            zhang.stream("GET", "/api/stream", params={"channels": "alert"}) as z:
        streams = [Sse(d), Sse(w), Sse(z)]
        hellos = [await s.until("hello") for s in streams]
        assert hellos[2] == {"user": "zhang", "channels": ["alert"], "heartbeat": 0.3}
        acked = {**SMOKE, "status": "acknowledged", "acked_by": "wang"}
        centre.hub.publish([Change("alert", acked), Change("alert", VALVE)])
        for s in streams[:2]:
            got = await s.until("alert", timeout=2)
            assert (got["alert"], got["status"], got["acked_by"]) == ("1-smoke", "acknowledged", "wang")
        assert (await streams[2].until("alert", timeout=2))["alert"] == "3-valve"  # never the elderly one
        assert (await streams[1].until("heartbeat", timeout=2))["ts"] > 0


async def test_readings_and_gateways_by_site(centre, browsers):
    duty, zhang = await browsers("duty"), await browsers("zhang")
    async with duty.stream("GET", "/api/stream") as d, zhang.stream("GET", "/api/stream") as z:
        dsse, zsse = Sse(d), Sse(z)
        await dsse.until("hello")
        await zsse.until("hello")
        centre.hub.publish([Change("reading", {"site": FARM, "gateway": "farm-gw-01", "readings": [{"point": "moisture"}]}),
                            Change("gateway", {"site": FARM, "gateway": "farm-gw-01", "status": "offline"})])
        assert (await zsse.until("gateway", timeout=2))["status"] == "offline"  # served before readings
        assert (await zsse.until("reading", timeout=2))["site"] == FARM
        centre.hub.publish([Change("gateway", {"site": "sunny-court", "gateway": "community-gw-01", "status": "offline"})])
        assert (await dsse.until("gateway", timeout=2))["site"] == "sunny-court"  # not the farm's


async def test_stream_ends_when_the_session_ends(centre, browsers):
    wang = await browsers("wang")
    async with wang.stream("GET", "/api/stream") as w:
        sse = Sse(w)
        await sse.until("hello")
        assert (await wang.post("/api/logout")).status_code == 200
        ended = await sse.until("session_ended", timeout=3)
        assert "log in again" in ended["detail"]
        with pytest.raises(EOFError):
            await sse.next(3)


async def test_streams_per_user_are_bounded(centre, browsers):
    duty = await browsers("duty")
    async with duty.stream("GET", "/api/stream") as a, duty.stream("GET", "/api/stream") as b:
        open_ = [Sse(a), Sse(b)]  # kept: a dropped reader closes its stream
        for sse in open_:
            await sse.until("hello")
        r = await duty.get("/api/stream")
        assert r.status_code == 429 and "2 live streams open already" in r.json()["detail"]
    assert (await duty.get("/metrics")).status_code == 200


async def test_stream_needs_a_login(centre):
    async with httpx.AsyncClient(base_url=centre.components["web.url"]) as anon:
        r = await anon.get("/api/stream")
        assert r.status_code == 401 and r.json()["error"] == "not_logged_in"


async def test_feed_serves_alerts_before_readings_and_counts_what_it_dropped():
    hub = Hub(max_queue=3)
    feed = Feed(hub, {"alert", "reading"})
    hub.publish([Change("reading", {"n": i}) for i in range(10)] + [Change("alert", {"a": 1})])
    assert (await feed.next(0.1)).channel == "alert"
    assert [(await feed.next(0.1)).data["n"] for _ in range(3)] == [7, 8, 9]
    assert feed.dropped == 7 and await feed.next(0.05) is None
    feed.close()
    assert not hub._subs


async def test_a_waiting_feed_wakes_for_the_next_change():
    hub = Hub()
    feed = Feed(hub, {"alert"})
    waiting = asyncio.create_task(feed.next(5))
    await asyncio.sleep(0.05)
    hub.publish([Change("alert", {"a": 2})])
    assert (await asyncio.wait_for(waiting, 1)).data == {"a": 2}
    feed.close()
