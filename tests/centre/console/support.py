"""Test parts for the console: a real centre (its web server with the console mounted, and ingest from a
real mosquitto) on a free loopback port, a community and a farm in its store, a gateway-like publisher,
and Debian's chromium driven by Playwright with a recorder of the page's sound and notification calls.

The store is filled through the tables ingest writes; what happens *live* in a test (a smoke alarm,
an escalation, a command's result) comes through the broker and the real ingest, as from a gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import orjson
import sqlalchemy as sa
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from centre.config import CentreConfig
from centre.console.routes import mount
from centre.people import passwords, users
from centre.people.roles import Grant, parse_scope
from centre.service import Centre
from centre.store import schema
from centre.store.engine import create_engine, write_transaction
from tests.centre.support import Publisher
from tests.support import free_port

CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(__file__).parent / "screenshots"
DESKTOP = {"viewport": {"width": 1440, "height": 900}}
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}
PASSWORD = "correct horse battery"
EPOCH = "00112233445566ff"
COMMUNITY, CGW = "sunny-court", "community-gw-01"
FARM, FGW = "green-valley", "farm-gw-01"

# the page's calls, recorded before any of its scripts run: window.__canopy.sounds / .notes
RECORDER = """
window.__canopy = { sounds: 0, notes: [] };
(() => {
  const start = AudioScheduledSourceNode.prototype.start;
  AudioScheduledSourceNode.prototype.start = function (...a) { window.__canopy.sounds += 1; return start.apply(this, a); };
  const Real = window.Notification;
  if (!Real) return;
  function Recorded(title, opts) {
    window.__canopy.notes.push({ title, body: opts && opts.body, tag: opts && opts.tag });
    return new Real(title, opts);
  }
  Object.defineProperty(Recorded, "permission", { get: () => Real.permission });
  Recorded.requestPermission = (...a) => Real.requestPermission(...a);
  window.Notification = Recorded;
})();
"""
SOUND_BLOCKED = """
Object.defineProperty(AudioContext.prototype, "state", { get: () => "suspended" });
AudioContext.prototype.resume = () => Promise.resolve();
"""

PEOPLE = {  # name: (role, site, scopes, language)
    "duty": ("duty_desk", COMMUNITY, (), "en"),
    "night": ("duty_desk", COMMUNITY, (), "zh-CN"),
    "wang": ("volunteer", COMMUNITY, ("group:volunteers",), "zh-CN"),
    "zhang": ("farmer", FARM, (), "zh-CN"),
    "fixer": ("installer", FARM, (), "en"),
}


def with_console(create_app):
    """The web service's create_app, with the console mounted unless the app does it already."""
    def make(web):
        app = create_app(web)
        if not any(getattr(r, "path", None) == "/desk" for r in app.routes):
            mount(app)
        return app
    return make


class ConsoleCentre:
    """``centre.web.service.run`` (real uvicorn) and, with a broker, the real ingest -- one Centre, one hub."""

    def __init__(self, db_url: str, broker_port: int | None = None, port: int | None = None):
        self.port = port or free_port()
        cfg = {"instance": "c1", "database": {"url": db_url}, "http": {"host": "127.0.0.1", "port": self.port},
               "broker": {"host": "127.0.0.1", "port": broker_port or 1, "backoff_initial": 0.1, "backoff_max": 0.5,
                          "session_expiry": 600}}
        self.cfg = CentreConfig.model_validate(cfg)
        self.engine = create_engine(db_url)
        self.centre = Centre(self.cfg, self.engine)
        self.broker_port = broker_port
        self.web_task: asyncio.Task | None = None
        self.ingest_task: asyncio.Task | None = None
        self._stop = asyncio.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> "ConsoleCentre":
        if self.broker_port:
            from centre.ingest.service import Ingest
            ingest = Ingest(self.centre)
            self.ingest_task = asyncio.create_task(ingest.run(self._stop))
            await until_true(lambda: ingest.connected, 10, "the centre's ingest to connect")
        await self.start_web()
        return self

    async def start_web(self) -> None:
        from centre.web import service
        self.centre.components.pop("web.url", None)
        self.web_task = asyncio.create_task(service.run(self.centre))
        await until_true(lambda: "web.url" in self.centre.components or self.web_task.done(), 10, "the web server")
        if self.web_task.done():
            self.web_task.result()

    async def stop_web(self) -> None:
        self.web_task.cancel()
        await asyncio.gather(self.web_task, return_exceptions=True)

    async def stop(self) -> None:
        self._stop.set()
        for task in (self.web_task, self.ingest_task):
            if task is not None:
                task.cancel()
        await asyncio.gather(*(t for t in (self.web_task, self.ingest_task) if t), return_exceptions=True)
        await self.engine.dispose()


async def until_true(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


# ---- the store: people, places, what happened before the test ---------------------------------------------

async def make_people(engine) -> None:
    pw = await passwords.hash_password(PASSWORD)
    for name, (role, site, scopes, lang) in PEOPLE.items():
        grants = [Grant(role, site, *parse_scope(s)) for s in scopes] or [Grant(role, site)]
        await users.add_user(engine, name, pw, grants, language=lang, display_name=name.capitalize(),
                             must_change_password=False)


def labels(en: str, zh: str) -> dict:
    return {"en": en, "zh-CN": zh}


COMMUNITY_META = {
    "v": 2, "site": COMMUNITY, "gateway": CGW, "version": "3f9a0c1d2e4b5a67", "languages": ["zh-CN", "en"],
    "devices": {
        "smoke-shed": {"location": {"building": "7", "zone": "e-bike shed"}, "labels": labels("shed smoke detector", "车棚烟感")},
        "smoke-hall": {"location": {"building": "3", "unit": "1"}, "labels": labels("hall smoke detector", "3栋门厅烟感")},
        "meter-101": {"location": {"building": "3", "unit": "1", "household": "101", "grid": "G7"},
                      "labels": labels("water meter of 101", "101室水表")},
        "door-102": {"location": {"building": "3", "unit": "1", "household": "102", "grid": "G7"},
                     "labels": labels("door of 102", "102室门锁")}},
    "groups": {"property-office": {"recipients": ["duty"], "labels": labels("Property office", "物业")},
               "volunteers": {"recipients": ["wang"], "labels": labels("Building volunteers", "楼栋志愿者")},
               "grid-leader": {"recipients": ["leader"], "labels": labels("Grid leader", "网格长")}},
    "chains": {"fire": [{"group": "property-office", "after_s": 0}, {"group": "volunteers", "after_s": 120},
                        {"group": "grid-leader", "after_s": 300}],
               "welfare": [{"group": "property-office", "after_s": 0}, {"group": "volunteers", "after_s": 900}]},
    "households": {"101": {"location": {"building": "3", "unit": "1", "grid": "G7"}, "labels": labels("the Li household", "李家"),
                           "devices": ["meter-101"]}},
}
FARM_META = {
    "v": 2, "site": FARM, "gateway": FGW, "version": "9a0c1d2e4b5a6731", "languages": ["zh-CN", "en"],
    "devices": {"soil-2": {"labels": labels("probe north", "北区探头"), "profile": "soil"},
                "valves": {"labels": labels("valve box", "阀门箱")},
                "weather": {"labels": labels("weather station", "气象站")}},
    "profiles": {"soil": {"points": {"moisture": {"unit": "%", "labels": labels("Soil moisture", "土壤湿度")},
                                     "temperature": {"unit": "°C", "labels": labels("Soil temperature", "土壤温度")}}}},
    "zones": {"2": {"labels": labels("North field", "北田"), "devices": ["soil-2"], "valves": ["zone-2"]}},
    "valves": {"zone-2": {"device": "valves", "point": "zone_2", "zone": 2, "max_run_s": 1800,
                          "labels": labels("North valve", "北区阀门"), "actions": ["irrigate", "close"]}},
}


def smoke_message(building: str = "7", place: str = "e-bike shed") -> str:
    return f"【紧急】{building}栋{place}（车棚烟感）检测到烟雾或燃气，请立即到场处置，如有明火请拨打119"


async def seed_places(engine, now: float | None = None) -> None:
    """Two online gateways with meta and state, a welfare warning, readings for 7 days, the timeline's records."""
    now = time.time() if now is None else now
    g = schema.gateways
    state = {"v": 2, "site": FARM, "gateway": FGW, "status": "online", "ts": now - 5,
             "commands": {"valves": {"zone-2": {"open": False}}}}
    async with write_transaction(engine) as conn:
        await conn.execute(sa.insert(g), [
            {"site": COMMUNITY, "gateway": CGW, "status": "online", "status_since": now - 7200, "version": "0.2.0",
             "protocol": 2, "capabilities": ["replay", "meta"], "state": {"status": "online"}, "meta": COMMUNITY_META,
             "first_seen": now - 86400 * 30, "last_seen": now - 3, "last_record_ts": now - 3, "state_ts": now - 5,
             "reason": None, "boot": 3, "meta_version": COMMUNITY_META["version"]},
            {"site": FARM, "gateway": FGW, "status": "online", "status_since": now - 7200, "version": "0.2.0",
             "protocol": 2, "capabilities": ["replay", "meta"], "state": state, "meta": FARM_META,
             "first_seen": now - 86400 * 30, "last_seen": now - 2, "last_record_ts": now - 2, "state_ts": now - 5,
             "reason": None, "boot": 1, "meta_version": FARM_META["version"]}])
        await conn.execute(sa.insert(schema.alerts), [{
            "site": COMMUNITY, "gateway": CGW, "alert": "7-4a1c", "status": "raised", "rule": "no-water-101",
            "class": "welfare", "severity": "warning", "subject": "101", "device": "meter-101",
            "location": {"site": COMMUNITY, "building": "3", "unit": "1", "household": "101", "grid": "G7"},
            "groups": ["property-office"], "step": 0, "next_escalation_at": now + 600, "raised_at": now - 300,
            "message": "3栋1单元101室 网格G7：已12小时没有用水，请上门探访", "lang": "zh", "updated_at": now - 300}])
        await conn.execute(sa.insert(schema.telemetry), readings_rows(now))
        await conn.execute(sa.insert(schema.telemetry_hourly), hourly_rows(now))


def readings_rows(now: float) -> list[dict]:
    rows, seq = [], 0
    for i in range(96):  # 24 h, every 15 min
        ts = now - 86400 + i * 900
        for point, value, unit in (("moisture", 31 - 8 * (i / 96) + (2 if 40 < i < 44 else 0), "%"),
                                   ("temperature", 16 + 6 * abs(((i % 96) - 56) / 56), "°C")):
            seq += 1
            rows.append({"site": FARM, "gateway": FGW, "epoch": EPOCH, "seq": seq, "ts": ts, "device": "soil-2",
                         "point": point, "value": round(value, 2), "unit": unit, "received_at": ts + 1,
                         "text": None, "invalid": None})
    for point, value, text, unit in (("zone_2", 0.0, "false", None), ("rain", 0.0, "false", None),
                                     ("air_temperature", 21.4, None, "°C")):
        seq += 1
        rows.append({"site": FARM, "gateway": FGW, "epoch": EPOCH, "seq": seq, "ts": now - 60,
                     "device": "valves" if point == "zone_2" else "weather", "point": point, "value": value, "text": text,
                     "unit": unit, "received_at": now - 59, "invalid": None})
    return rows


def hourly_rows(now: float) -> list[dict]:
    hour = int(now // 3600 * 3600)
    rows = []
    for k in range(7 * 24):
        mean = 24 + 6 * ((k % 24) / 24) - k * 0.02
        rows.append({"site": FARM, "gateway": FGW, "device": "soil-2", "point": "moisture", "hour": hour - 3600 * k,
                     "count": 4, "total": mean * 4, "min": mean - 1.5, "max": mean + 1.5, "unit": "%"})
    return rows


# ---- what a gateway sends, live ---------------------------------------------------------------------------

class Gateway:
    """A gateway's uplink for the tests: lifecycle records, command results and readings, through mosquitto."""

    def __init__(self, broker_port: int, site: str, gateway: str):
        self.pub = Publisher(broker_port, site=site, gateway=gateway, epoch=EPOCH)
        self.seq = {"alarm": 1000, "event": 1000, "telemetry": 100000}

    async def send(self, lane: str, records: list[dict]) -> None:
        for r in records:
            self.seq[lane] += 1
            r["seq"] = self.seq[lane]
        if lane == "telemetry":
            self.pub.telemetry(records)
        else:
            self.pub.events(lane, records, topic=self.pub.topics.cmd_result if records[0]["type"] == "cmd.result" else None)
        await asyncio.to_thread(self.pub.flush)

    def close(self) -> None:
        self.pub.close()


def smoke(alert: str, ts: float, *, type: str = "alert.raised", status: str = "raised", step: int = 0,
          groups=("property-office",), next_in: float | None = 120, **extra) -> dict:
    """A smoke alarm's lifecycle record as the community gateway words it (docs/alerts.md)."""
    rec = {"ts": ts, "type": type, "alert": alert, "rule": "smoke-alarm", "class": "fire", "severity": "critical",
           "subject": "smoke-shed", "device": "smoke-shed",
           "location": {"site": COMMUNITY, "building": "7", "zone": "e-bike shed"}, "raised_at": extra.pop("raised_at", ts),
           "groups": list(groups), "status": status, "step": step, "group": groups[-1], "recipients": [],
           "next_escalation_at": ts + next_in if next_in else None, "message": smoke_message(), "lang": "zh",
           "incident": "smoke", "message_key": "incident:smoke",
           "texts": {"en": "[CRITICAL] Smoke or gas detected in the e-bike shed, building 7 (shed smoke detector): check at once",
                     "zh-CN": smoke_message()}}
    rec.update(extra)
    return rec


# ---- the browser ---------------------------------------------------------------------------------------------

@contextlib.asynccontextmanager
async def chromium(*args: str):
    """Debian's chromium (never a downloaded one), headless."""
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", *args])
        try:
            yield browser
        finally:
            await browser.close()


async def person(browser: Browser, base: str, name: str, *, phone: bool = False, lang: str | None = None,
                 notifications: bool = True, init: tuple[str, ...] = ()) -> tuple[BrowserContext, Page]:
    """A logged-in person's browser context (the recorder installed) and a blank page."""
    ctx = await browser.new_context(base_url=base, **(PHONE if phone else DESKTOP), locale="en-US")
    if notifications:
        await ctx.grant_permissions(["notifications"], origin=base)
    for script in (RECORDER, *init):
        await ctx.add_init_script(script)
    if lang:
        await ctx.add_init_script(f"localStorage.setItem('canopy.lang.{name}', {orjson.dumps(lang).decode()});")
    r = await ctx.request.post(f"{base}/api/login", data={"username": name, "password": PASSWORD})
    assert r.ok, await r.text()
    return ctx, await ctx.new_page()


async def shot(page: Page, name: str) -> Path:
    """A full-page PNG under screenshots/; the sticky banners are laid out in place for it (a full-page
    capture would otherwise draw them where the last scroll left them)."""
    SHOTS.mkdir(exist_ok=True)
    path = SHOTS / f"{name}.png"
    unstick = "(on) => { const b = document.getElementById('banners'); if (b) b.style.position = on ? 'static' : ''; }"
    await page.evaluate(unstick, True)
    await page.screenshot(path=str(path), full_page=True)
    await page.evaluate(unstick, False)
    return path


async def recorded(page: Page) -> dict:
    return await page.evaluate("window.__canopy")


async def until_page(page: Page, expression: str, timeout: float = 5.0):
    """Poll a JavaScript expression until it is truthy (page.wait_for_function evals, which the console's CSP
    forbids -- as it should)."""
    deadline = time.monotonic() + timeout
    while True:
        value = await page.evaluate(expression)
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {expression}"
        await asyncio.sleep(0.05)


async def rendered(page: Page, mark: str = "alerts-rendered", timeout: float = 10.0) -> float:
    """Wait for the page's own mark; returns its time since navigation (ms)."""
    return await until_page(page, f"performance.getEntriesByName({mark!r})[0]?.startTime", timeout)
