"""The farmer's phone: fields with their current values, charts over 24 h and 7 days, and a valve started
for N minutes whose result comes back from the gateway through mosquitto -- executed (the valve confirms
it is open), refused with the gateway's reason in words, waiting while the gateway is offline."""

from __future__ import annotations

import time

import sqlalchemy as sa

from centre.store import schema
from tests.centre.console.support import FARM, FGW, Gateway, person, rendered, shot

VALVE = '.valve-box:has(.valve:text-matches("North valve"))'


async def newest_command(centre) -> dict:
    c = schema.commands
    async with centre.engine.connect() as conn:
        return dict((await conn.execute(sa.select(c).where(c.c.kind == "command").order_by(c.c.created_at.desc()))).first()._mapping)


async def test_start_a_zone_for_one_minute_see_it_open_then_refused_in_words_then_waiting_offline(centre, browser, broker):
    ctx, page = await person(browser, centre.url, "zhang", phone=True, lang="en")
    gw = Gateway(broker.port, FARM, FGW)
    try:
        await page.goto("/farm")
        await rendered(page, "farm-rendered")
        field = page.locator("section.zone", has_text="North field")
        assert "Soil moisture" in await field.inner_text()
        box = page.locator(VALVE)
        await box.locator(".valve.closed", has_text="closed (confirmed by the valve)").wait_for()

        await box.get_by_label("Minutes").fill("1")
        await box.get_by_role("button", name="Start").click()
        await box.locator(".intent", has_text="Water 1 min:").wait_for()
        cmd = await newest_command(centre)
        assert (cmd["on_behalf_of"], cmd["action"], cmd["target"], cmd["params"]) == ("zhang", "irrigate", "zone-2",
                                                                                     {"duration_s": 60})
        now = time.time()
        await gw.send("event", [{"ts": now, "type": "cmd.result", "id": cmd["id"], "status": "executed",
                                 "issuer": "centre-1", "on_behalf_of": "zhang", "action": "irrigate", "target": "zone-2",
                                 "duration_s": 60, "closes_at": now + 60, "state": {"zone_2": True}}])
        await gw.send("telemetry", [{"ts": now, "device": "valves", "point": "zone_2", "value": True}])
        await box.locator(".intent.done", has_text="done, confirmed by the gateway").wait_for(timeout=3000)
        await box.locator(".valve.open", has_text="OPEN (confirmed by the valve)").wait_for(timeout=3000)
        await shot(page, "farm-en-phone-open")

        await box.get_by_role("button", name="Start").click()
        await page.wait_for_timeout(300)
        second = await newest_command(centre)
        assert second["id"] != cmd["id"]
        await gw.send("event", [{"ts": time.time(), "type": "cmd.result", "id": second["id"], "status": "rejected",
                                 "action": "irrigate", "target": "zone-2", "reason": "interlock", "interlock": "rain",
                                 "detail": "rain detected (weather.rain)"}])
        refused = box.locator(".intent.refused")
        await refused.wait_for(timeout=3000)
        assert "REFUSED by the gateway: blocked: it is raining" in await refused.inner_text()
        assert "rain detected (weather.rain)" in await refused.inner_text()

        gw.pub.state("offline", reason="connection lost")
        await page.locator(".gw-line.trouble", has_text="OFFLINE").wait_for(timeout=3000)
        await box.get_by_role("button", name="Start").click()
        await box.locator(".intent", has_text=f"gateway {FGW} offline since").wait_for(timeout=3000)
        await shot(page, "farm-en-phone-offline")
    finally:
        gw.close()
        await ctx.close()


async def test_charts_over_24_hours_and_7_days(centre, browser):
    ctx, page = await person(browser, centre.url, "zhang", phone=True)
    try:
        await page.goto("/farm")
        await rendered(page, "farm-rendered")
        await page.locator(".tile-button", has_text="土壤湿度").click()
        chart = page.locator("#chart svg.chart")
        await chart.wait_for()
        points = await chart.locator("polyline").get_attribute("points")
        assert 94 <= len(points.split()) <= 96  # every reading of the last 24 h (one every 15 min)
        assert "土壤湿度（24小时）：最低" in await chart.get_attribute("aria-label")
        await shot(page, "farm-zh-phone-chart-24h")
        await page.get_by_role("button", name="7天").click()
        await page.locator("#chart svg.chart polygon.band").wait_for()
        points = await page.locator("#chart svg.chart polyline").get_attribute("points")
        assert 160 <= len(points.split()) <= 169  # hourly means over 7 days
        await shot(page, "farm-zh-phone-chart-7d")
    finally:
        await ctx.close()
