#!/usr/bin/env python3
"""The console in Debian's chromium against a real centre (SQLite, uvicorn, ingest from mosquitto).
Prints exactly one JSON line (progress on stderr).

``render_ms``: navigation start -> the duty desk's own ``alerts-rendered`` mark (the first screen of
alerts drawn, most severe first), with 10,000 alerts stored and open at the desk's site (the worst
case: all of them open; the API sends them all, the page draws the first 200 and counts the rest).
The median of ``--rounds`` fresh page loads; ``render_ms_best`` the best.  Target < 1,000.

``ack_to_screen_ms``: a gateway's ``alert.acknowledged`` record published to the broker -> every open
page (``--pages`` duty desks, each its own browser context and live stream) showing "Acknowledged by"
on that alert, with 200 open alerts (raised through the broker, so ingest folded each view).  Each page
stamps the moment with a MutationObserver (performance.timeOrigin + now, the same clock as the
publisher's); the slowest page counts.  Median of ``--rounds`` acks.  Target < 200.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402

from centre.store import schema  # noqa: E402
from centre.store.engine import write_transaction  # noqa: E402
from centre.store.migrate import upgrade_async  # noqa: E402
from centre.web import service  # noqa: E402
from tests.centre.console.support import (  # noqa: E402
    CGW, COMMUNITY, ConsoleCentre, Gateway, chromium, make_people, person, rendered, smoke, with_console,
)
from tests.support import Mosquitto  # noqa: E402

SEVERITIES = ("critical",) * 5 + ("warning",) * 30 + ("info",) * 65  # per hundred


def log(*a) -> None:
    print("[bench console]", *a, file=sys.stderr, flush=True)


async def store_alerts(engine, n: int, gateways: int = 20) -> None:
    now = time.time()
    rows = [{"site": COMMUNITY, "gateway": f"gw-{i % gateways:02d}", "alert": f"{i}-{i % 65536:04x}", "status": "raised",
             "rule": "smoke-alarm", "class": "fire", "severity": SEVERITIES[i % 100], "subject": f"dev-{i}",
             "device": f"dev-{i}", "location": {"site": COMMUNITY, "building": str(i % 12), "unit": str(i % 4),
                                                "household": f"{i % 12}0{i % 9}"},
             "groups": ["property-office"], "step": 0, "next_escalation_at": now + 60 + i % 600,
             "raised_at": now - 86400 + i * 8, "message": f"alarm {i}", "lang": "en", "updated_at": now - 86400 + i * 8}
            for i in range(n)]
    gws = [{"site": COMMUNITY, "gateway": f"gw-{k:02d}", "status": "online", "status_since": now - 3600,
            "first_seen": now - 86400, "last_seen": now, "meta": {"groups": {}, "chains": {}}} for k in range(gateways)]
    async with write_transaction(engine) as conn:
        await conn.execute(sa.insert(schema.gateways), gws)
        for i in range(0, n, 2000):
            await conn.execute(sa.insert(schema.alerts), rows[i:i + 2000])


async def measure_render(tmp: Path, n_alerts: int, rounds: int) -> list[float]:
    url = f"sqlite:///{tmp / 'render.sqlite'}"
    await upgrade_async(url)
    centre = ConsoleCentre(url)
    await make_people(centre.engine)
    await store_alerts(centre.engine, n_alerts)
    await centre.start()
    out = []
    try:
        async with chromium() as browser:
            ctx, page = await person(browser, centre.url, "duty")
            await page.close()
            for r in range(rounds + 1):  # the first load warms the browser's and the server's caches: not counted
                page = await ctx.new_page()
                await page.goto("/desk")
                out.append(await rendered(page, timeout=60))
                shown = await page.locator(".alert").count()
                await rendered(page, "alerts-complete", timeout=60)  # every open alert read: the centre is quiet again
                log(f"render round {r}: {out[-1]:.0f} ms ({shown} cards drawn of {n_alerts}){' (warm-up)' if not r else ''}")
                await page.close()
            await ctx.close()
    finally:
        await centre.stop()
    return out[1:]


WATCH = """([key, start]) => new Promise((resolve) => {
  window.__seen = null;
  const done = () => {
    const s = document.querySelector(`[data-key="${key}"] .state`);
    if (s && s.textContent.includes("Acknowledged") && window.__seen === null) window.__seen = performance.timeOrigin + performance.now();
  };
  new MutationObserver(done).observe(document.getElementById("alert-list"), { subtree: true, childList: true, characterData: true });
  resolve(true);
})"""


async def measure_ack(tmp: Path, n_open: int, n_pages: int, rounds: int) -> list[float]:
    url = f"sqlite:///{tmp / 'ack.sqlite'}"
    await upgrade_async(url)
    broker = Mosquitto(tmp).start()
    centre = ConsoleCentre(url, broker.port)
    await make_people(centre.engine)
    gw = Gateway(broker.port, COMMUNITY, CGW)
    out = []
    try:
        await centre.start()
        t0 = time.time() - 3600
        raises = [smoke(f"{i}-b{i % 4096:03x}", t0 + i, groups=("property-office",), next_in=7200) for i in range(n_open)]
        for i in range(0, n_open, 50):
            await gw.send("alarm", raises[i:i + 50])
        async with chromium() as browser:
            pages = []
            for _ in range(n_pages):
                _, page = await person(browser, centre.url, "duty")
                await page.goto("/desk")
                pages.append(page)
            for page in pages:
                await rendered(page, timeout=60)
                await page.locator(".alert").nth(min(n_open, 200) - 1).wait_for(timeout=30000)
            for r in range(rounds):
                rec = raises[r]
                key = f"{COMMUNITY}/{CGW}/{rec['alert']}"
                for page in pages:
                    await page.evaluate(WATCH, [key, 0])
                sent = time.time() * 1000
                ack = smoke(rec["alert"], time.time(), type="alert.acknowledged", status="acknowledged", by="duty",
                            note="bench", raised_at=rec["raised_at"], next_in=None)
                await gw.send("event", [ack])
                seen = []
                deadline = time.monotonic() + 10
                while len(seen) < len(pages) and time.monotonic() < deadline:
                    seen = [s for s in [await p.evaluate("window.__seen") for p in pages] if s]
                    await asyncio.sleep(0.02)
                assert len(seen) == len(pages), "an ack never showed on every page"
                out.append(max(seen) - sent)
                log(f"ack round {r + 1}: {out[-1]:.0f} ms to {len(pages)} pages (fastest {min(seen) - sent:.0f} ms)")
    finally:
        gw.close()
        await centre.stop()
        broker.stop()
    return out


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--alerts", type=int, default=10_000, help="alerts stored for render_ms")
    ap.add_argument("--open", type=int, default=200, help="open alerts for ack_to_screen_ms")
    ap.add_argument("--pages", type=int, default=4, help="open duty desks that must all show the ack")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    service.create_app = with_console(service.create_app)
    with tempfile.TemporaryDirectory(prefix="bench-console-") as d:
        tmp = Path(d)
        render = await measure_render(tmp, args.alerts, args.rounds)
        ack = await measure_ack(tmp, args.open, args.pages, args.rounds)
    print(json.dumps({
        "render_ms": round(statistics.median(render), 1), "render_ms_best": round(min(render), 1),
        "alerts_stored": args.alerts, "ack_to_screen_ms": round(statistics.median(ack), 1),
        "ack_to_screen_ms_max": round(max(ack), 1), "open_alerts": args.open, "pages": args.pages,
        "rounds": args.rounds, "targets": {"render_ms": 1000, "ack_to_screen_ms": 200}}), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
