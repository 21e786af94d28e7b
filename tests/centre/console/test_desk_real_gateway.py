"""Issue 14 (c) with the real gateway daemon, not a stand-in: smoke at the simulated e-bike shed is on the duty
desk; the gateway goes away -- stopped cleanly, killed with ``kill -9`` (the broker's last will tells), or frozen
so that only the broker's keepalive timeout brings the will -- and the desk shows the site offline within the
bound; an ack made meanwhile waits ("pending"), and once the daemon is restarted it is delivered, applied by the
gateway (its own ``alert.acknowledged`` names the person and the centre's issuer) and shown on the desk as
acknowledged by that person."""

from __future__ import annotations

import time

import pytest

from tests.centre.console.real_gateway import (
    GW, KEEPALIVE, acting, bare_centre, centre_keys, community_site, go_away, gone_for_good,
)
from tests.centre.console.support import COMMUNITY, person, rendered, shot, until_page
from tests.centre.console.test_desk import start_shift
from tests.centre.console.test_pages import serious
from tests.gateway.alerts.support import alert_records, online
from tests.support import until

# From the signal to the desk's red offline row.  The path is the same each time: the gateway's offline state on
# …/state -> ingest -> hub -> the page's stream -> the desk re-reads /api/gateways (coalesced 200 ms), well under
# a second here; SHOWN allows 5 s for a shared machine.  What differs is when the offline state exists:
# "stop": the daemon publishes it itself before it exits; "kill9": the kernel closes the dead process's socket
# and the broker publishes the will at once; "freeze" (SIGSTOP: a power cut, a pulled cable -- the connection
# stays open): only the broker's keepalive timeout brings the will, once nothing came for more than
# 1.5 x keepalive (MQTT 5 3.1.2.10) -- and mosquitto 2.0 looks for such clients only every 5-6 s (keepalive.c),
# so 7.5 s to about 14 s after the gateway's last packet.  None of them waits for the centre's blind/silent
# limits (routing.blind.after, the desk's 5 min "silent"): those are for a gateway that says nothing at all,
# and a will is a statement.
SHOWN = 5.0
BROKER_CHECK = 6.0
OFFLINE_WITHIN = {"stop": SHOWN, "kill9": SHOWN, "freeze": 1.5 * KEEPALIVE + BROKER_CHECK + SHOWN}
REASON = {"stop": "stopped", "kill9": "connection lost", "freeze": "connection lost"}


@pytest.mark.parametrize("how", ["stop", "kill9", "freeze"])
async def test_the_site_goes_offline_an_ack_waits_and_is_applied_by_the_restarted_gateway(
        how, tmp_path, broker, community_sim, gateway_factory, subscriber_factory, browser):
    keys = centre_keys(tmp_path)
    cfg = community_site(tmp_path, sim_port=community_sim.port, broker_port=broker.port, keys=keys)
    sub = subscriber_factory(broker.port)
    centre = await bare_centre(tmp_path, broker.port)
    ctx = None
    try:
        async with acting(centre, keys):
            gw = gateway_factory(cfg)
            ctx, page = await person(browser, centre.url, "duty")
            await page.goto("/desk")
            await rendered(page)
            await start_shift(page)
            row = page.locator(".gw", has_text=f"{COMMUNITY} / {GW}")
            await page.locator(".gw.ok", has_text=GW).wait_for(timeout=20000)
            await until(lambda: online(sub, "smoke-shed", "sounder"), 20, what="the gateway polling its detectors")

            # 1-2. smoke at the e-bike shed: the alert is on the desk, with its place
            community_sim.device("smoke-shed").model.trigger_smoke()
            raised = (await until(lambda: alert_records(sub, "alert.raised", device="smoke-shed"), 5,
                                  what="the gateway's alarm"))[0]
            card = page.locator(f'.alert[data-key="{COMMUNITY}/{GW}/{raised["alert"]}"]')
            await card.wait_for(timeout=3000)
            text = await card.inner_text()
            assert "CRITICAL" in text and "Building 3" in text and "e-bike" in text, text
            assert await card.locator('[data-action="ack"]').count() == 1

            # 3. the gateway goes away: the site offline on the desk, loud, within the bound
            gone_at = time.monotonic()
            await go_away(gw, how)
            banner = page.locator("#banner-sites")
            await banner.wait_for(timeout=OFFLINE_WITHIN[how] * 1000)
            await page.locator(".gw.trouble", has_text=GW).wait_for(timeout=1000)
            took = time.monotonic() - gone_at
            assert took < OFFLINE_WITHIN[how], took
            if how == "freeze":  # the will waited for the keepalive timeout: nothing else told the centre
                assert took >= KEEPALIVE, took
            print(f"\n{how}: offline on the desk {took:.2f} s after the signal")
            assert f"{COMMUNITY}/{GW}" in await banner.inner_text()
            words = await row.inner_text()
            assert "OFFLINE since" in words, words
            assert REASON[how] in words, words
            assert "OFFLINE" in await card.locator(".gw-warning").inner_text()
            home = page.locator(f'.home[data-home="{COMMUNITY}/101"] .home-mark.blind')  # its door and water meter
            await home.wait_for(timeout=2500)  # re-read 0.5 s after the gateway's change, readings or not
            assert f"CANNOT SEE THIS HOME: gateway {GW} offline" in await home.inner_text()
            await shot(page, f"desk-en-desktop-real-gw-{how}-1-offline")

            # 4. the duty person acks meanwhile: pending, waiting for the gateway
            await card.locator('[data-action="ack"]').click()
            await until_page(page, "document.getElementById('ack-dialog').open")
            await page.fill("#ack-note", "on my way to the shed")
            await page.locator("#ack-confirm").click()
            waiting = card.locator(".intent.waiting", has_text=f"gateway {GW} offline since")
            await waiting.wait_for(timeout=3000)
            assert "it is sent when the gateway is back" in await waiting.inner_text()
            pending = await page.evaluate("fetch('/api/intents').then(r => r.json())")
            assert [(i["status"], i["on_behalf_of"], i["target"]) for i in pending] == [
                ("pending", "duty", raised["alert"])], pending
            assert alert_records(sub, "alert.acknowledged") == []
            assert await serious(page) == []  # the red banner, row and card, the waiting ack: axe finds nothing bad
            await shot(page, f"desk-en-desktop-real-gw-{how}-2-pending")

            # 5. the daemon restarted: the ack delivered and applied, the desk says by whom, the pending mark gone
            await gone_for_good(gw)
            gateway_factory(cfg)
            await card.locator(".state", has_text="Acknowledged by duty").wait_for(timeout=25000)
            await card.locator(".intent.done").wait_for(timeout=5000)
            assert await card.locator(".intent.waiting").count() == 0
            assert await card.locator('[data-action="ack"]').count() == 0
            await banner.wait_for(state="detached", timeout=5000)
            await page.locator(".gw.ok", has_text=GW).wait_for(timeout=1000)
            acked = alert_records(sub, "alert.acknowledged", alert=raised["alert"])
            assert len(acked) == 1 and (acked[0]["by"], acked[0]["issuer"]) == ("duty", "centre-1"), acked
            assert acked[0].get("note") == "on my way to the shed", acked
            assert [r["alert"] for r in alert_records(sub, "alert.raised")] == [raised["alert"]]  # not raised again
            await shot(page, f"desk-en-desktop-real-gw-{how}-3-acknowledged")
    finally:
        if ctx is not None:
            await ctx.close()
        await centre.stop()
