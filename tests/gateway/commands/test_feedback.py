"""Confirmed valves: feedback must agree within confirm_within, else the command fails, an alarm goes out, and
an opening nobody can confirm is commanded closed again (and that close verified)."""

from __future__ import annotations

import pytest

from core.yamlsrc import ConfigError
from gateway.config.load import load_config
from tests.gateway.commands.support import Harness, commands, with_feedback, write_site


@pytest.fixture
async def h(tmp_path):
    h = Harness(tmp_path, with_feedback(commands()))
    await h.start()
    yield h
    await h.stop()


async def test_feedback_that_agrees_confirms_opening_and_closing(h):
    env = h.env("irrigate", "zone-2", {"duration_s": 600})
    res = await h.send(env)
    assert res["status"] == "executed" and res["confirmed"] is True
    assert res["state"] == {"zone_2": True, "zone_2_pulse": 600, "zone_2_open": True}
    assert h.of("valve.opened")[-1]["confirmed"] is True
    assert h.svc.snapshot()["valves"]["zone-2"]["confirmed"] is True
    res = await h.send(h.env("close", "zone-2"))
    assert res["status"] == "executed" and res["confirmed"] is True and res["state"]["zone_2_open"] is False


async def test_valve_whose_feedback_never_confirms_fails_with_an_alarm_and_is_closed_again(h):
    h.valves.stick(3, False)  # the coil switches, the valve does not move (a dead actuator)
    env = h.env("irrigate", "zone-3", {"duration_s": 600})
    await h.submit(env)
    assert [r["status"] for r in h.results(env["id"])] == ["accepted"]  # waiting for the feedback, off the queue
    assert h.valves.values["zone_3"] is True
    await h.advance(4.5)
    assert h.final(env["id"]) is None and not h.of("valve.not_confirmed")
    await h.advance(0.5)  # confirm_within (5 s) is over
    res = h.final(env["id"])
    assert res["status"] == "failed" and res["reason"] == "not_confirmed" and res["confirmed"] is False
    assert res["state"]["zone_3_open"] is False and "zone_3_open reads False 5 s after opening" in res["detail"]
    assert "commanded closed again and reads closed" in res["detail"]
    (alarm,) = h.of("valve.not_confirmed", lane="alarm")
    assert alarm["valve"] == "zone-3" and alarm["expected"] == "open" and alarm["feedback"] == {"zone_3_open": False}
    assert alarm["command"] == env["id"] and alarm["within_s"] == 5
    assert h.valves.values["zone_3"] is False and h.valves.writes[-1] == ("zone_3", False)  # commanded closed again
    assert h.svc.snapshot()["valves"]["zone-3"]["open"] is False
    assert h.audits(env["id"])[-1]["outcome"] == "failed"


async def test_an_opening_that_is_not_confirmed_and_then_will_not_close_keeps_being_closed(h):
    h.valves.stick(1, True)  # stuck open: the opening is confirmed, the close is not
    res = await h.send(h.env("irrigate", "zone-1", {"duration_s": 600}))
    assert res["status"] == "executed" and res["confirmed"] is True
    env = h.env("close", "zone-1")
    await h.submit(env)
    await h.advance(5)
    res = h.final(env["id"])
    assert res["status"] == "failed" and res["reason"] == "not_confirmed"
    assert res["state"]["zone_1"] is False and res["state"]["zone_1_open"] is True
    (alarm,) = h.of("valve.close_failed", lane="alarm")
    assert "zone_1_open reads True" in alarm["detail"]
    assert (await h.send(h.env("irrigate", "zone-1", {"duration_s": 60})))["interlock"] == "close_failing"
    h.valves.stick(1, None)  # somebody freed the stem
    await h.advance(10, step=1)
    assert h.of("valve.close_recovered") and not h.svc.snapshot()["valves"]["zone-1"].get("close_failing")


async def test_without_feedback_the_result_says_not_confirmed(tmp_path):
    h = Harness(tmp_path)
    await h.start()
    res = await h.send(h.env("irrigate", "zone-4", {"duration_s": 60}))
    assert res["status"] == "executed" and res["confirmed"] is False and "not confirmed" in res["detail"]
    assert res["state"] == {"zone_4": True}  # the coil read back, nothing more
    await h.stop()


async def test_a_program_opening_that_is_not_confirmed_is_reported(tmp_path):
    cmds = with_feedback(commands(programs=[{"id": "zone-1-auto", "valve": "zone-1", "sensor": {"device": "soil-1", "point": "moisture"},
                                             "start_below": 20, "stop_at": 30, "max_run": "10m", "max_per_day": 3}]))
    h = Harness(tmp_path, cmds)
    await h.start(readings=False)
    h.valves.stick(1, False)
    h.observe_farm(moisture=15.0)
    await h.svc.drain()
    await h.advance(5, step=0.5)
    (failed,) = h.of("program.failed")
    assert failed["reason"] == "not_confirmed" and h.of("valve.not_confirmed", lane="alarm")
    assert h.valves.values["zone_1"] is False
    await h.stop()


async def test_start_up_judges_the_feedback_without_waiting_for_it(tmp_path):
    h = Harness(tmp_path, with_feedback(commands()))
    h.valves.stick(2, True)
    await h.start()  # returns at once: the feedback is judged in the background
    assert not h.of("valve.close_failed")
    await h.advance(5, step=0.5)
    (alarm,) = h.of("valve.close_failed", lane="alarm")
    assert alarm["valve"] == "zone-2" and alarm["reason"] == "startup"
    await h.stop()


@pytest.mark.parametrize("feedback, expect", [
    ({"device": "valves", "point": "zone_1"}, "commands.valves[0].feedback.point: 'zone_1' is what the gateway writes"),
    ({"device": "valves", "point": "zone_9_open"}, "commands.valves[0].feedback.point: device 'valves' has no point"),
    ({"device": "pump-9", "point": "running"}, "commands.valves[0].feedback.device: unknown device 'pump-9'"),
    ({"device": "valves", "point": "zone_1_open", "above": 1}, "commands.valves[0].feedback.above: 'zone_1_open' is a bit"),
])
def test_feedback_config_errors_name_file_line_and_key(tmp_path, feedback, expect):
    cmds = commands()
    cmds["valves"][0]["feedback"] = feedback
    with pytest.raises(ConfigError) as err:
        load_config(write_site(tmp_path, cmds))
    found = [str(p) for p in err.value.problems]
    assert any(expect in p and "site.yaml:" in p for p in found), found
