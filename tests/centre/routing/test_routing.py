"""Routing to people end to end: real mosquitto, SQLite and PostgreSQL, a local webhook receiver and aiosmtpd.

- a gateway silent past its limit raises "site is blind", which reaches the webhook (HMAC
  checked by the receiver, retried after a 500) and the e-mail inbox within 5 s of the limit;
- alert lifecycle records ingested from a gateway page each group once, with its members.
"""

from __future__ import annotations

import asyncio
import time

import sqlalchemy as sa

from centre.routing.feed import AlertFeed
from centre.routing.tables import blind_alerts, notifications
from tests.centre.acting.fake_gateway import FakeGateway
from tests.centre.acting.support import ActingRun
from tests.centre.routing.servers import SmtpServer, WebhookServer
from tests.centre.routing.support import SECRET, add_people, routing
from tests.centre.support import Publisher, wait_for

SITE, GW = "sunny-court", "gw-3"


async def rows(engine, table, *where):
    async with engine.connect() as conn:
        return list(await conn.execute(sa.select(table).where(*where).order_by(table.c.id)))


async def test_a_silent_gateway_raises_site_blind_on_the_webhook_and_by_mail_within_5s(db_url, broker, tmp_path):
    hook = WebhookServer(SECRET.encode(), script=[500]).start()  # the SMS gateway fails once
    smtp = SmtpServer().start()
    run = ActingRun(db_url, broker.port, tmp_path / "keys", routing=routing(hook.url, smtp.port, blind_after=2.0))
    await add_people(run.engine)
    await run.start()
    gw = FakeGateway(broker.port, SITE, GW, {}).start()  # says online once, then nothing: it "stops sending"
    try:
        async def last_seen():
            async with run.engine.connect() as conn:
                return (await conn.execute(sa.text("SELECT last_seen FROM gateways"))).scalar()

        heard = await wait_for(last_seen, what="the gateway's state stored")
        limit_at = heard + 2.0
        await wait_for(lambda: _true(hook.delivered()), 15, what="the blind alert at the webhook")
        await wait_for(lambda: _true(smtp.messages), 15, what="the blind alert by e-mail")
        first, delivered = hook.requests[0], hook.delivered()[0]
        assert first.status == 500 and first.signature_ok  # refused once by the receiver, then retried
        assert delivered.signature_ok and delivered.headers["X-Canopy-Delivery"] == first.headers["X-Canopy-Delivery"]
        assert delivered.at - limit_at < 5.0, f"webhook {delivered.at - limit_at:.1f} s after the limit"
        body = delivered.json
        assert body["type"] == "alert.raised" and body["class"] == "site.blind" and body["source"] == "centre"
        assert body["site"] == SITE and body["gateway"] == GW and "silent since" in body["message"]
        assert [r["user"] for r in body["recipients"]] == ["duty-wang"] and body["recipients"][0]["phone"]
        at, to, msg = smtp.messages[0]
        assert at - limit_at < 5.0 and to == ["wang@example.net"]
        assert "site.blind raised at sunny-court/gw-3" in msg["Subject"] and "is blind" in msg.get_payload()
        (blind,) = await rows(run.engine, blind_alerts)
        assert blind.status == "raised" and blind.why == "silent"

        gw.stop()  # heard again (an offline state is a message too) ...
        gw = FakeGateway(broker.port, SITE, GW, {}).start()  # ... and back online: resolved, and told
        await wait_for(lambda: _resolved(run), 10, what="the blind alert resolved")
        await wait_for(lambda: _true([r for r in hook.delivered() if r.json["type"] == "alert.resolved"]), 10,
                       what="the resolution at the webhook")
    finally:
        gw.stop()
        await run.stop()
        hook.stop()
        smtp.stop()


async def test_alert_steps_page_each_group_once_with_its_members(db_url, broker, tmp_path):
    hook = WebhookServer(SECRET.encode()).start()
    smtp = SmtpServer().start()
    run = ActingRun(db_url, broker.port, tmp_path / "keys", routing=routing(hook.url, smtp.port, blind_after=3600))
    await add_people(run.engine)
    await run.start()
    console = run.centre.hub.subscribe(["notification"])
    pub = Publisher(broker.port, site=SITE, gateway=GW)
    t0 = time.time()
    base = {"alert": "1-2da3", "rule": "smoke-alarm", "class": "fire", "severity": "critical", "subject": "smoke-shed",
            "device": "smoke-shed", "location": {"building": "3"}, "raised_at": t0, "message": "Smoke in the e-bike shed"}
    raised = {"seq": 1, "ts": t0, "type": "alert.raised", **base, "groups": ["office"], "status": "raised", "step": 0}
    escalated = {"seq": 2, "ts": t0 + 1, "type": "alert.escalated", **base, "groups": ["office", "volunteers"],
                 "status": "escalated", "step": 1}
    acked = {"seq": 1, "ts": t0 + 2, "type": "alert.acknowledged", **base, "groups": ["office", "volunteers"],
             "status": "acknowledged", "by": "vol-li"}
    try:
        pub.events("alarm", [raised], topic=pub.topics.alert_group("office"))
        pub.events("alarm", [raised, escalated])  # …/event copy of the raise, and the escalation
        pub.events("event", [acked])
        pub.flush()
        await wait_for(lambda: _count(hook.delivered(), 2), 15, what="two webhook POSTs")
        await wait_for(lambda: _count(smtp.messages, 2), 15, what="two e-mails")
        posts = sorted((r.json["type"], r.json["group"], tuple(p["user"] for p in r.json["recipients"]))
                       for r in hook.delivered())
        assert posts == [("alert.escalated", "volunteers", ("vol-li",)), ("alert.raised", "office", ("duty-wang",))]
        assert sorted(to[0] for _, to, _ in smtp.messages) == ["li@example.net", "wang@example.net"]
        assert all(r.signature_ok for r in hook.requests)
        seen = [(await console.get()).data for _ in range(2)]
        assert {(c["type"], c["group"]) for c in seen} == {("alert.raised", "office"), ("alert.escalated", "volunteers")}

        async def all_sent():  # the delivery marks its rows sent just after the POST/e-mail/console it did
            got = await rows(run.engine, notifications)
            return got if len(got) == 6 and {r.status for r in got} == {"sent"} else None

        await wait_for(all_sent, 10, what="the six notifications marked sent")
        pub.events("alarm", [raised, escalated])  # duplicates from the gateway, and a new leader looking back
        pub.flush()
        await asyncio.sleep(1.0)
        assert await AlertFeed(run.centre, run.acting.routing.feed.cfg).round() == 0
        assert len(await rows(run.engine, notifications)) == 6 and len(hook.requests) == 2
    finally:
        pub.close()
        await run.stop()
        hook.stop()
        smtp.stop()


async def test_a_receiver_that_refuses_the_request_fails_it_at_once_visibly(db_url, broker, tmp_path):
    hook = WebhookServer(SECRET.encode(), script=[400]).start()
    smtp = SmtpServer().start()
    run = ActingRun(db_url, broker.port, tmp_path / "keys", routing=routing(hook.url, smtp.port, blind_after=1.0))
    await add_people(run.engine)
    await run.start()
    gw = FakeGateway(broker.port, SITE, GW, {}).start()
    try:
        async def failed():
            return [r for r in await rows(run.engine, notifications, notifications.c.channel == "webhook:sms")
                    if r.status == "failed"]

        (row,) = await wait_for(failed, 15, what="the webhook notification failed")
        assert row.attempts == 1 and row.last_error.startswith("HTTP 400")
        assert run.acting.routing.deliverer.counters["failed"] == 1
    finally:
        gw.stop()
        await run.stop()
        hook.stop()
        smtp.stop()


async def _true(v):
    return bool(v)


async def _count(items, n):
    return len(items) >= n


async def _resolved(run):
    return [r for r in await rows(run.engine, blind_alerts) if r.status == "resolved"]
