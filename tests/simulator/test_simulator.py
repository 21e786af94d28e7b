"""The simulator serves the profiles' register maps over real Modbus TCP, and behaves."""

from __future__ import annotations

import asyncio
import json
import math
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from drivers.modbus import codec
from drivers.modbus.profile import Point
from simulator.clock import SimClock
from simulator.modbus_tcp import ModbusTcpSimulator, SimulatedDevice, from_registers, to_registers
from simulator.physics import SmokeGasDetector, SoilProbe, WaterMeter
from simulator.sites import community, farm, free_port, start_site

ROOT = Path(__file__).resolve().parents[2]
START = 1_700_000_000.0  # a fixed simulated start, so every run sees the same day


async def client(port: int) -> AsyncModbusTcpClient:
    c = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=1, retries=0)
    assert await c.connect()
    return c


async def read_point(c: AsyncModbusTcpClient, unit: int, p: Point):
    """Read one point the way the gateway would, decoding with the codec and the profile."""
    read = {
        "coil": c.read_coils,
        "discrete": c.read_discrete_inputs,
        "holding": c.read_holding_registers,
        "input": c.read_input_registers,
    }[p.table]
    reply = await read(p.address, count=p.count, device_id=unit)
    assert not reply.isError(), f"unit {unit} {p.name}: {reply}"
    if p.table in ("coil", "discrete"):
        return reply.bits[0]
    return codec.to_engineering(codec.decode(reply.registers, p.layout), p.scale, p.offset)


@pytest.fixture
async def farm_site() -> AsyncIterator[tuple[ModbusTcpSimulator, SimClock, AsyncModbusTcpClient]]:
    sim, clock = await start_site("farm", speed=0, start=START)
    c = await client(sim.port)
    yield sim, clock, c
    c.close()
    await sim.stop()


@pytest.fixture
async def community_site() -> AsyncIterator[tuple[ModbusTcpSimulator, SimClock, AsyncModbusTcpClient]]:
    sim, clock = await start_site("community", speed=0, start=START)
    c = await client(sim.port)
    yield sim, clock, c
    c.close()
    await sim.stop()


@pytest.mark.parametrize("site", ["farm", "community"])
async def test_every_point_reads_as_expected(site: str) -> None:
    sim, clock = await start_site(site, speed=0, seed=3)
    c = await client(sim.port)
    try:
        if site == "community":  # make the interesting values non-trivial too
            sim.device("smoke-hall").model.trigger_smoke()  # type: ignore[attr-defined]
        for device in sim.devices:
            expected = device.expected(clock.now())
            got = {p.name: await read_point(c, device.unit, p) for p in device.profile.points}
            assert got == expected, device.id
    finally:
        c.close()
        await sim.stop()


def test_sites_have_stable_ids_units_and_profiles() -> None:
    clock = SimClock(0, START)
    assert [(d.id, d.unit, d.profile.name) for d in farm(clock)] == [
        ("soil-1", 1, "soil_probe"), ("soil-2", 2, "soil_probe"), ("soil-3", 3, "soil_probe"),
        ("weather", 10, "weather_station"), ("meter-farm", 20, "water_meter"),
        ("tank", 30, "tank_level"), ("valves", 40, "valve_relay"),
    ]
    assert [(d.id, d.unit, d.profile.name) for d in community(clock)] == [
        ("smoke-shed", 1, "smoke_gas_detector"), ("smoke-hall", 2, "smoke_gas_detector"),
        ("door-101", 10, "door_lock"), ("meter-101", 20, "water_meter"), ("sounder", 30, "relay_module"),
    ]


def test_same_seed_same_world_regardless_of_polling() -> None:
    a_clock, b_clock = SimClock(0, START), SimClock(0, START)
    a, b = farm(a_clock, seed=7), farm(b_clock, seed=7)
    for _ in range(24):  # a polls every hour, b only at the end
        a_clock.advance(3600)
        [d.expected(a_clock.now()) for d in a]
    b_clock.advance(24 * 3600)
    assert [d.expected(a_clock.now()) for d in a] == [d.expected(b_clock.now()) for d in b]
    other = [d.expected(START) for d in farm(SimClock(0, START), seed=8)]
    assert other != [d.expected(START) for d in farm(SimClock(0, START), seed=7)]


def test_values_stay_encodable_over_two_days() -> None:
    """No value may saturate its register type: the encode/decode round trip stays within one step."""
    clock = SimClock(0, START)
    devices = farm(clock, seed=2) + community(clock, seed=2)
    by_id = {d.id: d for d in devices}
    by_id["valves"].model.write("zone_1", True, clock.now())
    by_id["meter-101"].model.set_tap_running(True)  # type: ignore[attr-defined]
    by_id["smoke-shed"].model.trigger_smoke()  # type: ignore[attr-defined]
    by_id["smoke-hall"].model.trigger_gas()  # type: ignore[attr-defined]
    for _ in range(8):
        clock.advance(6 * 3600)
        for d in devices:
            values = d.model.values(clock.now())
            for p in d.profile.points:
                got = from_registers(p, to_registers(p, values[p.name]))
                if isinstance(got, (int, float)) and not isinstance(got, bool):
                    assert math.isclose(got, values[p.name], abs_tol=abs(p.scale)), (d.id, p.name, values[p.name])


def test_moisture_dries_over_a_day_and_rises_when_irrigated() -> None:
    clock = SimClock(0, START)
    probe = SoilProbe(clock, seed=1)
    before = probe.values(clock.now())["moisture"]
    clock.advance(86400)
    dried = probe.values(clock.now())["moisture"]
    assert dried < before - 1
    wet = SoilProbe(clock, seed=1, irrigating=lambda t: True)
    start = wet.values(clock.now())["moisture"]
    clock.advance(3600)
    assert wet.values(clock.now())["moisture"] > start + 3


def test_community_meter_has_quiet_nights_and_a_running_tap() -> None:
    clock = SimClock(0, START)
    meter = WaterMeter(clock, seed=4)
    clock.advance(86400)
    assert meter.values(clock.now())["flow_rate"] >= 0
    meter.set_tap_running(True)
    clock.advance(3600)
    v = meter.values(clock.now())
    assert v["flow_rate"] > 0.4 and v["pulse_count"] == round(v["total_volume"] * 1000)


def test_smoke_detector_alarms_at_once_and_clears() -> None:
    clock = SimClock(0, START)
    det = SmokeGasDetector(clock, seed=1)
    assert det.values(clock.now())["alarm"] is False
    det.trigger_gas()
    assert det.values(clock.now())["alarm"] is True
    det.clear()
    assert det.values(clock.now())["alarm"] is False


async def test_meter_counter_moves_and_is_monotonic_at_speed() -> None:
    sim, _clock = await start_site("farm", speed=3600, seed=1)
    c = await client(sim.port)
    try:
        meter = sim.device("meter-farm")
        total = meter.profile.point("total_volume")
        assert not (await c.write_coil(0, True, device_id=40)).isError()
        readings = []
        for _ in range(6):
            readings.append(await read_point(c, 20, total))
            await asyncio.sleep(0.15)
        assert readings == sorted(readings) and readings[-1] > readings[0]
    finally:
        c.close()
        await sim.stop()


async def test_valve_coil_write_reads_back_and_drives_the_meter(farm_site) -> None:
    sim, clock, c = farm_site
    assert not (await c.write_coil(2, True, device_id=40)).isError()
    reply = await c.read_coils(0, count=4, device_id=40)
    assert reply.bits[:4] == [False, False, True, False]
    clock.advance(60)
    flow = await read_point(c, 20, sim.device("meter-farm").profile.point("flow_rate"))
    assert 1.4 < flow < 1.6  # one open zone
    assert not (await c.write_coils(0, [False] * 4, device_id=40)).isError()
    assert (await c.read_coils(0, count=4, device_id=40)).bits[:4] == [False] * 4


async def test_writes_to_read_only_points_are_refused(farm_site) -> None:
    _sim, _clock, c = farm_site
    reply = await c.write_register(0, 500, device_id=1)
    assert reply.isError() and reply.exception_code == 2


async def test_door_lock_relocks_by_itself(community_site) -> None:
    sim, clock, c = community_site
    points = sim.device("door-101").profile
    assert await read_point(c, 10, points.point("locked")) is True
    assert not (await c.write_coil(0, True, device_id=10)).isError()
    assert await read_point(c, 10, points.point("locked")) is False
    assert await read_point(c, 10, points.point("unlock")) is True
    clock.advance(11)
    assert await read_point(c, 10, points.point("locked")) is True
    assert await read_point(c, 10, points.point("unlock")) is False


async def test_fault_exception_answers_device_failure(farm_site) -> None:
    sim, _clock, c = farm_site
    sim.device("soil-1").fault = "exception"
    reply = await c.read_holding_registers(0, count=1, device_id=1)
    assert reply.isError() and reply.exception_code == 4
    assert not (await c.read_holding_registers(0, count=1, device_id=2)).isError()
    sim.device("soil-1").fault = None
    assert not (await c.read_holding_registers(0, count=1, device_id=1)).isError()


async def test_fault_silent_times_out_and_others_still_answer(farm_site) -> None:
    sim, _clock, c = farm_site
    sim.device("soil-1").fault = "silent"
    t0 = time.monotonic()
    try:
        reply = await c.read_holding_registers(0, count=1, device_id=1)
        assert reply.isError()
    except ModbusException:
        pass
    assert time.monotonic() - t0 >= 0.9  # no reply within the client's timeout
    fresh = await client(sim.port)
    try:
        assert not (await fresh.read_holding_registers(0, count=1, device_id=2)).isError()
    finally:
        fresh.close()
    assert not (await c.read_holding_registers(0, count=1, device_id=3)).isError()  # same connection too


def test_device_must_provide_every_profile_point() -> None:
    clock = SimClock(0, START)
    soil_profile = farm(clock)[0].profile
    with pytest.raises(ValueError, match="gives no"):
        SimulatedDevice("bad", 1, soil_profile, WaterMeter(clock, 1))


def test_cli_prints_json_obeys_commands_and_exits_0_on_sigterm() -> None:
    port = free_port()
    with subprocess.Popen(
        [sys.executable, "-m", "simulator", "farm", "--port", str(port), "--speed", "0"],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    ) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        try:
            hello = json.loads(proc.stdout.readline())
            assert hello["simulator"] == "farm" and hello["host"] == "127.0.0.1" and hello["port"] == port
            assert {"id": "valves", "unit": 40, "profile": "valve_relay"} in hello["devices"]
            proc.stdin.write("fault soil-1 silent\nsmoke soil-1 on\n")
            proc.stdin.flush()
            assert proc.stdout.readline().strip() == "ok"
            assert proc.stdout.readline().startswith("error:")
            proc.stdin.close()  # EOF is not a reason to stop
            time.sleep(0.1)
            assert proc.poll() is None
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=5) == 0
        finally:
            if proc.poll() is None:
                proc.kill()


def test_cli_refuses_a_non_loopback_host() -> None:
    done = subprocess.run([sys.executable, "-m", "simulator", "farm", "--host", "0.0.0.0"],
                          cwd=ROOT, capture_output=True, text=True, timeout=10)
    assert done.returncode == 2 and "--allow-remote" in done.stderr
