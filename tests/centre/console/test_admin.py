"""The installer/admin page in Debian's chromium: a gateway that goes offline through the broker is flagged
on red (first, and in a banner); an admin adds a person and sees the one-time password once, disables
someone, reads the routing and the issuer keys with their YAML; an installer sees only gateway health;
the other roles get the 403 page (audited).  Both languages, desktop and phone, axe-clean."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa
import yaml
from axe_playwright_python.async_playwright import Axe

from centre.acting.service import build
from centre.fullconfig import FullConfig
from centre.people import passwords, users
from centre.people.roles import Grant
from centre.store import schema
from tests.centre.console.support import CGW, COMMUNITY, FARM, PASSWORD, person, rendered, shot, until_page
from tests.centre.support import Publisher

SHED = "shed-gw-02"
axe = Axe()


async def serious(page) -> list[str]:
    results = await axe.run(page)
    return [f"{v['id']} ({v['impact']}): {v['help']} -- {[n['target'] for n in v['nodes']][:3]}"
            for v in results.response["violations"] if v["impact"] in ("serious", "critical")]


@pytest.fixture
async def admin_centre(centre, tmp_path):
    """The console centre with an administrator, and its real acting component (routing config, a key for one site)."""
    await users.add_user(centre.engine, "root", await passwords.hash_password(PASSWORD), [Grant("admin")],
                         display_name="Root", must_change_password=False)
    centre.centre.cfg = FullConfig.model_validate({
        **centre.cfg.model_dump(exclude={"keys_dir"}), "keys_dir": str(tmp_path / "keys"),
        "routing": {"groups": {"property-office": {"users": ["duty"], "channels": ["console", "email"]},
                               f"{COMMUNITY}/volunteers": {"channels": ["console"]}, "*": {}},
                    "email": {"host": "smtp.example.net", "from_address": "canopy@example.net"},
                    "blind": {"after": 300, "groups": ["property-office"]}}})
    build(centre.centre).keys.generate(COMMUNITY)
    return centre


async def shed(broker_port: int, status: str, gateway: str = SHED, **extra) -> None:
    """A third gateway's retained ``…/state`` through mosquitto and the real ingest."""
    pub = Publisher(broker_port, site=COMMUNITY, gateway=gateway)
    pub.state(status, **extra)
    await asyncio.to_thread(pub.flush)
    pub.close()


HEALTH = {"devices": {"smoke-shed": {"bus": "b", "status": "ok", "polls": 9, "failures": 0, "last_ok": 1.0},
                      "meter-9": {"bus": "b", "status": "timeout", "polls": 9, "failures": 9, "last_ok": None,
                                  "detail": "no answer from unit 9 in 0.5 s"}},
          "outbox": {"alarm": {"pending": 0}, "event": {"pending": 3}, "telemetry": {"pending": 120},
                     "degraded": False, "last_error": None},
          "uplink": {"connected": True, "last_error": None}}


async def status_of(engine, gateway: str) -> str | None:
    async with engine.connect() as conn:
        return (await conn.execute(sa.select(schema.gateways.c.status).where(schema.gateways.c.gateway == gateway))).scalar()


async def test_an_admin_sees_an_offline_gateway_adds_a_person_and_reads_the_keys(admin_centre, browser, broker):
    c = admin_centre
    await shed(broker.port, "online", version="0.2.1", **HEALTH)
    ctx, page = await person(browser, c.url, "root")
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), asyncio.ensure_future(d.accept())))
    try:
        await page.goto("/admin")
        await rendered(page, "admin-rendered")
        card = page.locator(f'.admin-gw[data-gw="{COMMUNITY}/{SHED}"]')
        await card.wait_for()
        assert "123 records waiting" in await card.inner_text() and "meter-9: no answer" in await card.inner_text()
        # the gateway dies: its will arrives through the broker; the page flags it live, first, on red
        await shed(broker.port, "offline", reason="connection lost")
        await page.locator(f'.admin-gw.trouble[data-gw="{COMMUNITY}/{SHED}"]').wait_for(timeout=5000)
        first = page.locator(".admin-gw").first
        assert await first.get_attribute("data-gw") == f"{COMMUNITY}/{SHED}"
        assert "OFFLINE since" in await first.inner_text() and "connection lost" in await first.inner_text()
        assert SHED in await page.locator("#banner-sites").inner_text()
        assert await status_of(c.engine, SHED) == "offline"
        # add a person: the one-time password is shown once, and it works (then must be changed)
        await page.fill("#nu-name", "li")
        await page.fill("#nu-display", "Li Na")
        await page.select_option("#nu-role", "volunteer")
        await page.fill("#nu-site", COMMUNITY)
        await page.select_option("#nu-kind", "group")
        await page.fill("#nu-scope", "volunteers")
        await page.get_by_role("button", name="Add and make a one-time password").click()
        otp = (await page.locator("#otp-value").inner_text()).strip()
        assert len(otp) >= 16
        li = page.locator('.admin-user[data-user="li"]')
        await li.wait_for()
        assert "Volunteer · site sunny-court · group volunteers".lower() in (await li.inner_text()).lower()
        await shot(page, "admin-en-desktop-added")
        ctx2, again = await person(browser, c.url, "root")  # a fresh page never shows the password again
        await again.goto("/admin")
        await rendered(again, "admin-rendered")
        assert await again.locator("#otp-value").count() == 0
        r = await ctx2.request.post(f"{c.url}/api/login", data={"username": "li", "password": otp})
        assert r.ok and (await r.json())["must_change_password"]  # (this context is li's now)
        await ctx2.close()
        # disable a volunteer (confirmed), then the keys and the routing
        await page.locator('.admin-user[data-user="wang"]').get_by_role("button", name="Disable").click()
        await page.locator('.admin-user.admin-disabled[data-user="wang"]').wait_for()
        assert dialogs and "Disable wang?" in dialogs[-1]
        # a role the centre refuses: the dialog says why, in words
        await page.locator('.admin-user[data-user="duty"]').get_by_role("button", name="Give a role").click()
        await page.select_option("#ng-kind", "zone")
        await page.fill("#ng-scope", "north field")
        await page.get_by_role("button", name="Give this role").click()
        await until_page(page, "document.getElementById('grant-status').textContent.includes('is not an id')")
        await page.get_by_role("button", name="Cancel").click()
        async with c.engine.connect() as conn:
            actions = [(r.actor, r.action, r.target) for r in await conn.execute(
                sa.select(schema.audit).where(schema.audit.c.action.like("users.%")).order_by(schema.audit.c.id))]
        assert actions == [("root", "users.add", "li"), ("root", "users.disable", "wang")]
        keys = page.locator("#admin-keys")
        snippet = await keys.locator(f'[data-site="{COMMUNITY}"] .admin-snippet').inner_text()
        key = c.centre.components["acting"].keys.keys(COMMUNITY)[0]
        assert yaml.safe_load(snippet)["commands"]["issuers"]["centre-1"]["public_key"] == key.public_key
        assert key.public_key in await keys.inner_text()
        assert f"canopy-centre keys gen --site {FARM}" in await keys.inner_text()
        assert "property-office" in await page.locator("#admin-routing").inner_text()
        assert await serious(page) == []
        await shot(page, "admin-en-desktop-changed")
    finally:
        await ctx.close()


@pytest.mark.parametrize("lang", ["en", "zh-CN"])
async def test_the_admin_page_in_both_languages_on_a_desk_and_a_phone(admin_centre, browser, broker, lang):
    await shed(broker.port, "offline", gateway="pump-gw-03", reason="connection lost")
    await shed(broker.port, "online", version="0.2.1", **HEALTH)
    for size in ("desktop", "phone"):
        ctx, page = await person(browser, admin_centre.url, "root", phone=size == "phone", lang=lang)
        try:
            await page.goto("/admin")
            await rendered(page, "admin-rendered")
            await page.locator(f'.admin-gw.trouble[data-gw="{COMMUNITY}/pump-gw-03"]').wait_for()
            await page.locator(f'.admin-gw.admin-warn[data-gw="{COMMUNITY}/{SHED}"]').wait_for()
            await page.locator(".admin-key").first.wait_for()
            if lang == "zh-CN":
                assert "离线" in await page.locator(".admin-gw.trouble").first.inner_text()
                assert await page.locator("#people-title").inner_text() == "人员与角色"
            width = await page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
            assert width <= 0, f"the page scrolls sideways by {width}px"
            assert await serious(page) == [], f"{lang} {size}"
            await shot(page, f"admin-{lang.split('-')[0]}-{size}")
        finally:
            await ctx.close()


async def test_an_installer_sees_gateway_health_only_and_other_roles_get_the_403_page(admin_centre, browser):
    c = admin_centre
    ctx, page = await person(browser, c.url, "fixer", phone=True)
    try:
        await page.goto("/")
        await page.wait_for_url(f"{c.url}/admin")  # an installer's home
        await rendered(page, "admin-rendered")
        await page.locator(f'.admin-gw[data-gw="{FARM}/farm-gw-01"]').wait_for()
        assert await page.locator(f'.admin-gw[data-gw="{COMMUNITY}/{CGW}"]').count() == 0
        for hidden in ("#people", "#routing", "#keys"):
            assert await page.locator(hidden).is_hidden(), hidden
        assert await until_page(page, "document.querySelectorAll('#admin-nav-list li').length === 1")
    finally:
        await ctx.close()
    for who in ("zhang", "wang", "duty"):
        ctx, page = await person(browser, c.url, who)
        try:
            answer = await page.goto("/admin")
            assert answer.status == 403
            for path in ("/api/admin/gateways", "/api/admin/users", "/api/admin/keys", "/api/admin/routing"):
                assert (await ctx.request.get(f"{c.url}{path}")).status == 403
        finally:
            await ctx.close()
    async with c.engine.connect() as conn:
        rows = [(r.actor, r.action, r.target) for r in await conn.execute(
            sa.select(schema.audit).where(schema.audit.c.outcome == "denied").order_by(schema.audit.c.id))]
    for who in ("zhang", "wang", "duty"):
        assert (who, "console.open", "/admin") in rows
        assert sum(1 for r in rows if r[0] == who and r[1] != "console.open") == 4
