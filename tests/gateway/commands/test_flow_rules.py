"""The rules built in where a flow meter is configured: flow while every valve is closed, a valve open with no flow;
and a flow interlock that, once it stopped valves, blocks the next opening too (naming itself, its unit and until when)."""

from __future__ import annotations

import pytest

from tests.gateway.commands.support import Harness, commands

FLOW = {"device": "meter-farm", "min": 1.0, "max": 2.0, "settle": 60, "idle_max": 0.05, "block_for": 600}


def flow_site(**flow) -> dict:
    cmds = commands()
    for v in cmds["valves"][:3]:
        v["interlocks"]["flow"] = {**FLOW, **flow}
    return cmds


@pytest.fixture
async def h(tmp_path):
    h = Harness(tmp_path, flow_site())
    await h.start()
    await h.advance(60)  # the meter has settled since the start-up close
    h.observe_farm()
    await h.svc.drain()
    yield h
    await h.stop()


async def test_flow_while_every_valve_is_closed_raises_one_alarm_until_it_stops(h):
    h.observe_farm(flow=1.4)  # a valve stuck open, or a burst pipe
    await h.svc.drain()
    (alarm,) = h.of("valve.flow_alarm", lane="alarm")
    assert alarm["rule"] == "flow_while_closed" and alarm["meter"] == "meter-farm.flow_rate"
    assert alarm["flow"] == 1.4 and alarm["unit"] == "m3/h" and alarm["valves"] == ["zone-1", "zone-2", "zone-3"]
    assert "flow 1.4 m3/h at meter-farm.flow_rate with every valve on it closed" in alarm["detail"]
    h.observe_farm(flow=1.5)
    await h.svc.drain()
    assert len(h.of("valve.flow_alarm")) == 1  # once, not at every poll
    assert h.svc.snapshot()["flow"]["meter-farm.flow_rate"]["flow_while_closed"] is True
    h.observe_farm(flow=0.0)
    await h.svc.drain()
    (cleared,) = h.of("valve.flow_alarm_cleared")
    assert cleared["rule"] == "flow_while_closed" and cleared["flow"] == 0.0


async def test_flow_right_after_a_close_is_not_flow_while_closed(h):
    await h.send(h.env("irrigate", "zone-1", {"duration_s": 120}))
    await h.advance(120)  # closed by its timer; the meter still runs down
    h.observe_farm(flow=0.8)
    await h.svc.drain()
    assert not h.of("valve.flow_alarm")
    await h.advance(60)
    h.observe_farm(flow=0.8)
    await h.svc.drain()
    assert h.of("valve.flow_alarm")[0]["rule"] == "flow_while_closed"


async def test_valve_open_with_no_flow_raises_an_alarm_closes_and_blocks_the_next_opening(h):
    await h.send(h.env("irrigate", "zone-2", {"duration_s": 600}))
    await h.advance(61)
    h.observe_farm(flow=0.0)
    await h.svc.drain()
    (alarm,) = h.of("valve.flow_alarm", lane="alarm")
    assert alarm["rule"] == "no_flow" and alarm["valves"] == ["zone-2"] and "no flow at meter-farm.flow_rate" in alarm["detail"]
    assert h.valves.values["zone_2"] is False
    closed = h.of("valve.closed")[-1]
    assert closed["reason"] == "interlock" and closed["interlock"] == "flow"
    # the interlock stays active: it refuses the next opening on that meter, by name, with the unit and until when
    res = await h.send(h.env("irrigate", "zone-3", {"duration_s": 60}))
    assert res["status"] == "rejected" and res["reason"] == "interlock" and res["interlock"] == "flow"
    assert res["detail"].startswith("blocked by interlock flow: no flow at meter-farm.flow_rate (0.0 m3/h")
    assert "openings on meter-farm.flow_rate are refused until 2023-11-15 06:" in res["detail"]
    assert "UTC+08:00 (Asia/Shanghai)" in res["detail"]
    assert (await h.send(h.env("irrigate", "zone-4", {"duration_s": 60})))["status"] == "executed"  # not on that meter
    await h.advance(600)
    h.observe_farm()
    assert (await h.send(h.env("irrigate", "zone-3", {"duration_s": 60})))["status"] == "executed"


async def test_a_blocked_line_blocks_openings_and_that_survives_a_restart(tmp_path):
    h = Harness(tmp_path, flow_site())
    await h.start()
    await h.send(h.env("irrigate", "zone-1", {"duration_s": 600}))
    await h.advance(61)
    h.observe_farm(flow=0.3)
    await h.svc.drain()
    assert h.valves.values["zone_1"] is False and not h.of("valve.flow_alarm")  # low flow: an interlock, not an alarm
    assert "blocked line" in h.of("valve.closed")[-1]["detail"]
    await h.stop()
    h2 = Harness(tmp_path, flow_site())
    await h2.start()
    res = await h2.send(h2.env("irrigate", "zone-2", {"duration_s": 60}))
    assert res["interlock"] == "flow" and "flow 0.3 m3/h is below 1 m3/h" in res["detail"]
    await h2.stop()


async def test_block_for_zero_does_not_keep_the_interlock(tmp_path):
    h = Harness(tmp_path, flow_site(block_for=0))
    await h.start()
    await h.send(h.env("irrigate", "zone-1", {"duration_s": 600}))
    await h.advance(61)
    h.observe_farm(flow=9.0)
    await h.svc.drain()
    assert h.valves.values["zone_1"] is False
    assert (await h.send(h.env("irrigate", "zone-1", {"duration_s": 60})))["status"] == "executed"
    await h.stop()
