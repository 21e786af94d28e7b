"""Valves: timed cycles, read-back, start-up and shutdown fail-safes, link loss, interlocks, device faults."""

from __future__ import annotations

import orjson
import pytest

from tests.gateway.commands.support import DUTY, Harness, commands


@pytest.fixture
async def h(tmp_path):
    h = Harness(tmp_path)
    await h.start()
    yield h
    await h.stop()


async def test_startup_closes_every_valve_and_locks_every_lock(tmp_path):
    h = Harness(tmp_path)
    h.valves.values.update(zone_1=True, zone_3=True)
    h.doors["door-101"].values.update(locked=False, unlock=True)
    await h.start()
    assert {f"zone_{n}": h.valves.values[f"zone_{n}"] for n in (1, 2, 3, 4)} == {f"zone_{n}": False for n in (1, 2, 3, 4)}
    assert ("zone_1", False) in h.valves.writes and ("zone_4", False) in h.valves.writes
    assert h.doors["door-101"].values["locked"] is True
    assert h.of("valve.interrupted") == []  # nothing was running
    await h.stop()


async def test_irrigate_opens_with_device_timer_reads_back_and_closes_at_duration(h):
    h.valves.writes.clear()
    env = h.env("irrigate", "zone-2", {"duration_s": 900})
    res = await h.send(env)
    statuses = [r["status"] for r in h.results(env["id"])]
    assert statuses == ["accepted", "executed"]
    assert res["state"] == {"zone_2": True, "zone_2_pulse": 900}
    assert res["closes_at"] == pytest.approx(h.clock.time() + 900) and res["device_timer"] is True
    # the device's own delay-off timer is armed before the coil goes on
    assert h.valves.writes == [("zone_2_pulse", 900), ("zone_2", True)]
    opened = h.of("valve.opened")[-1]
    assert opened["valve"] == "zone-2" and opened["source"] == "remote" and opened["issuer"] == "farmer"
    assert h.audits(env["id"])[-1]["outcome"] == "executed"
    assert h.svc.snapshot()["valves"]["zone-2"]["open"] is True
    await h.advance(899)
    assert h.valves.values["zone_2"] is True
    await h.advance(1)
    assert h.valves.values["zone_2"] is False
    closed = h.of("valve.closed")[-1]
    assert closed["reason"] == "duration_elapsed" and closed["ran_s"] == pytest.approx(900)
    assert closed["state"]["zone_2"] is False and closed["command"] == env["id"]


async def test_zone_alias_and_fractional_seconds(h):
    res = await h.send(h.env("irrigate", "zone-4", {"duration_s": 2.5}))
    assert res["status"] == "executed" and res["state"] == {"zone_4": True}  # no pulse register configured
    await h.advance(2.5)
    assert h.valves.values["zone_4"] is False


async def test_close_command_and_a_second_irrigate_replaces_the_first(h):
    first = h.env("irrigate", "zone-1", {"duration_s": 600})
    await h.send(first)
    second = h.env("irrigate", "zone-1", {"duration_s": 60})
    assert (await h.send(second))["status"] == "executed"
    await h.advance(61)
    assert h.valves.values["zone_1"] is False  # the new, shorter cycle rules
    await h.advance(600)
    assert len(h.of("valve.closed")) == 1
    h.observe_farm()  # fresh readings for the interlocks
    assert (await h.send(h.env("irrigate", "zone-1", {"duration_s": 600})))["status"] == "executed"
    res = await h.send(h.env("close", "zone-1"))
    assert res["status"] == "executed" and res["state"]["zone_1"] is False
    closed = h.of("valve.closed")[-1]
    assert closed["reason"] == "command" and closed["closed_by"] == "farmer"


async def test_close_all_closes_everything(h):
    for z in ("zone-1", "zone-2", "zone-4"):
        await h.send(h.env("irrigate", z, {"duration_s": 300}))
    res = await h.send(h.env("close_all", "*", {"hold_s": 0}))
    assert res["status"] == "executed"
    assert all(s[next(iter(s))] is False for s in res["state"].values())
    assert not any(h.valves.values[f"zone_{n}"] for n in (1, 2, 3, 4))
    assert sorted(r["valve"] for r in h.of("valve.closed")) == ["zone-1", "zone-2", "zone-4"]
    assert all(r["reason"] == "close_all" for r in h.of("valve.closed"))


async def test_clean_shutdown_closes_open_valves_with_an_event(tmp_path):
    h = Harness(tmp_path)
    await h.start()
    await h.send(h.env("irrigate", "zone-3", {"duration_s": 600}))
    await h.stop()
    assert h.valves.values["zone_3"] is False
    assert h.of("valve.closed")[-1]["reason"] == "shutdown"
    # nothing is left to report as interrupted
    h2 = Harness(tmp_path)
    h2.valves = h.valves
    h2.devices["valves"] = h.valves
    await h2.start()
    assert h2.of("valve.interrupted") == []
    await h2.stop()


async def test_crash_during_a_cycle_is_reported_after_restart(tmp_path):
    h = Harness(tmp_path)
    await h.start()
    env = h.env("irrigate", "zone-2", {"duration_s": 600})
    await h.send(env)
    await h.advance(100)
    await h.stop(clean=False)  # kill -9: the valve stays open (until its device timer)
    assert h.valves.values["zone_2"] is True
    h2 = Harness(tmp_path)
    h2.devices["valves"] = h2.valves = h.valves
    await h2.start()
    assert h.valves.values["zone_2"] is False
    (ev,) = h2.of("valve.interrupted")
    assert ev["valve"] == "zone-2" and ev["command"] == env["id"] and ev["issuer"] == "farmer"
    assert ev["closed"] is True and ev["state"]["zone_2"] is False and ev["device_timer"] is True
    assert ev["duration_s"] == 600
    await h2.stop()
    h3 = Harness(tmp_path)  # reported once, not at every start
    await h3.start()
    assert h3.of("valve.interrupted") == []
    await h3.stop()


async def test_link_loss_keep_policy_keeps_the_timed_cycle(h):
    await h.send(h.env("irrigate", "zone-1", {"duration_s": 600}))
    h.svc.on_link(False)
    await h.advance(599)
    assert h.valves.values["zone_1"] is True
    await h.advance(1)
    assert h.valves.values["zone_1"] is False
    assert h.of("valve.closed")[-1]["reason"] == "duration_elapsed"


async def test_link_loss_close_policy_closes_after_t(tmp_path):
    cmds = commands()
    cmds["valves"][0] = {**cmds["valves"][0], "on_link_loss": "close", "link_loss_after": "2m"}
    h = Harness(tmp_path, cmds)
    await h.start()
    await h.send(h.env("irrigate", "zone-1", {"duration_s": 600}))
    h.svc.on_link(False)
    await h.advance(60)
    h.svc.on_link(True)  # back within T: nothing happens
    await h.advance(100)
    assert h.valves.values["zone_1"] is True
    h.svc.on_link(False)
    await h.advance(119)
    assert h.valves.values["zone_1"] is True
    await h.advance(1)
    assert h.valves.values["zone_1"] is False
    assert h.of("valve.closed")[-1]["reason"] == "link_loss"
    await h.stop()


async def test_rain_during_a_cycle_stops_it(h):
    await h.send(h.env("irrigate", "zone-1", {"duration_s": 600}))
    await h.advance(30)
    h.observe_farm(rain=True)
    await h.svc.drain()
    assert h.valves.values["zone_1"] is False
    closed = h.of("valve.closed")[-1]
    assert closed["reason"] == "interlock" and closed["interlock"] == "rain"


async def test_moisture_reaching_the_target_stops_a_remote_cycle(h):
    await h.send(h.env("irrigate", "zone-2", {"duration_s": 600}))
    h.observe("soil-2", moisture=41.0)
    await h.svc.drain()
    assert h.valves.values["zone_2"] is False
    assert h.of("valve.closed")[-1]["interlock"] == "moisture"


async def test_stale_readings_do_not_stop_a_running_cycle(h):
    await h.send(h.env("irrigate", "zone-2", {"duration_s": 600}))
    await h.advance(400)  # readings go stale: the cycle runs to its end, nothing is invented
    assert h.valves.values["zone_2"] is True


@pytest.mark.parametrize("flow, words", [(0.1, "blocked"), (9.0, "leak")])
async def test_flow_out_of_range_stops_after_settling(tmp_path, flow, words):
    cmds = commands()
    for v in cmds["valves"][:3]:
        v["interlocks"]["flow"] = {"device": "meter-farm", "min": 1.0, "max": 2.0, "settle": 60}
    h = Harness(tmp_path, cmds)
    await h.start()
    await h.send(h.env("irrigate", "zone-1", {"duration_s": 600}))
    h.observe_farm(flow=flow)
    await h.svc.drain()
    assert h.valves.values["zone_1"] is True  # not judged while settling
    await h.advance(61)
    h.observe_farm(flow=1.5)
    await h.svc.drain()
    assert h.valves.values["zone_1"] is True
    await h.send(h.env("irrigate", "zone-2", {"duration_s": 600}))
    await h.advance(61)
    h.observe_farm(flow=3.0)  # two zones: 2..4 expected
    await h.svc.drain()
    assert h.valves.values["zone_1"] is True and h.valves.values["zone_2"] is True
    h.observe_farm(flow=flow)
    await h.svc.drain()
    assert h.valves.values["zone_1"] is False and h.valves.values["zone_2"] is False
    closed = h.of("valve.closed")
    assert {c["interlock"] for c in closed} == {"flow"} and words in closed[-1]["detail"]
    await h.stop()


async def test_device_error_fails_the_command_and_the_valve_is_driven_closed(h):
    h.valves.fail = "all"
    env = h.env("irrigate", "zone-1", {"duration_s": 60})
    res = await h.send(env)
    assert [r["status"] for r in h.results(env["id"])] == ["accepted", "failed"]
    assert res["reason"] == "device_error" and "no answer" in res["detail"]
    assert h.audits(env["id"])[-1]["outcome"] == "failed"
    assert h.of("valve.close_failed", lane="alarm")  # someone must know a valve may be open
    # while closing fails, the valve is not opened again
    env2 = h.env("irrigate", "zone-1", {"duration_s": 60})
    res2 = await h.send(env2)
    assert res2["status"] == "rejected" and res2["interlock"] == "close_failing"
    h.valves.fail = None
    await h.advance(5)
    assert h.valves.values["zone_1"] is False
    assert h.of("valve.close_recovered")
    assert (await h.send(h.env("irrigate", "zone-1", {"duration_s": 60})))["status"] == "executed"


async def test_readback_mismatch_fails(h):
    h.valves.fail = "stuck"  # writes are acknowledged but nothing changes
    env = h.env("irrigate", "zone-1", {"duration_s": 60})
    res = await h.send(env)
    assert res["status"] == "failed" and res["reason"] == "readback_mismatch"
    h.valves.fail = None


async def test_a_valve_found_open_closes_at_max_run(h):
    h.valves.values["zone_4"] = True  # somebody pressed the module's manual button
    await h.advance(5)
    h.observe("valves", zone_4=True)
    await h.svc.drain()
    assert h.of("valve.unexpected_open")
    await h.advance(599)
    assert h.valves.values["zone_4"] is True
    await h.advance(1)
    assert h.valves.values["zone_4"] is False
    assert h.of("valve.closed")[-1]["reason"] == "max_run"


async def test_reading_from_before_our_own_close_is_not_an_unexpected_open(h):
    await h.send(h.env("irrigate", "zone-1", {"duration_s": 60}))
    before = h.clock.time()
    await h.advance(60)
    from core.records import Reading

    h.svc.observe([Reading(before + 30, "valves", "zone_1", True)])  # polled mid-cycle, delivered late
    await h.svc.drain()
    assert h.of("valve.unexpected_open") == []


async def test_snapshot_shows_cycles_and_counters(h):
    await h.send(h.env("irrigate", "zone-1", {"duration_s": 60}))
    await h.send(h.env("irrigate", "zone-9", {"duration_s": 60}))
    snap = h.svc.snapshot()
    assert snap["valves"]["zone-1"]["source"] == "remote" and snap["valves"]["zone-1"]["closes_in_s"] == 60
    assert snap["counters"]["executed"] == 1 and snap["counters"]["rejected"] == {"unknown_target": 1}
    assert snap["link"] is True


async def test_queue_overflow_is_counted(h):
    """Verified commands beyond commands.queue (64) are dropped and counted (junk never takes a slot)."""
    for n in range(70):  # two issuers: each stays within its verification budget
        env = h.env("close", "zone-1") if n % 2 else h.env("lock", "door-101", key=DUTY, issuer="duty")
        h.svc.on_command("t", orjson.dumps(env))
    await h.svc.drain()
    assert h.svc.counters["dropped"] >= 6


async def test_a_dead_relay_at_start_up_does_not_hold_the_gateway_and_is_retried(tmp_path):
    h = Harness(tmp_path)
    h.valves.fail = "all"
    h.valves.values["zone_2"] = True
    await h.start()
    assert len([w for w in h.of("valve.close_failed", lane="alarm")]) == 4
    assert h.svc.snapshot()["valves"]["zone-2"]["close_failing"] is True
    res = await h.send(h.env("irrigate", "zone-2", {"duration_s": 60}))
    assert res["status"] == "rejected" and res["interlock"] == "close_failing"
    h.valves.fail = None
    await h.advance(2)
    assert h.valves.values["zone_2"] is False
    assert len(h.of("valve.close_recovered")) == 4
    assert (await h.send(h.env("irrigate", "zone-2", {"duration_s": 60})))["status"] == "executed"
    await h.stop()


async def test_close_all_answers_even_while_a_valve_cannot_be_closed(h):
    await h.send(h.env("irrigate", "zone-1", {"duration_s": 60}))
    h.valves.fail = "all"
    await h.advance(60)  # the timer's close fails and keeps retrying
    assert h.of("valve.close_failed", lane="alarm")
    env = h.env("close_all", "*", {"hold_s": 0})
    res = await h.send(env)
    assert res["status"] == "failed" and "failing to close" in res["detail"]
    h.valves.fail = None
    await h.advance(30)
    assert h.valves.values["zone_1"] is False
