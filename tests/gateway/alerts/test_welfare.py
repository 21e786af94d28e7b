"""Living alone, with a noisy power reading: a deadband (``change_by``) lets the welfare check fire on time."""

from __future__ import annotations

from tests.gateway.alerts.support import GROUPS, Harness, chain, load_site

DEVICES = [
    {"id": "power-101", "unit": 21, "profile": "energy_meter", "poll_interval": 60,
     "location": {"building": "3", "unit": "1", "household": "101"}},
    {"id": "meter-101", "unit": 20, "profile": "water_meter", "poll_interval": 60,
     "location": {"building": "3", "unit": "1", "household": "101"}},
]


def welfare(change_by) -> dict:
    power = {"device": "power-101", "point": "power", **({"change_by": change_by} if change_by is not None else {})}
    return {"groups": GROUPS, "classes": {"welfare": chain(0, 900)}, "rules": [
        {"id": "welfare-check", "type": "inactivity", "per": "household", "for": "12h", "class": "welfare", "reraise": "once",
         "sources": [power, {"device": "meter-101", "point": "total_volume", "on": "increase", "change_by": 0.005}]}]}


async def run_day(h: Harness) -> None:
    """The kettle at the start, then 13 h of a fridge and standby loads (2-60 W) and a dripping meter's jitter."""
    h.feed("power-101", "power", 4.0, "W")
    h.feed("meter-101", "total_volume", 12.340, "m3")
    await h.advance(60)
    h.feed("power-101", "power", 1850.0, "W")  # kettle on: activity
    await h.advance(60)
    h.feed("power-101", "power", 3.5, "W")  # and off: activity (the last one)
    for i in range(13 * 12):
        await h.advance(300)
        h.feed("power-101", "power", (2.0, 38.0, 55.0, 4.5, 41.0)[i % 5], "W")  # compressor cycling: ~50 W swings
        h.feed("meter-101", "total_volume", 12.340 + 0.001 * (i % 3), "m3")  # the last digit flickers


async def test_welfare_fires_on_time_with_change_by_on_noisy_power(tmp_path):
    h = Harness(load_site(tmp_path, welfare("100"), devices=DEVICES))  # 100 W: the kettle, a cooker, a washing machine
    last = h.clock.time() + 120
    await run_day(h)
    raised = h.of("alert.raised", rule="welfare-check")
    assert len(raised) == 1 and raised[0]["subject"] == "101"
    assert last + 12 * 3600 <= raised[0]["raised_at"] <= last + 12 * 3600 + 300, "within one poll of 12 h after the kettle"


async def test_without_change_by_the_same_noise_hides_a_resident_who_stopped_moving(tmp_path):
    h = Harness(load_site(tmp_path, welfare(None), devices=DEVICES))
    await run_day(h)
    assert h.of("alert.raised") == []
