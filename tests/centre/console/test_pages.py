"""Every page in both languages, on a desk and on a phone: axe-core finds no serious or critical
accessibility problem, and a screenshot is written to screenshots/ (git-ignored) for people to judge."""

from __future__ import annotations

import time

import pytest
from axe_playwright_python.async_playwright import Axe

from tests.centre.console.support import (
    CGW, COMMUNITY, DESKTOP, PHONE, Gateway, person, rendered, shot, smoke,
)

PAGES = {  # page: (who, the mark it sets when drawn)
    "desk": ("duty", "alerts-rendered"),
    "volunteer": ("wang", None),
    "farm": ("zhang", "farm-rendered"),
}
axe = Axe()


async def serious(page) -> list[str]:
    results = await axe.run(page)
    return [f"{v['id']} ({v['impact']}): {v['help']} -- {[n['target'] for n in v['nodes']][:3]}"
            for v in results.response["violations"] if v["impact"] in ("serious", "critical")]


async def scene(broker) -> None:
    """A smoke alarm escalated to the volunteers, with its timeline: something worth looking at."""
    gw = Gateway(broker.port, COMMUNITY, CGW)
    raised = time.time() - 100
    await gw.send("alarm", [smoke("9-51e2", raised)])
    await gw.send("alarm", [smoke("9-51e2", raised + 60, type="alert.escalated", status="escalated", step=1,
                                  groups=("property-office", "volunteers"), raised_at=raised, next_in=240)])
    gw.close()


@pytest.mark.parametrize("lang", ["en", "zh-CN"])
async def test_every_page_is_accessible_and_photographed(centre, browser, broker, lang):
    await scene(broker)
    short = lang.split("-")[0]
    for name, (who, mark) in PAGES.items():
        for size in ("desktop", "phone"):
            ctx, page = await person(browser, centre.url, who, phone=size == "phone", lang=lang)
            try:
                await page.goto(f"/{name}")
                if mark:
                    await rendered(page, mark)
                drawn = ".tile" if name == "farm" else f'.alert[data-key="{COMMUNITY}/{CGW}/9-51e2"]'
                await page.locator(drawn).first.wait_for()
                if name == "desk":
                    await page.get_by_role("button", name="Timeline" if lang == "en" else "时间线").first.click()
                    await page.locator(".timeline li").first.wait_for()
                if name == "farm" and size == "phone":
                    await page.locator(".tile-button").first.click()
                    await page.locator("#chart svg.chart polyline").wait_for()
                assert await serious(page) == [], f"{name} {lang} {size}"
                await shot(page, f"{name}-{short}-{size}")
            finally:
                await ctx.close()
    ctx = await browser.new_context(base_url=centre.url, **(DESKTOP if lang == "en" else PHONE), locale=lang)
    try:
        page = await ctx.new_page()
        await ctx.add_init_script(f"localStorage.setItem('canopy.lang', '{lang}')")
        await page.goto("/login")
        await page.locator("#login-user").wait_for()
        assert await serious(page) == [], f"login {lang}"
        await shot(page, f"login-{short}-{'desktop' if lang == 'en' else 'phone'}")
        ctx2, forbidden = await person(browser, centre.url, "fixer")
        await forbidden.goto("/farm")
        assert await serious(forbidden) == [], "403 page"
        await ctx2.close()
    finally:
        await ctx.close()
