"""What people read in results: interlock refusals name the interlock and the unit; times carry date and zone."""

from __future__ import annotations

import pytest

from core.timefmt import fmt_time
from tests.gateway.commands.support import Harness, commands

PROGRAM = {"id": "zone-1-auto", "valve": "zone-1", "sensor": {"device": "soil-1", "point": "moisture"},
           "start_below": 20, "stop_at": 30, "max_run": "10m", "max_per_day": 3}


@pytest.fixture
async def h(tmp_path):
    h = Harness(tmp_path)
    await h.start()
    yield h
    await h.stop()


@pytest.mark.parametrize("conditions, detail", [
    ({"moisture": 45.0}, "blocked by interlock moisture: soil moisture 45.0 % is above 40.0 % (soil-2.moisture)"),
    ({"rain": True}, "blocked by interlock rain: it is raining (weather.rain_detected)"),
    ({"level": 0.3}, "blocked by interlock tank: tank level 0.3 m is below 0.5 m (tank.level)"),
])
async def test_an_interlock_refusal_names_the_interlock_and_the_unit(h, conditions, detail):
    h.observe_farm(**conditions)
    res = await h.send(h.env("irrigate", "zone-2", {"duration_s": 60}))
    assert res["reason"] == "interlock" and res["detail"] == detail


async def test_close_all_on_a_site_without_programs_says_so(h):
    res = await h.send(h.env("close_all", "*"))
    assert res["status"] == "executed" and res["programs_paused_until"] is None
    assert res["detail"] == "closed every valve (4); this site has no automatic programs, so nothing is paused"
    assert h.svc.snapshot()["programs_paused_until"] is None


async def test_close_all_says_until_when_programs_pause_with_date_and_zone(tmp_path):
    h = Harness(tmp_path, commands(programs=[PROGRAM]))
    await h.start()
    res = await h.send(h.env("close_all", "*", {"hold_s": 7200}))
    until = h.clock.time() + 7200
    assert res["programs_paused_until"] == pytest.approx(until)
    assert res["detail"].endswith("automatic programs paused until 2023-11-15 08:13:20 UTC+08:00 (Asia/Shanghai)")
    await h.stop()


async def test_an_executed_irrigate_says_when_it_closes(h):
    res = await h.send(h.env("irrigate", "zone-2", {"duration_s": 900}))
    assert f"closes at {fmt_time(res['closes_at'], h.svc.tz)}" in res["detail"]
    assert "2023-11-15 06:28:20 UTC+08:00 (Asia/Shanghai)" in res["detail"]


def test_times_for_people_carry_date_and_zone_in_both_languages():
    from zoneinfo import ZoneInfo

    t = 1_795_000_000.0
    assert fmt_time(t, ZoneInfo("Asia/Shanghai")) == "2026-11-18 19:06:40 UTC+08:00 (Asia/Shanghai)"
    assert fmt_time(t, ZoneInfo("Asia/Shanghai"), "zh") == "2026-11-18 19:06:40（Asia/Shanghai，UTC+08:00）"
    assert fmt_time(t, ZoneInfo("UTC")) == "2026-11-18 11:06:40 UTC+00:00 (UTC)"
