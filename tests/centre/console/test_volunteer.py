"""The volunteer's phone beside the duty desk: an alert appears on the volunteer's page only once it has
escalated to their group; "I'm on my way" is an acknowledgement signed for them; when the gateway
confirms it, both pages show who acknowledged, and the desk's alarm stops."""

from __future__ import annotations

import asyncio
import time

import sqlalchemy as sa

from centre.store import schema
from tests.centre.console.support import (
    CGW, COMMUNITY, Gateway, person, recorded, rendered, shot, smoke,
)

KEY = f"{COMMUNITY}/{CGW}/9-51e2"


async def test_the_escalation_reaches_the_volunteer_whose_ack_shows_on_both_pages(centre, browser, broker):
    desk_ctx, desk = await person(browser, centre.url, "duty")
    vol_ctx, phone = await person(browser, centre.url, "wang", phone=True, lang="en")
    gw = Gateway(broker.port, COMMUNITY, CGW)
    try:
        await desk.goto("/desk")
        await phone.goto("/volunteer")
        await rendered(desk)
        await phone.locator("#alerts-empty").wait_for()
        await desk.get_by_role("button", name="Start shift: sound on").click()
        raised = time.time() - 120
        await gw.send("alarm", [smoke("9-51e2", raised)])
        await desk.locator(f'.alert[data-key="{KEY}"]').wait_for(timeout=2000)
        await phone.wait_for_timeout(500)
        assert await phone.locator(f'.alert[data-key="{KEY}"]').count() == 0  # not yet their group's

        await gw.send("alarm", [smoke("9-51e2", time.time(), type="alert.escalated", status="escalated", step=1,
                                      groups=("property-office", "volunteers"), raised_at=raised, next_in=180)])
        card = phone.locator(f'.alert[data-key="{KEY}"]')
        await card.wait_for(timeout=2000)
        text = await card.inner_text()
        assert "Building 7 · e-bike shed" in text and "NOBODY has acknowledged yet" in text
        await desk.locator(f'.alert[data-key="{KEY}"] .state', has_text="escalated to Building volunteers").wait_for()
        await shot(phone, "volunteer-en-phone-escalated")

        await card.get_by_role("button", name="I'm on my way").click()
        await card.locator(".intent", has_text="Acknowledgement by you").wait_for()
        async with centre.engine.connect() as conn:
            ack = (await conn.execute(sa.select(schema.commands).where(schema.commands.c.kind == "ack"))).one()
        assert (ack.on_behalf_of, ack.params) == ("wang", {"note": "on my way"})

        now = time.time()
        await gw.send("event", [smoke("9-51e2", now, type="alert.acknowledged", status="acknowledged", step=1,
                                      groups=("property-office", "volunteers"), by="wang", note="on my way",
                                      ack=ack.id, raised_at=raised, next_in=None)])
        await card.locator(".state", has_text="Acknowledged by wang").wait_for(timeout=3000)
        assert await card.get_by_role("button", name="I'm on my way").count() == 0
        desk_card = desk.locator(f'.alert[data-key="{KEY}"]')
        await desk_card.locator(".state", has_text='Acknowledged by wang').wait_for(timeout=3000)
        assert "on my way" in await desk_card.inner_text()
        beeps = (await recorded(desk))["sounds"]
        await desk.wait_for_timeout(6000)
        assert (await recorded(desk))["sounds"] == beeps  # acknowledged: the desk is quiet
        await shot(phone, "volunteer-en-phone-acknowledged")
    finally:
        gw.close()
        await desk_ctx.close()
        await vol_ctx.close()


async def test_the_volunteer_reads_chinese_and_sees_only_their_groups_alerts(centre, browser, broker):
    ctx, phone = await person(browser, centre.url, "wang", phone=True)
    gw = Gateway(broker.port, COMMUNITY, CGW)
    try:
        await gw.send("alarm", [smoke("9-51e2", time.time(), type="alert.escalated", status="escalated", step=1,
                                      groups=("property-office", "volunteers"))])
        await until_centre_has(centre, "9-51e2")
        await phone.goto("/volunteer")
        card = phone.locator(f'.alert[data-key="{KEY}"]')
        await card.wait_for()
        text = await card.inner_text()
        assert "还没有人确认" in text and "7栋 · e-bike shed" in text and "我马上到" in text
        assert await phone.locator(".alert").count() == 1  # the welfare alert is the property office's only
        await shot(phone, "volunteer-zh-phone")
    finally:
        gw.close()
        await ctx.close()


async def until_centre_has(centre, alert: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        async with centre.engine.connect() as conn:
            if (await conn.execute(sa.select(schema.alerts.c.alert).where(schema.alerts.c.alert == alert))).first():
                return
        assert time.monotonic() < deadline, f"alert {alert} never reached the centre's store"
        await asyncio.sleep(0.05)
