"""The RTU pty simulator: wire timing, settings checks, the TCP simulator's registers, faults, CLI."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time

import pytest
import serial

from drivers.modbus import framing
from drivers.serial_line.port import termios_settings
from drivers.serial_line.settings import SerialSettings
from simulator.clock import SimClock
from simulator.modbus_tcp import SimulatedDevice, from_registers
from simulator.physics import ValveRelay, WeatherStation
from simulator.rtu import handle_pdu, soil_probes
from tests.drivers.serial_line.ptys import ROOT, profile, rtu_line

E9600 = SerialSettings(9600, 8, "E", 1)


def open_master(path: str, settings: SerialSettings) -> serial.Serial:
    eff = termios_settings(path, settings)
    return serial.Serial(path, eff.baudrate, bytesize=eff.bytesize, parity=eff.parity, stopbits=eff.stopbits, timeout=0.5)


def read_frame(port: serial.Serial, n: int, timeout: float = 0.5) -> tuple[bytes, float]:
    data = b""
    deadline = time.monotonic() + timeout
    while len(data) < n and time.monotonic() < deadline:
        data += port.read(n - len(data))
    return data, time.monotonic()


def test_reply_arrives_when_the_wire_would_have_carried_it(tmp_path):
    with rtu_line(tmp_path, units=(1,), settings=E9600) as sim:
        with open_master(sim.path, E9600) as port:
            req = framing.rtu_encode(1, bytes((3, 0, 0, 0, 6)))
            wire = (len(req) + 17) * E9600.char_time + E9600.t35
            took = []
            for _ in range(5):
                time.sleep(0.01)
                t0 = time.monotonic()
                port.write(req)
                reply, t1 = read_frame(port, 17)
                assert framing.rtu_crc_ok(reply) and reply[:3] == bytes((1, 3, 12))
                took.append(t1 - t0)
            assert min(took) >= wire, f"reply after {min(took) * 1000:.2f} ms, before the wire could carry it ({wire * 1000:.2f} ms)"
            assert min(took) < wire + 0.004, f"reply after {min(took) * 1000:.2f} ms, wire {wire * 1000:.2f} ms"
        assert sim.stats()["replies"] == 5


def test_wrong_baud_or_character_format_gets_silence(tmp_path):
    with rtu_line(tmp_path, units=(1,), settings=SerialSettings(19200, 8, "E", 1)) as sim:
        req = framing.rtu_encode(1, bytes((3, 0, 0, 0, 1)))
        for wrong in (SerialSettings(9600, 8, "E", 1), SerialSettings(19200, 8, "N", 1)):
            with open_master(sim.path, wrong) as port:
                port.write(req)
                assert read_frame(port, 7, 0.1)[0] == b""
        assert sim.stats()["wrong_settings"] == 2
        with open_master(sim.path, SerialSettings(19200, 8, "E", 1)) as port:
            time.sleep(0.01)
            port.write(req)
            assert framing.rtu_crc_ok(read_frame(port, 7)[0])


def test_bad_crc_requests_unknown_units_and_collisions_are_counted(tmp_path):
    with rtu_line(tmp_path, units=(1,), settings=E9600) as sim:
        with open_master(sim.path, E9600) as port:
            good = framing.rtu_encode(1, bytes((3, 0, 0, 0, 1)))
            port.write(good[:-1] + bytes((good[-1] ^ 1,)))
            time.sleep(0.03)
            port.write(framing.rtu_encode(99, bytes((3, 0, 0, 0, 1))))
            time.sleep(0.03)
            port.write(good)
            time.sleep(0.002)
            port.write(good)  # while the first reply is still due: both are lost
            assert read_frame(port, 7, 0.1)[0] == b""
        st = sim.stats()
        assert st["crc_errors"] == 1 and st["unknown_unit"] == 1 and st["collisions"] == 1


def test_served_registers_are_the_tcp_simulators(tmp_path):
    """Same profile, model and encoding: every point decodes to SimulatedDevice.expected()."""
    clock = SimClock(0)
    weather = SimulatedDevice("weather", 10, profile("weather_station"), WeatherStation(clock, 10))
    now = clock.now()
    want = weather.expected(now)
    by_table: dict[str, dict[int, int]] = {}
    for fc, table in ((4, "input"), (3, "holding")):
        size = max(p.address + p.count for p in weather.points(table))
        reply = handle_pdu(weather, struct.pack(">BHH", fc, 0, size), now)
        assert reply[0] == fc and reply[1] == 2 * size
        by_table[table] = dict(enumerate(struct.unpack(f">{size}H", reply[2:])))
    for p in weather.profile.points:
        if p.table in ("input", "holding"):
            regs = [by_table[p.table][p.address + i] for i in range(p.count)]
            assert from_registers(p, regs) == want[p.name], p.name
    bits = handle_pdu(weather, struct.pack(">BHH", 2, 0, 1), now)
    assert bits[:2] == bytes((2, 1)) and bool(bits[2] & 1) == want["rain_detected"]
    # out of the map, read-only and malformed requests are refused like the TCP simulator does
    assert handle_pdu(weather, struct.pack(">BHH", 4, 0, 120), now) == bytes((0x84, 2))
    assert handle_pdu(weather, struct.pack(">BHH", 6, 0, 1), now) == bytes((0x86, 2))
    assert handle_pdu(weather, bytes((0x2B, 14, 1, 0)), now) == bytes((0xAB, 1))


def test_writes_reach_the_model():
    clock = SimClock(0)
    valves = SimulatedDevice("valves", 40, profile("valve_relay"), ValveRelay(clock, 40))
    now = clock.now()
    assert handle_pdu(valves, struct.pack(">BHH", 5, 2, 0xFF00), now) == struct.pack(">BHH", 5, 2, 0xFF00)
    assert valves.expected(now)["zone_3"] is True
    assert handle_pdu(valves, struct.pack(">BHHB", 15, 0, 4, 1) + bytes((0b0101,)), now) == struct.pack(">BHH", 15, 0, 4)
    assert [valves.expected(now)[f"zone_{z}"] for z in (1, 2, 3, 4)] == [True, False, True, False]
    assert handle_pdu(valves, struct.pack(">BHH", 5, 0, 0x1234), now) == bytes((0x85, 3))


def test_vanish_and_restore_keep_the_path(tmp_path):
    with rtu_line(tmp_path, units=(1,), settings=E9600) as sim:
        first = os.path.realpath(sim.path)
        port = open_master(sim.path, E9600)
        sim.vanish()
        assert not os.path.exists(sim.path)
        with pytest.raises(serial.SerialException):
            time.sleep(0.02)
            port.read(1)
        port.close()
        sim.restore()
        assert os.path.exists(sim.path) and os.path.realpath(sim.path).startswith("/dev/pts/")
        with open_master(sim.path, E9600) as port:
            port.write(framing.rtu_encode(1, bytes((3, 0, 0, 0, 1))))
            assert framing.rtu_crc_ok(read_frame(port, 7)[0])
        assert first.startswith("/dev/pts/")


def test_faults_shape_the_reply(tmp_path):
    with rtu_line(tmp_path, units=(1,), settings=E9600) as sim:
        with open_master(sim.path, E9600) as port:
            req = framing.rtu_encode(1, bytes((3, 0, 0, 0, 1)))
            for fault, check in (
                ("crc", lambda r: len(r) == 7 and not framing.rtu_crc_ok(r)),
                ("truncated", lambda r: 0 < len(r) < 7),
                ("exception", lambda r: r[:3] == bytes((1, 0x83, 4)) and framing.rtu_crc_ok(r)),
                ("silent", lambda r: r == b""),
            ):
                sim.set_fault(1, fault)
                time.sleep(0.01)
                port.reset_input_buffer()
                port.write(req)
                reply, _ = read_frame(port, 7, 0.06)
                assert check(reply), (fault, reply.hex())
        with pytest.raises(ValueError):
            sim.set_fault(1, "on-fire")


def test_simulator_cli_serves_probes_on_a_pty(tmp_path):
    link = tmp_path / "ttyCLI"
    proc = subprocess.Popen([sys.executable, "-m", "simulator", "rtu", "probes", "--units", "3,7,12", "--baud", "19200",
                             "--parity", "E", "--speed", "0", "--link", str(link)], cwd=ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        hello = json.loads(proc.stdout.readline())
        assert hello["port"] == str(link) and hello["settings"] == "19200 8E1"
        assert [d["unit"] for d in hello["devices"]] == [3, 7, 12]
        proc.stdin.write("fault 7 silent\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "ok"
        proc.stdin.write("fault 7 melting\n")
        proc.stdin.flush()
        assert proc.stdout.readline().startswith("error")
        proc.stdin.write("stats\n")
        proc.stdin.flush()
        stats = json.loads(proc.stdout.readline())
        assert stats["slaves"]["7"]["fault"] == "silent"
    finally:
        proc.terminate()
        proc.wait(5)
    assert not link.exists()


def test_soil_probes_use_the_farm_physics():
    clock = SimClock(0)
    probes = soil_probes([3, 7], clock)
    assert [p.unit for p in probes] == [3, 7]
    values = probes[0].expected(clock.now())
    assert 3 <= values["moisture"] <= 50 and set(values) == {"moisture", "temperature", "ec", "water_potential"}


def test_the_line_times_the_masters_reaction_and_its_own_jitter(tmp_path):
    """reaction_ms: the request's start minus (the previous reply's end + t3.5); jitter_ms: replies written late."""
    with rtu_line(tmp_path, units=(1,), settings=E9600) as sim:
        assert sim.stats()["reaction_ms"] is None and sim.stats()["jitter_ms"] is None
        with open_master(sim.path, E9600) as port:
            req = framing.rtu_encode(1, bytes((3, 0, 0, 0, 6)))
            for _ in range(6):
                port.write(req)
                reply, t_reply = read_frame(port, 17)
                assert framing.rtu_crc_ok(reply)
                time.sleep(max(0.0, t_reply + E9600.t35 + 0.005 - time.monotonic()))  # 5 ms after the gap
        st = sim.stats()
        assert st["reaction_ms"]["n"] == 5  # the first request followed no reply
        # we waited 5 ms after each gap: never less; more only by this process's and the simulator's
        # scheduling, which a busy 2-core machine (make test runs two workers) stretches to tens of ms
        assert 4.9 <= st["reaction_ms"]["p50"] < 30.0, st["reaction_ms"]
        assert st["jitter_ms"]["n"] == 6 and 0 <= st["jitter_ms"]["p50"] < 30.0, st["jitter_ms"]
        assert st["gap_violations"] == 0


def test_a_spinning_line_serves_the_same_replies_and_timings_without_missing_input(tmp_path):
    """``spin`` (the bench's precision): polls before a reply is due and while a request is expected,
    and still answers each request exactly once, never early, with the reaction measured."""
    with rtu_line(tmp_path, units=(1, 2), settings=E9600, spin=0.0003) as sim:
        with open_master(sim.path, E9600) as port:
            for unit in (1, 2, 1, 2):
                req = framing.rtu_encode(unit, bytes((3, 0, 0, 0, 6)))
                t0 = time.monotonic()
                port.write(req)
                reply, t1 = read_frame(port, 17)
                assert framing.rtu_crc_ok(reply) and reply[0] == unit
                assert t1 - t0 >= (len(req) + 17) * E9600.char_time + E9600.t35  # never before the wire allows
                time.sleep(max(0.0, t1 + E9600.t35 + 0.001 - time.monotonic()))
        st = sim.stats()
        assert st["replies"] == 4 and st["gap_violations"] == 0 and st["collisions"] == 0
        assert st["reaction_ms"]["n"] == 3 and 0.9 <= st["reaction_ms"]["p50"] < 30.0, st["reaction_ms"]


def test_jitter_of_several_runs_pools_into_one_p99():
    from simulator.rtu import histogram_10us, pooled_p99_ms

    quiet = histogram_10us([0.00003] * 990)  # 30 us: bin 3
    spiky = histogram_10us([0.00004] * 8 + [0.0006, 0.009])  # two late ones, 0.6 ms and 9 ms
    assert quiet == {"3": 990} and spiky == {"4": 8, "60": 1, "500": 1}
    assert pooled_p99_ms([quiet, spiky]) == 0.04  # two of 1,000 late: the p99 is not one of them
    assert pooled_p99_ms([spiky]) == 5.01  # alone, its p99 is its worst (the last bin: >= 5 ms)
    assert pooled_p99_ms([{}, {}]) is None
