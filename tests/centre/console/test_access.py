"""Who reaches which page, and refusals said out loud: a farmer gets a 403 page (audited) instead of the
duty desk; an anonymous visitor logs in and lands where they were going; on a plain-http origin, with
sound blocked, or with notifications denied, the desk shows a red banner that says what to do."""

from __future__ import annotations

from urllib.parse import urlsplit

import sqlalchemy as sa

from centre.store import schema
from tests.centre.console.support import (
    DESKTOP, PASSWORD, RECORDER, SOUND_BLOCKED, chromium, person, rendered, shot, until_page,
)


def at(path: str):
    """A URL matcher on the path alone (a glob "**/desk" also matches /login?next=/desk)."""
    return lambda url: urlsplit(url).path == path


async def test_a_farmer_cannot_reach_the_duty_desk(centre, browser):
    ctx, page = await person(browser, centre.url, "zhang", lang="en")
    try:
        answer = await page.goto("/desk")
        assert answer.status == 403
        # in zhang's account language (zh-CN): the 403 is written by the centre, before any script
        assert await page.locator("h1").inner_text() == "这不是您的页面"
        assert "“值班台”页面不属于您的角色" in await page.locator("main").inner_text()
        assert await page.locator("a[href='/farm']").inner_text() == "我的农场"
        assert (await page.request.get(f"{centre.url}/desk")).status == 403
        async with centre.engine.connect() as conn:
            rows = (await conn.execute(sa.select(schema.audit).where(schema.audit.c.action == "console.open"))).all()
        assert rows and all((r.actor, r.outcome, r.target) == ("zhang", "denied", "/desk") for r in rows)
        await shot(page, "forbidden-zh-desktop")
        await page.locator("a[href='/farm']").click()
        await rendered(page, "farm-rendered")
    finally:
        await ctx.close()


async def test_anonymous_goes_to_login_then_lands_on_the_page_it_asked_for(centre, browser):
    ctx = await browser.new_context(base_url=centre.url, **DESKTOP)
    try:
        page = await ctx.new_page()
        await page.goto("/desk")
        assert page.url.endswith("/login?next=/desk")
        await until_page(page, "document.activeElement?.id === 'login-user'")
        await page.keyboard.type("duty")
        await page.keyboard.press("Tab")
        await page.keyboard.type(PASSWORD)
        await page.keyboard.press("Enter")
        await page.wait_for_url(at("/desk"))
        await rendered(page)
    finally:
        await ctx.close()


async def test_a_plain_http_origin_shows_the_notification_banner_instead_of_pretending(centre):
    async with chromium("--host-resolver-rules=MAP canopy.test 127.0.0.1") as browser:
        base = f"http://canopy.test:{centre.port}"
        ctx = await browser.new_context(base_url=base, **DESKTOP)
        await ctx.add_init_script(RECORDER)
        page = await ctx.new_page()
        await page.goto("/login?next=/desk")
        await page.fill("#login-user", "duty")
        await page.fill("#login-pass", PASSWORD)
        await page.locator("#login-box button[type=submit]").click()
        await page.wait_for_url(at("/desk"))
        await rendered(page)
        assert await page.evaluate("window.isSecureContext") is False
        await page.get_by_role("button", name="Start shift: sound on").click()
        banner = page.locator("#banner-notify")
        await banner.wait_for()
        words = await banner.inner_text()
        assert "plain http" in words and f"https://canopy.test:{centre.port}/desk" in words
        assert "Notifications: OFF" in await page.locator("#shift-state").inner_text()
        assert (await page.evaluate("window.__canopy"))["notes"] == []
        await shot(page, "desk-en-desktop-insecure")
        await ctx.close()


async def test_blocked_sound_and_denied_notifications_each_show_a_banner(centre, browser):
    ctx, page = await person(browser, centre.url, "duty", notifications=False, init=(SOUND_BLOCKED,))
    try:
        await ctx.clear_permissions()
        await page.goto("/desk")
        await rendered(page)
        await page.get_by_role("button", name="Start shift: sound on").click()
        sound, notify = page.locator("#banner-sound"), page.locator("#banner-notify")
        await sound.wait_for()
        await notify.wait_for()
        assert "SOUND IS BLOCKED" in await sound.inner_text()
        assert "NOTIFICATIONS ARE BLOCKED" in await notify.inner_text()
        assert await page.get_by_role("button", name="Try again").count() >= 2
    finally:
        await ctx.close()
