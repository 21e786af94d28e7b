"""A serial_line bus on a pty: NMEA and key=value sensors, bad lines counted, a vanished port reopened."""

from __future__ import annotations

import asyncio

import pytest

from drivers.errors import DeviceTimeout, DeviceUnreachable
from drivers.serial_line.bus import LinePointSpec, SerialLineBus
from drivers.serial_line.parsers import make_parser
from drivers.serial_line.settings import SerialSettings
from simulator.clock import SimClock
from simulator.physics import WeatherStation
from simulator.pty_sensors import SerialSensorSimulator
from tests.drivers.serial_line.ptys import eventually

S4800 = SerialSettings(4800, 8, "N", 1)
NMEA_POINTS = [
    LinePointSpec("air_temperature", "XDR.TempAir", unit="degC"),
    LinePointSpec("pressure", "MDA.3", scale=1000, unit="hPa"),
    LinePointSpec("humidity", "MDA.9", unit="%"),
    LinePointSpec("wind_speed", "MDA.19", unit="m/s"),
]


def sensor_sim(tmp_path, kind="nmea", interval=0.03):
    return SerialSensorSimulator(kind, WeatherStation(SimClock(0), 10), S4800, link=str(tmp_path / f"tty{kind}"),
                                 interval=interval).start()


async def test_nmea_weather_sentences_become_readings(tmp_path):
    sim = sensor_sim(tmp_path)
    bus = SerialLineBus(sim.path, S4800, make_parser("nmea"), backoff_initial=0.05, backoff_max=0.1)
    ws = bus.sensor("weather", NMEA_POINTS, match={"talker": "WI"}, stale_after=1.0)
    other = bus.sensor("gps", [LinePointSpec("lat", "GGA.2")], match={"sentence": "GGA"}, stale_after=1.0)
    try:
        values = await eventually_values(ws)
        want = sim.expected()
        got = {p.name: v for p, v in values}
        assert got["air_temperature"] == round(want["air_temperature"], 1)
        assert got["pressure"] == pytest.approx(want["pressure"], abs=0.05)
        assert got["humidity"] == want["humidity"] and got["wind_speed"] == round(want["wind_speed"], 1)
        assert {p.unit for p, _ in values} == {"degC", "hPa", "%", "m/s"}
        with pytest.raises(DeviceTimeout, match="no valid line"):
            await other.read_all()
        st = bus.stats()
        assert st["state"] == "open" and st["checksum_errors"] == 0 and st["valid_lines"] >= 2
    finally:
        await bus.close()
        sim.stop()


async def eventually_values(sensor, timeout=3.0):
    async def attempt():
        try:
            return await sensor.read_all()
        except (DeviceTimeout, DeviceUnreachable):
            return None

    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        v = await attempt()
        if v:
            return v
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("no readings")
        await asyncio.sleep(0.02)


async def test_bad_checksums_overlong_and_garbage_are_counted_never_fatal(tmp_path):
    sim = sensor_sim(tmp_path)
    bus = SerialLineBus(sim.path, S4800, make_parser("nmea"), max_line=200, backoff_initial=0.05)
    ws = bus.sensor("weather", NMEA_POINTS, stale_after=1.0)
    try:
        await eventually_values(ws)
        sim.bad_checksum(4)
        sim.overlong(3000)
        sim.garbage()
        await eventually(lambda: bus.stats()["checksum_errors"] >= 4 and bus.stats()["overlong"] >= 1
                         and bus.stats()["framing_errors"] >= 1, 3, what="errors counted")
        lines = bus.stats()["valid_lines"]
        await eventually(lambda: bus.stats()["valid_lines"] > lines + 2, 3, what="good lines after the bad ones")
        assert await ws.read_all()
    finally:
        await bus.close()
        sim.stop()


async def test_kv_lines_with_match_and_type_conversion(tmp_path):
    sim = sensor_sim(tmp_path, "kv")
    bus = SerialLineBus(sim.path, S4800, make_parser("kv"), backoff_initial=0.05)
    ws = bus.sensor("ws1", [LinePointSpec("temp", "t", unit="degC"), LinePointSpec("rain", "rain", type="bool"),
                            LinePointSpec("hum", "h", unit="%"), LinePointSpec("rain_count", "rain", type="int")],
                     match={"id": "ws1"}, stale_after=1.0)
    nobody = bus.sensor("ws2", [LinePointSpec("temp", "t")], match={"id": "ws2"}, stale_after=1.0)
    bad = bus.sensor("bad", [LinePointSpec("id_as_number", "id")], match={"id": "ws1"}, stale_after=1.0)
    try:
        got = {p.name: v for p, v in await eventually_values(ws)}
        want = sim.expected()
        assert got["temp"] == round(want["air_temperature"], 1) and got["rain"] is want["rain_detected"]
        assert got["hum"] == want["humidity"] and got["rain_count"] == int(want["rain_detected"])
        assert isinstance(got["rain_count"], int)
        with pytest.raises(DeviceTimeout):
            await nobody.read_all()
        with pytest.raises(DeviceTimeout):
            await bad.read_all()  # "ws1" is not a float: a value error, counted
        assert bus.stats()["value_errors"] > 0
    finally:
        await bus.close()
        sim.stop()


async def test_vanished_port_reopened_and_sensor_unreachable_meanwhile(tmp_path):
    sim = sensor_sim(tmp_path)
    bus = SerialLineBus(sim.path, S4800, make_parser("nmea"), backoff_initial=0.05, backoff_max=0.1)
    ws = bus.sensor("weather", NMEA_POINTS, stale_after=0.2)
    try:
        await eventually_values(ws)
        sim.vanish()
        await eventually(lambda: bus.stats()["state"] == "reopening", 2, what="port loss noticed")
        await asyncio.sleep(0.3)  # values go stale
        with pytest.raises(DeviceUnreachable):
            await ws.read_all()
        sim.restore()
        await eventually_values(ws)
        st = bus.stats()
        assert st["opens"] >= 2 and st["port_failures"] >= 1
    finally:
        await bus.close()
        sim.stop()


async def test_silent_sensor_times_out(tmp_path):
    sim = sensor_sim(tmp_path)
    bus = SerialLineBus(sim.path, S4800, make_parser("nmea"))
    ws = bus.sensor("weather", NMEA_POINTS, stale_after=0.15)
    try:
        await eventually_values(ws)
        sim.silent = True
        await asyncio.sleep(0.3)
        with pytest.raises(DeviceTimeout, match="stale after"):
            await ws.read_all()
    finally:
        await bus.close()
        sim.stop()


def test_line_point_conversion():
    assert LinePointSpec("a", "k", scale=1000).convert("1.0106") == pytest.approx(1010.6)
    assert LinePointSpec("a", "k", type="int").convert("42") == 42
    assert LinePointSpec("a", "k", type="str").convert(" x ") == "x"
    assert LinePointSpec("a", "k", type="bool").convert("A") is True
    for bad, t in (("", "float"), ("nan", "float"), ("x", "int"), ("maybe", "bool")):
        with pytest.raises(ValueError):
            LinePointSpec("a", "k", type=t).convert(bad)
