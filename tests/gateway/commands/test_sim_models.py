"""Simulator additions for commands: relay pulse mode, door relock register, forced rain, tank controls."""

from __future__ import annotations

from simulator.clock import SimClock
from simulator.control import apply_command
from simulator.modbus_tcp import ModbusTcpSimulator
from simulator.physics import DoorLock, TankLevel, ValveRelay, WeatherStation
from simulator.sites import farm

START = 1_700_000_000.0


def test_relay_pulse_mode_switches_off_by_itself():
    clock = SimClock(0, START)
    relay = ValveRelay(clock, 1)
    relay.write("zone_2_pulse", 60, clock.now())
    relay.write("zone_2", True, clock.now())
    assert relay.is_open(2, START + 59.9) and not relay.is_open(2, START + 60)
    assert relay.values(START + 30)["zone_2"] is True and relay.values(START + 61)["zone_2"] is False
    assert relay.read(START)["zone_2_pulse"] == 60
    # a pulse that ended is part of the history when the coil is written again
    relay.write("zone_2", True, START + 100)
    assert not relay.is_open(2, START + 80) and relay.is_open(2, START + 100)
    relay.write("zone_2", False, START + 110)  # an explicit off cancels the pending pulse
    assert not relay.is_open(2, START + 120)
    relay.write("zone_2_pulse", 0, START + 200)
    relay.write("zone_2", True, START + 200)
    assert relay.is_open(2, START + 10_000)  # 0: stays on


def test_open_count_and_soil_follow_the_pulse():
    clock = SimClock(0, START)
    devices = {d.id: d for d in farm(clock)}
    relay = devices["valves"].model
    relay.write("zone_1_pulse", 600, clock.now())
    relay.write("zone_1", True, clock.now())
    assert relay.open_count(START + 300) == 1 and relay.open_count(START + 700) == 0
    meter = devices["meter-farm"].model
    assert meter.values(START + 300)["flow_rate"] > 1 and meter.values(START + 900)["flow_rate"] == 0


def test_door_relock_time_register():
    clock = SimClock(0, START)
    door = DoorLock(clock, 1)
    assert door.read(START)["relock_time"] == 10
    door.write("relock_time", 3, START)
    door.write("unlock", True, START)
    assert door.values(START + 2)["locked"] is False and door.values(START + 3)["locked"] is True
    door.write("relock_time", 0, START + 10)  # 0: never by itself
    door.write("unlock", True, START + 10)
    assert door.values(START + 1000)["locked"] is False
    assert door.read(START + 1000)["relock_time"] == 0


def test_forced_rain_and_tank_controls():
    clock = SimClock(0, START)
    weather = WeatherStation(clock, 5)
    weather.set_rain(True)
    clock.advance(60)
    assert weather.values(clock.now())["rain_detected"] is True and weather.rain_rate(clock.now()) > 0
    weather.set_rain(False)
    clock.advance(60)
    assert weather.values(clock.now())["rain_detected"] is False and weather.rain_rate(clock.now()) == 0
    tank = TankLevel(clock, 5)
    tank.set_pump_ok(False)
    tank.set_level(0.3)
    clock.advance(3 * 3600)
    assert tank.values(clock.now())["level"] < 0.3


async def test_control_commands():
    clock = SimClock(0, START)
    sim = ModbusTcpSimulator(farm(clock))
    assert apply_command(sim, "rain weather on") == "ok"
    assert sim.device("weather").model.values(clock.now())["rain_detected"] is True
    assert apply_command(sim, "tank tank 0.2") == "ok"
    assert sim.device("tank").model.values(clock.now())["level"] == 0.2
    assert apply_command(sim, "pump tank off") == "ok" and sim.device("tank").model.pump_ok is False
    assert apply_command(sim, "tank tank nan").startswith("error")
    assert apply_command(sim, "rain tank on").startswith("error")
