"""Installer tools on simulated RS-485 lines: `canopy scan`, `canopy probe`, `canopy bus`, and
`canopy validate` on every serial/RTU config mistake."""

from __future__ import annotations

import json
import os

import orjson
import pytest

from drivers.serial_line.settings import SerialSettings
from gateway.cli.main import main
from simulator.clock import SimClock
from simulator.modbus_tcp import SimulatedDevice
from simulator.physics import DoorLock, ValveRelay, WeatherStation
from tests.drivers.serial_line.ptys import PROFILES, profile, rtu_line

E19200 = SerialSettings(19200, 8, "E", 1)


def run_json(capsys, argv) -> tuple[int, dict]:
    rc = main(argv)
    out = capsys.readouterr().out
    return rc, json.loads(out) if out.strip() else {}


def test_scan_finds_exactly_units_3_7_12_at_19200_8e1(tmp_path, capsys):
    with rtu_line(tmp_path, units=(3, 7, 12), settings=E19200) as sim:
        rc, result = run_json(capsys, ["scan", "--port", sim.path, "--baud", "9600,19200", "--parity", "N,E",
                                       "--units", "1-15", "--timeout", "0.04", "--json"])
        assert rc == 0
        found = [(f["baudrate"], f["parity"], f["stopbits"], f["unit"]) for f in result["found"]]
        assert found == [(19200, "E", 1, 3), (19200, "E", 1, 7), (19200, "E", 1, 12)]
        assert result["tried"] == 60
        assert "baudrate: 19200" in result["snippet"] and "parity: E" in result["snippet"]
        assert "unit: 12" in result["snippet"]
        assert sim.stats()["wrong_settings"] > 0  # the other settings were really tried, and refused
        # the human view: a table and a ready-to-paste snippet
        rc = main(["scan", "--port", sim.path, "--baud", "19200", "--parity", "E", "--units", "1-8", "--timeout", "0.04"])
        out = capsys.readouterr().out
        assert rc == 0
        assert "19200" in out and "8E1" in out and "type: modbus_rtu" in out and "unit-7" in out and "unit-3" in out


def test_scan_with_nobody_there_says_so(tmp_path, capsys):
    with rtu_line(tmp_path, units=(3,), settings=E19200) as sim:
        rc = main(["scan", "--port", sim.path, "--baud", "9600", "--parity", "N", "--units", "1-4", "--timeout", "0.03"])
        assert rc == 1
        assert "no slave answered" in capsys.readouterr().out


@pytest.mark.parametrize("argv, words", [
    (["--baud", "9601"], "not standard"),
    (["--parity", "X"], "parity"),
    (["--units", "0-3"], "1..247"),
    (["--units", "a-b"], "units must look like"),
])
def test_scan_refuses_bad_arguments(tmp_path, capsys, argv, words):
    with rtu_line(tmp_path, units=(3,), settings=E19200) as sim:
        assert main(["scan", "--port", sim.path, *argv]) == 2
        assert words in capsys.readouterr().err


def test_scan_unknown_port(capsys):
    assert main(["scan", "--port", "/dev/ttyNOPE9"]) == 2
    assert "serial port /dev/ttyNOPE9 not found" in capsys.readouterr().err


def weather_line(tmp_path):
    clock = SimClock(0)
    devices = [SimulatedDevice("weather", 10, profile("weather_station"), WeatherStation(clock, 10)),
               SimulatedDevice("door", 20, profile("door_lock"), DoorLock(clock, 20)),
               SimulatedDevice("valves", 40, profile("valve_relay"), ValveRelay(clock, 40))]
    return rtu_line(tmp_path, devices=devices, settings=E19200)


def test_probe_reads_a_float_with_both_word_orders(tmp_path, capsys):
    with weather_line(tmp_path) as sim:
        want = sim.expected(10)
        base = ["probe", "--port", sim.path, "--unit", "10", "--baud", "19200", "--parity", "E", "--json"]
        # air temperature: f32 low word first (CDAB)
        rc, little = run_json(capsys, base + ["--read", "input:0:2", "--as", "f32", "--word-order", "little"])
        assert rc == 0 and little["values"] == [want["air_temperature"]]
        assert len(little["registers"]) == 2 and all(h.startswith("0x") for h in little["hex"])
        # pressure: f32 high word first (ABCD)
        rc, big = run_json(capsys, base + ["--read", "input:6:2", "--as", "f32"])
        assert rc == 0 and big["values"] == [want["pressure"]]
        # the same registers in the other word order are a different (wrong) number
        rc, wrong = run_json(capsys, base + ["--read", "input:0:2", "--as", "f32", "--word-order", "big"])
        assert wrong["registers"] == little["registers"] and wrong["values"] != little["values"]
        # the table view shows raw registers and the decoded value
        assert main(base[:-1] + ["--read", "input:6:2", "--as", "f32"]) == 0
        out = capsys.readouterr().out
        assert "0x" in out and str(want["pressure"]) in out


def test_probe_writes_coils_and_registers_and_reads_back(tmp_path, capsys):
    with weather_line(tmp_path) as sim:
        base = ["probe", "--port", sim.path, "--baud", "19200", "--parity", "E", "--json"]
        rc, out = run_json(capsys, base + ["--unit", "40", "--write", "coil:1:1"])
        assert rc == 0 and out["bits"] == [True] and sim.expected(40)["zone_2"] is True
        rc, out = run_json(capsys, base + ["--unit", "20", "--write", "holding:0:123"])
        assert rc == 0 and out["registers"] == [123] and out["written"] == ["0x007B"]
        assert sim.expected(20)["relock_time"] == 123
        rc, out = run_json(capsys, base + ["--unit", "20", "--read", "discrete:0:3"])
        assert rc == 0 and len(out["bits"]) == 3


def test_probe_errors_are_plain(tmp_path, capsys):
    with weather_line(tmp_path) as sim:
        base = ["probe", "--port", sim.path, "--baud", "19200", "--parity", "E", "--timeout", "0.05"]
        assert main(base + ["--unit", "99", "--read", "holding:0:1"]) == 1
        assert "timeout" in capsys.readouterr().err
        assert main(base + ["--unit", "10", "--read", "input:0:90"]) == 1  # beyond the map: exception 2
        assert "illegal data address" in capsys.readouterr().err
        assert main(base + ["--unit", "10", "--read", "input:0:3", "--as", "f32"]) == 2
        assert "do not divide" in capsys.readouterr().err
        assert main(base + ["--unit", "10", "--read", "register:0:1"]) == 2
        assert "TABLE" in capsys.readouterr().err
        assert main(base + ["--unit", "10", "--write", "input:0:1"]) == 2
        assert "read-only" in capsys.readouterr().err


def test_probe_on_a_port_another_program_holds(tmp_path, capsys):
    import serial

    with rtu_line(tmp_path, units=(1,), settings=E19200) as sim:
        with serial.Serial(sim.path, 19200, exclusive=True):
            assert main(["probe", "--port", sim.path, "--unit", "1", "--read", "holding:0:1"]) == 2
        err = capsys.readouterr().err
        assert "in use by another program" in err and err.count("\n") == 1


# -- validate: every serial/RTU config error names file, line and key, exit 2 ---------------------------
GOOD = """\
site: farm-a
gateway: gw-1
profiles_dir: {profiles}
broker:
  host: 127.0.0.1
  port: 1883
buses:
  - id: field-485
    type: modbus_rtu
    port: {port}
    baudrate: 9600
    parity: E
    stopbits: 1
    devices:
      - id: soil-1
        unit: 1
        profile: soil_probe
  - id: weather-232
    type: serial_line
    port: {port2}
    parser: nmea
    devices:
      - id: ws
        points:
          - {{name: air_temperature, key: XDR.TempAir, unit: degC}}
"""

CASES = [
    ("unknown port", ("    port: {port}", "    port: /dev/ttyUSB9"), 10, "buses[0].port", "serial port /dev/ttyUSB9 not found"),
    ("relative port", ("    port: {port}", "    port: ttyUSB0"), 10, "buses[0].port", "full device path"),
    ("bad baud", ("baudrate: 9600", "baudrate: 9601"), 11, "buses[0].baudrate", "not a standard rate"),
    ("baud as text", ("baudrate: 9600", "baudrate: fast"), 11, "buses[0].baudrate", "whole number"),
    ("bad parity", ("parity: E", "parity: X"), 12, "buses[0].parity", "N (none), E (even) or O (odd)"),
    ("bad stopbits", ("stopbits: 1", "stopbits: 3"), 13, "buses[0].stopbits", "1 or 2"),
    ("bad bytesize", ("stopbits: 1\n", "stopbits: 1\n    bytesize: 9\n"), 14, "buses[0].bytesize", "7 or 8"),
    ("rtu needs 8 bits", ("stopbits: 1\n", "stopbits: 1\n    bytesize: 7\n"), 8, "buses[0]", "bytesize 8"),
    ("unknown bus type", ("type: modbus_rtu", "type: modbus_rtx"), 9, "buses[0].type", "modbus_rtu"),
    ("broadcast unit", ("unit: 1", "unit: 0"), 16, "buses[0].devices[0].unit", "broadcast"),
    ("unknown parser", ("parser: nmea", "parser: nmae"), 21, "buses[1].parser", "'nmea'"),
    ("line point without key", ("{{name: air_temperature, key: XDR.TempAir, unit: degC}}", "{{name: air_temperature, unit: degC}}"), 25,
     "buses[1].devices[0].points[0].key", "required"),
    ("one port, two buses", ("    port: {port2}", "    port: {port}"), 20, "buses[1].port", "already used by bus 'field-485'"),
]


@pytest.fixture
def ports(tmp_path):
    with rtu_line(tmp_path, units=(1,), name="ttyA") as a, rtu_line(tmp_path, units=(2,), name="ttyB") as b:
        yield a.path, b.path


def write(tmp_path, text: str, ports) -> str:
    path = tmp_path / "site.yaml"
    path.write_text(text.format(profiles=PROFILES, port=ports[0], port2=ports[1]))
    return str(path)


def test_good_serial_config_validates(tmp_path, capsys, ports):
    assert main(["validate", write(tmp_path, GOOD, ports)]) == 0
    assert "2 bus(es)" in capsys.readouterr().out


@pytest.mark.parametrize("name, change, line, key, words", CASES, ids=[c[0] for c in CASES])
def test_serial_config_errors_are_clear(tmp_path, capsys, ports, name, change, line, key, words):
    old, new = change
    assert old in GOOD, name
    path = write(tmp_path, GOOD.replace(old, new, 1), ports)
    assert main(["validate", path]) == 2
    err = capsys.readouterr().err
    assert f"{path}:{line}: {key}: " in err, err
    assert words in err, err
    assert "Traceback" not in err


def test_vanished_by_id_link_is_named(tmp_path, capsys, ports):
    link = tmp_path / "usb-FTDI_FT232R_A1B2C3-if00-port0"
    os.symlink("/dev/ttyUSB77", link)
    path = write(tmp_path, GOOD.replace("    port: {port}", f"    port: {link}", 1), ports)
    assert main(["validate", path]) == 2
    assert "broken link" in capsys.readouterr().err


# -- canopy bus -----------------------------------------------------------------------------------------
def test_bus_shows_utilisation_success_latency_and_quarantine(tmp_path, capsys, ports):
    cfg = write(tmp_path, GOOD, ports)
    status = {
        "site": "farm-a", "gateway": "gw-1", "ts": 0, "devices": {"soil-1": {"status": "quarantined"}, "ws": {"status": "ok"}},
        "buses": {
            "field-485": {"type": "modbus_rtu", "port": ports[0], "settings": "9600 8E1", "state": "open", "utilisation": 0.4321,
                          "wire_utilisation": 0.31, "queue": 0, "transactions": 100, "timeouts": 7, "crc_errors": 1, "garbled": 0,
                          "truncated": 0, "exceptions": 0, "opens": 2, "process": True, "worker_starts": 3,
                          "worker_deaths": 1, "reaction_ms": {"p50": 0.071, "p99": 0.143},
                          "slaves": {"1": {"device": "soil-1", "state": "quarantined", "success_rate": 0.93, "failures": 7,
                                           "quarantines": 1, "latency_ms": {"last": 37.0, "avg": 36.7, "p95": 38.2},
                                           "next_probe_in_s": 12.0}}},
            "weather-232": {"type": "serial_line", "port": ports[1], "settings": "4800 8N1", "state": "open", "lines": 50,
                            "valid_lines": 48, "checksum_errors": 2, "framing_errors": 0, "overlong": 0, "unmatched": 0,
                            "value_errors": 0, "last_line_age_s": 0.5, "sensors": {"ws": {"updates": 48, "last_update_age_s": 0.5}}},
        },
    }
    (tmp_path / "canopy-status.json").write_bytes(orjson.dumps(status))
    assert main(["bus", "-c", cfg]) == 0
    out = capsys.readouterr().out
    for words in ("field-485", "43.2%", "quarantined", "93.0%", "36.7", "38.2", "12s", "weather-232", "checksum errors 2",
                  "timeouts 7", "after the gap: p50 0.07 ms, p99 0.14 ms · worker process, 1 restart"):
        assert words in out, (words, out)
    rc, data = run_json(capsys, ["bus", "-c", cfg, "--json"])
    assert rc == 0 and data["buses"]["field-485"]["slaves"]["1"]["state"] == "quarantined"


def test_bus_without_a_running_gateway(tmp_path, capsys, ports):
    assert main(["bus", "-c", write(tmp_path, GOOD, ports)]) == 1
    assert "is the gateway running" in capsys.readouterr().err


def test_rs485_example_config_validates(tmp_path, capsys):
    """config/examples/rs485.yaml, with its ports pointed at simulated lines and a loopback broker."""
    import yaml

    from tests.drivers.serial_line.ptys import ROOT

    data = yaml.safe_load((ROOT / "config" / "examples" / "rs485.yaml").read_text())
    assert all(b["port"].startswith("/dev/serial/by-id/") for b in data["buses"])
    with rtu_line(tmp_path, units=(1,), name="ttyX") as a, rtu_line(tmp_path, units=(2,), name="ttyY") as b:
        for bus, port in zip(data["buses"], (a.path, b.path)):
            bus["port"] = port
        data["profiles_dir"] = str(PROFILES)
        data["broker"] = {"host": "127.0.0.1", "port": 1883}
        data["store"] = {"path": str(tmp_path / "outbox.sqlite")}
        cfg = tmp_path / "rs485.yaml"
        cfg.write_text(yaml.safe_dump(data, sort_keys=False))
        assert main(["validate", str(cfg)]) == 0, capsys.readouterr().err
