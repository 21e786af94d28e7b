"""The duty desk in Debian's chromium against a real centre: a smoke alarm sent by a gateway through
mosquitto is on screen, with its place, a sound and a notification, within 2 s; the countdown runs; the
alarm repeats until an acknowledgement -- made here with the keyboard alone -- silences it; the gateway's
acknowledgement shows; a handover keeps the alarm going; a lost connection and an offline gateway are
impossible to miss."""

from __future__ import annotations

import time

import sqlalchemy as sa

from centre.store import schema
from tests.centre.console.support import (
    CGW, COMMUNITY, Gateway, person, recorded, rendered, shot, smoke, until_page,
)

KEY = f"{COMMUNITY}/{CGW}/9-51e2"
REPEAT_S = 5  # centre/console/static/js/alarm.js


async def start_shift(page) -> None:
    await page.get_by_role("button", name="Start shift: sound on").click()
    await until_page(page, "document.getElementById('shift-state').textContent.includes('Sound: on')")


def card_of(page, key: str = KEY):
    return page.locator(f'.alert[data-key="{key}"]')


async def test_a_smoke_alarm_is_on_the_desk_within_2_s_with_its_place_sound_and_notification(centre, browser, broker):
    ctx, page = await person(browser, centre.url, "duty")
    gw = Gateway(broker.port, COMMUNITY, CGW)
    try:
        await page.goto("/desk")
        await rendered(page)
        await start_shift(page)
        sent = time.monotonic()
        await gw.send("alarm", [smoke("9-51e2", time.time())])
        card = card_of(page)
        await card.wait_for(timeout=2000)
        on_screen = time.monotonic() - sent
        assert on_screen < 2.0, on_screen
        await until_page(page, "window.__canopy.notes.length > 0", 2)
        await until_page(page, "window.__canopy.sounds > 0", 2)
        text = await card.inner_text()
        assert "CRITICAL" in text and "Building 7 · e-bike shed" in text and "smoke" in text.lower()
        calls = await recorded(page)
        assert calls["notes"][0]["tag"] == KEY and "Building 7" in calls["notes"][0]["body"]
        countdown = card.locator(".countdown")
        first = await countdown.inner_text()
        assert first.startswith("Escalates to Building volunteers in 1:5") or first.startswith(
            "Escalates to Building volunteers in 2:00"), first
        await until_page(page, f"document.querySelector('[data-key=\"{KEY}\"] .countdown').textContent !== {first!r}", 3)
        assert (await countdown.inner_text()).startswith("Escalates to Building volunteers in 1:5")
        await shot(page, "desk-en-desktop-live")
    finally:
        gw.close()
        await ctx.close()


async def test_the_alarm_repeats_until_a_keyboard_only_ack_with_a_note_then_the_gateway_confirms(centre, browser, broker):
    ctx, page = await person(browser, centre.url, "duty")
    gw = Gateway(broker.port, COMMUNITY, CGW)
    try:
        await page.goto("/desk")
        await rendered(page)
        await tab_to(page, "#start-shift")
        await page.keyboard.press("Enter")  # a key press is a user gesture too: sound may start
        await until_page(page, "document.getElementById('shift-state').textContent.includes('Sound: on')")
        await gw.send("alarm", [smoke("9-51e2", time.time())])
        await card_of(page).wait_for(timeout=2000)
        beeps = (await recorded(page))["sounds"]
        await until_page(page, f"window.__canopy.sounds > {beeps}", REPEAT_S + 2)  # it repeats

        await tab_to(page, f'.alert[data-key="{KEY}"] [data-action="ack"]')
        await page.keyboard.press("Enter")
        await until_page(page, "document.getElementById('ack-dialog').open")
        assert await page.evaluate("document.activeElement.id") == "ack-note"
        await page.keyboard.type("going to the shed now")
        await page.keyboard.press("Tab")
        assert await page.evaluate("document.activeElement.id") == "ack-confirm"
        await page.keyboard.press("Enter")
        intent = card_of(page).locator(".intent")
        await intent.wait_for()
        assert "waiting" in (await intent.inner_text())
        assert await page.evaluate("document.activeElement.closest('[data-key]')?.dataset.key") == KEY  # focus stays
        async with centre.engine.connect() as conn:
            row = (await conn.execute(sa.select(schema.commands).where(schema.commands.c.kind == "ack"))).one()
        assert (row.on_behalf_of, row.target, row.action, row.params) == ("duty", "9-51e2", "acknowledge",
                                                                          {"note": "going to the shed now"})

        beeps = (await recorded(page))["sounds"]  # our ack is on its way: this alert no longer rings
        await page.wait_for_timeout((REPEAT_S + 1) * 1000)
        assert (await recorded(page))["sounds"] == beeps
        now = time.time()
        await gw.send("event", [smoke("9-51e2", now, type="alert.acknowledged", status="acknowledged", by="duty",
                                      note="going to the shed now", ack=row.id, next_in=None, raised_at=now - 10)])
        await card_of(page).locator(".state", has_text="Acknowledged by duty").wait_for(timeout=3000)
        assert await card_of(page).locator('[data-action="ack"]').count() == 0
        assert "done" in await card_of(page).locator(".intent").inner_text()
    finally:
        gw.close()
        await ctx.close()


async def tab_to(page, selector: str, presses: int = 40) -> None:
    """Press Tab until the element is focused (keyboard only: no clicks)."""
    for _ in range(presses):
        if await page.evaluate(f"document.activeElement === document.querySelector({selector!r})"):
            return
        await page.keyboard.press("Tab")
    raise AssertionError(f"{selector} never got the focus with Tab")


async def test_a_handover_logs_the_next_person_in_without_a_reload_and_the_alarm_keeps_sounding(centre, browser, broker):
    ctx, page = await person(browser, centre.url, "duty")
    gw = Gateway(broker.port, COMMUNITY, CGW)
    try:
        await page.goto("/desk")
        await rendered(page)
        await page.evaluate("window.__same_page = true")
        await start_shift(page)
        await gw.send("alarm", [smoke("9-51e2", time.time())])
        await card_of(page).wait_for(timeout=2000)
        await page.get_by_role("button", name="Hand over the shift").click()
        await page.locator("#banner-session").wait_for()
        assert "keeps sounding" in await page.locator("#banner-session").inner_text()
        beeps = (await recorded(page))["sounds"]
        await until_page(page, f"window.__canopy.sounds > {beeps}", REPEAT_S + 2)  # nobody logged in: still ringing
        await page.fill("#handover-user", "night")
        await page.fill("#handover-pass", "correct horse battery")
        await page.locator("#login-box button[type=submit]").click()
        await page.locator("#banner-session").wait_for(state="detached")
        await page.locator(".top .person", has_text="Night").wait_for()
        assert await page.evaluate("window.__same_page") is True
        assert await page.evaluate("document.documentElement.lang") == "zh-CN"  # night reads Chinese
        await page.locator("h1", has_text="值班台").wait_for()
        assert "7栋 · e-bike shed" in await card_of(page).inner_text()
        await shot(page, "desk-zh-desktop-handover")
    finally:
        gw.close()
        await ctx.close()


async def test_a_lost_connection_and_an_offline_gateway_show_loud_banners(centre, browser, broker):
    ctx, page = await person(browser, centre.url, "duty")
    gw = Gateway(broker.port, COMMUNITY, CGW)
    try:
        await page.goto("/desk")
        await rendered(page)
        await centre.stop_web()
        banner = page.locator("#banner-connection")
        await banner.wait_for(timeout=8000)
        assert "reconnecting" in await banner.inner_text()
        await gw.send("alarm", [smoke("9-51e2", time.time())])  # while the page cannot hear
        await centre.start_web()
        await banner.wait_for(state="detached", timeout=20000)
        await card_of(page).wait_for(timeout=3000)  # re-read after the reconnection

        gw.pub.state("offline", reason="connection lost")
        sites = page.locator("#banner-sites")
        await sites.wait_for(timeout=3000)
        assert f"{COMMUNITY}/{CGW}" in await sites.inner_text()
        row = page.locator(".gw.trouble", has_text=CGW)
        assert "OFFLINE since" in await row.inner_text() and "connection lost" in await row.inner_text()
        await shot(page, "desk-en-desktop-offline")
    finally:
        gw.close()
        await ctx.close()
