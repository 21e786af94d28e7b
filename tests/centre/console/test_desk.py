"""The duty desk in Debian's chromium against a real centre: a smoke alarm sent by a gateway through
mosquitto is on screen, with its place, a sound and a notification, within 2 s; the countdown runs; the
alarm repeats until an acknowledgement -- made here with the keyboard alone -- silences it; the gateway's
acknowledgement shows; a handover keeps the alarm going; a lost connection and an offline gateway are
impossible to miss."""

from __future__ import annotations

import asyncio
import contextlib
import time
from urllib.parse import urlsplit

import sqlalchemy as sa
from axe_playwright_python.async_playwright import Axe

from centre.acting.config import ActingConfig
from centre.acting.keys import KeyStore
from centre.acting.service import build
from centre.jobs.lease import SoleLease
from centre.routing.config import RoutingConfig
from centre.routing.service import build_routing
from centre.store import schema
from tests.centre.acting.fake_gateway import FakeGateway
from tests.centre.console.support import (
    CGW, COMMUNITY, DESKTOP, PASSWORD, Gateway, person, recorded, rendered, shot, smoke, until_page,
)
from tests.centre.console.test_households import seed_homes

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


# ---- households, the responder's door unlock, the language kept in the account --------------------------------

FAST = ActingConfig(check_interval=0.2, resend_after=1.0, resend_max=2.0, expire_grace=0.5, replay_interval=60)


@contextlib.asynccontextmanager
async def acting_with_gateway(centre, tmp_path, answer):
    """The centre's acting component (sender, keys) in this loop, and a gateway (core.protocol only) that trusts
    the site's key and answers commands with ``answer``."""
    keys = KeyStore(tmp_path / "keys")
    keys.generate(COMMUNITY)
    centre.centre.cfg = centre.centre.cfg.model_copy(update={"keys_dir": str(keys.dir)})
    acting = build(centre.centre, cfg=FAST, lease=SoleLease(), routing=build_routing(centre.centre, RoutingConfig()))
    task = asyncio.create_task(acting.leader.run())
    gw = await asyncio.to_thread(
        FakeGateway(centre.broker_port, COMMUNITY, CGW, {k.issuer: k.public_key for k in keys.keys(COMMUNITY)},
                    answer=answer).start)
    try:
        yield gw
    finally:
        await asyncio.to_thread(gw.stop)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await acting.routing.close()
        await acting.publisher.close()


def lock_answer(env):
    """The first unlock is done (the bolt reads open); the next is refused as a lock-out."""
    if env.action != "unlock":
        return {"status": "rejected", "reason": "unauthorised_action"}
    lock_answer.calls += 1
    if lock_answer.calls == 1:
        return {"status": "executed", "state": {"locked": False}, "relock_at": time.time() + 10, "confirmed": True}
    return {"status": "rejected", "reason": "lockout",
            "detail": f"{env.on_behalf_of} is locked out of {env.target} for another 840 s"}


async def test_a_quiet_household_is_flagged_and_a_responder_unlocks_its_neighbour_s_door_with_a_reason(
        centre, browser, tmp_path):
    await seed_homes(centre.engine)
    lock_answer.calls = 0
    async with acting_with_gateway(centre, tmp_path, lock_answer) as gw:
        ctx, page = await person(browser, centre.url, "duty")
        try:
            await page.goto("/desk")
            await rendered(page)
            li = page.locator('.home[data-home="sunny-court/101"]')
            await li.wait_for()
            assert await page.locator(".home").first.get_attribute("data-home") == "sunny-court/101"  # needs eyes first
            text = await li.inner_text()
            assert "Household 101 (the Li household)" in text and "WELFARE ALERT OPEN" in text
            assert "QUIET for 14 h: no door, water or power use since" in text
            assert "CANNOT SEE THIS HOME" in await page.locator('.home[data-home="sunny-court/104"]').inner_text()
            zhao = page.locator('.home[data-home="sunny-court/102"]')
            assert "Active 40 min ago" in await zhao.inner_text()
            assert await li.locator(".home-mark.quiet").evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(200, 0, 0)"

            await zhao.get_by_role("button", name="Unlock: door of 102").click()
            dialog = page.locator("#unlock-dialog")
            await until_page(page, "document.getElementById('unlock-dialog').open")
            assert "It unlocks for 10 s" in await dialog.inner_text()
            await dialog.get_by_role("button", name="Unlock now").click()  # no reason: refused here, stays open
            assert "Write why the door is opened" in await page.locator("#unlock-error").inner_text()
            assert await page.evaluate("document.getElementById('unlock-dialog').open")
            await shot(page, "desk-en-desktop-unlock-dialog")
            await page.fill("#unlock-reason", "Mr Zhao does not answer; ambulance crew at the door")
            await dialog.get_by_role("button", name="Unlock now").click()
            done = zhao.locator(".intent.done", has_text="done, confirmed by the gateway")
            await done.wait_for(timeout=10000)
            assert len(gw.received) == 1 and (gw.received[0].action, gw.received[0].target,
                                              gw.received[0].on_behalf_of) == ("unlock", "door-102", "duty")
            async with centre.engine.connect() as conn:
                a = schema.audit
                rows = (await conn.execute(sa.select(a.c.action, a.c.detail).where(a.c.actor == "duty").order_by(a.c.id))).all()
            acts = [r.action for r in rows]
            assert acts.index("door.unlock_reason") < acts.index("command")
            assert rows[acts.index("door.unlock_reason")].detail["reason"].startswith("Mr Zhao does not answer")
            await shot(page, "desk-en-desktop-households")

            await zhao.get_by_role("button", name="Unlock: door of 102").click()
            await page.fill("#unlock-reason", "second try")
            await page.keyboard.press("Tab")
            await page.keyboard.press("Enter")  # keyboard only: the confirm button
            refused = zhao.locator(".intent.refused")
            await refused.wait_for(timeout=10000)
            words = await refused.inner_text()
            assert "REFUSED by the gateway: locked out after repeated refusals" in words and "840 s" in words
        finally:
            await ctx.close()
    farmer, fpage = await person(browser, centre.url, "zhang")
    try:
        r = await fpage.request.post(f"{centre.url}/api/commands", headers={"X-CSRF-Token": await csrf(farmer)},
                                     data={"site": COMMUNITY, "gateway": CGW, "action": "unlock", "target": "door-102"})
        assert r.status == 403 and "doors.control" in (await r.json())["detail"]
        assert (await fpage.goto("/desk")).status == 403
    finally:
        await farmer.close()


async def csrf(ctx) -> str:
    return next(c["value"] for c in await ctx.cookies() if c["name"] == "canopy_csrf")


async def test_an_unlock_while_the_gateway_is_offline_waits_and_says_so(centre, browser, broker):
    await seed_homes(centre.engine)
    gw = Gateway(broker.port, COMMUNITY, CGW)
    ctx, page = await person(browser, centre.url, "night")
    try:
        gw.pub.state("offline", reason="connection lost")
        await page.goto("/desk")
        await rendered(page)
        zhao = page.locator('.home[data-home="sunny-court/102"]')
        await zhao.locator(".home-mark.blind", has_text="无法查看此户：网关").wait_for(timeout=5000)
        await zhao.get_by_role("button", name="开锁：102室门锁").click()
        await page.fill("#unlock-reason", "邻居报告家中有异响，民警在门口")
        await page.get_by_role("button", name="立即开锁").click()
        await zhao.locator(".intent.waiting", has_text=f"网关 {CGW} 自").wait_for(timeout=5000)
        await shot(page, "desk-zh-desktop-households-offline")
    finally:
        gw.close()
        await ctx.close()


async def test_the_language_switched_on_the_desk_is_kept_in_the_account_for_the_next_login(centre, browser):
    ctx, page = await person(browser, centre.url, "duty")
    try:
        await page.goto("/desk")
        await rendered(page)
        assert await page.evaluate("document.documentElement.lang") == "en"
        await page.locator(".top button.lang").click()  # "中文"
        await page.locator("h1", has_text="值班台").wait_for()
        await until_page(page, "fetch('/api/me').then(r => r.json()).then(me => me.language === 'zh-CN')")
        # the account decides now: the browser's copy is dropped once the PATCH has answered (the centre may
        # have stored the language a moment before the page hears back)
        await until_page(page, "localStorage.getItem('canopy.lang.duty') === null")
    finally:
        await ctx.close()
    fresh = await browser.new_context(base_url=centre.url, **DESKTOP)  # another computer: nothing in its storage
    try:
        page = await fresh.new_page()
        await page.goto("/login?next=/desk")
        await page.fill("#login-user", "duty")
        await page.fill("#login-pass", PASSWORD)
        await page.locator("#login-box button[type=submit]").click()
        await page.wait_for_url(lambda url: urlsplit(url).path == "/desk")
        await rendered(page)
        assert await page.evaluate("document.documentElement.lang") == "zh-CN"
        await page.locator("h1", has_text="值班台").wait_for()
        await page.locator(".top button.lang", has_text="English").click()
        await page.locator("h1", has_text="Duty desk").wait_for()
        await until_page(page, "fetch('/api/me').then(r => r.json()).then(me => me.language === 'en')")
    finally:
        await fresh.close()


async def test_the_households_panel_is_accessible_in_both_languages(centre, browser):
    await seed_homes(centre.engine)
    axe = Axe()
    for who, short in (("duty", "en"), ("night", "zh")):
        ctx, page = await person(browser, centre.url, who)
        try:
            await page.goto("/desk")
            await rendered(page)
            await page.locator('.home[data-home="sunny-court/101"]').wait_for()
            results = await axe.run(page)
            bad = [f"{v['id']}: {v['help']}" for v in results.response["violations"] if v["impact"] in ("serious", "critical")]
            assert bad == [], bad
            await shot(page, f"desk-{short}-desktop-households")
            await page.locator('.home[data-home="sunny-court/102"] .lock-row button').click()
            await until_page(page, "document.getElementById('unlock-dialog').open")
            results = await axe.run(page)
            bad = [f"{v['id']}: {v['help']}" for v in results.response["violations"] if v["impact"] in ("serious", "critical")]
            assert bad == [], bad
            await shot(page, f"desk-{short}-desktop-unlock")
        finally:
            await ctx.close()
