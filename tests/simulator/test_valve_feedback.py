"""The simulated valve module's position inputs: they follow the valve, which follows its coil unless it is stuck."""

from __future__ import annotations

from simulator.clock import SimClock
from simulator.physics import ValveRelay
from simulator.sites import farm

START = 1_700_000_000.0


def test_position_input_follows_the_coil():
    clock = SimClock(0, START)
    relay = ValveRelay(clock, 1)
    assert relay.read(START)["zone_1_open"] is False
    relay.write("zone_1", True, START)
    assert relay.read(START)["zone_1"] is True and relay.read(START)["zone_1_open"] is True


def test_a_motorised_valve_follows_its_coil_after_its_travel_time():
    clock = SimClock(0, START)
    relay = ValveRelay(clock, 1, travel=3.0)
    relay.write("zone_2", True, START)
    early = relay.read(START + 2.9)
    assert early["zone_2"] is True and early["zone_2_open"] is False
    assert relay.read(START + 3.0)["zone_2_open"] is True
    relay.write("zone_2", False, START + 10)
    assert relay.read(START + 12)["zone_2_open"] is True and relay.read(START + 13)["zone_2_open"] is False


def test_a_stuck_valve_ignores_its_coil_and_the_flow_follows_the_valve():
    clock = SimClock(0, START)
    devices = {d.id: d for d in farm(clock)}
    relay, meter = devices["valves"].model, devices["meter-farm"].model
    relay.set_stuck(3, False)  # a dead actuator: the coil switches, the valve stays shut
    relay.write("zone_3", True, clock.now())
    clock.advance(30)
    assert relay.values(clock.now())["zone_3"] is True and relay.values(clock.now())["zone_3_open"] is False
    assert meter.values(clock.now())["flow_rate"] == 0
    relay.set_stuck(3, None)
    relay.set_stuck(1, True)  # stuck open: flow while every coil is off
    relay.write("zone_3", False, clock.now())
    clock.advance(30)
    now = clock.now()
    assert relay.values(now)["zone_1"] is False and relay.values(now)["zone_1_open"] is True
    assert meter.values(now)["flow_rate"] > 1


def test_every_profile_point_is_served():
    clock = SimClock(0, START)
    valves = {d.id: d for d in farm(clock)}["valves"]
    assert {p.name for p in valves.profile.points} <= set(valves.expected(START))
    assert {f"zone_{n}_open" for n in (1, 2, 3, 4)} <= {p.name for p in valves.points("discrete")}
