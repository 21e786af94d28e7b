"""RS-485 end to end: `canopy run` on simulated serial lines (ptys) -> real mosquitto.

One Modbus RTU line (three soil probes and a weather station at 19200 8E1) and
one NMEA weather sensor on a second port.  Readings must arrive with the
simulator's values; a slave that falls silent must be quarantined in
``…/state`` (and come back), the others keep being read, and `canopy bus`
shows it from the daemon's status file.
"""

from __future__ import annotations

import json
import subprocess
import sys

import yaml

from drivers.serial_line.settings import SerialSettings
from simulator.clock import SimClock
from simulator.modbus_tcp import SimulatedDevice
from simulator.physics import WeatherStation
from simulator.pty_sensors import SerialSensorSimulator
from simulator.rtu import RtuLineSimulator, soil_probes
from tests.drivers.serial_line.ptys import profile
from tests.support import PROFILES, ROOT, wait_until

RTU = SerialSettings(19200, 8, "E", 1)


def write_config(tmp_path, rtu_port: str, nmea_port: str, broker_port: int):
    data = {
        "site": "test-site",
        "gateway": "gw-485",
        "profiles_dir": str(PROFILES),
        "broker": {"host": "127.0.0.1", "port": broker_port, "backoff_initial": 0.2, "backoff_max": 1.0},
        "store": {"path": str(tmp_path / "outbox.sqlite"), "commit_interval": 0.2},
        "uplink": {"state_interval": 1},
        "buses": [
            {"id": "field-485", "type": "modbus_rtu", "port": rtu_port, "baudrate": 19200, "parity": "E", "stopbits": 1,
             "timeout": 0.1, "quarantine_after": 3, "reprobe_interval": 1.0, "slave_backoff_initial": 0.05,
             "slave_backoff_max": 0.1, "backoff_initial": 0.2, "backoff_max": 1.0,
             "devices": [{"id": f"soil-{u}", "unit": u, "profile": "soil_probe", "poll_interval": 0.3} for u in (1, 2, 3)]
             + [{"id": "weather", "unit": 10, "profile": "weather_station", "poll_interval": 0.5}]},
            {"id": "mast-232", "type": "serial_line", "port": nmea_port, "baudrate": 4800, "parser": "nmea",
             "devices": [{"id": "mast", "poll_interval": 0.5, "stale_after": 2, "match": {"talker": "WI"},
                          "points": [{"name": "air_temperature", "key": "XDR.TempAir", "unit": "degC"},
                                     {"name": "pressure", "key": "MDA.3", "scale": 1000, "unit": "hPa"}]}]},
        ],
    }
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_rtu_and_nmea_readings_arrive_and_a_silent_slave_is_quarantined(tmp_path, broker, subscriber_factory, gateway_factory):
    clock = SimClock(0)  # frozen: values are constant and comparable
    devices = soil_probes([1, 2, 3], clock) + [SimulatedDevice("weather", 10, profile("weather_station"), WeatherStation(clock, 10))]
    rtu = RtuLineSimulator(devices, RTU, link=str(tmp_path / "ttyRS485")).start()
    nmea = SerialSensorSimulator("nmea", WeatherStation(clock, 77), SerialSettings(4800), link=str(tmp_path / "ttyNMEA"),
                                 interval=0.2).start()
    try:
        sub = subscriber_factory(broker.port)
        cfg = write_config(tmp_path, rtu.path, nmea.path, broker.port)
        gw = gateway_factory(cfg)

        # every point of every device arrives, with the simulator's values
        expected = {f"soil-{u}": rtu.expected(u) for u in (1, 2, 3)} | {"weather": rtu.expected(10)}
        keys = {(d, p) for d, values in expected.items() for p in values} | {("mast", "air_temperature"), ("mast", "pressure")}
        wait_until(lambda: keys <= set(sub.by_point()), 15, what=f"all points; log:\n{gw.output()[-2000:]}")
        by_point = sub.by_point()
        for (dev, point) in keys:
            if dev == "mast":
                continue
            assert by_point[(dev, point)][-1]["value"] == expected[dev][point], (dev, point)
        mast = nmea.expected()
        assert by_point[("mast", "air_temperature")][-1]["value"] == round(mast["air_temperature"], 1)
        assert abs(by_point[("mast", "pressure")][-1]["value"] - mast["pressure"]) < 0.05

        # soil-2 falls silent: quarantined, published in …/state, the others keep going
        rtu.set_fault(2, "silent")

        def quarantined():
            st = sub.latest_state()
            return st and st.get("devices", {}).get("soil-2", {}).get("status") == "quarantined" \
                and st.get("buses", {}).get("field-485", {}).get("slaves", {}).get("2", {}).get("state") == "quarantined" and st

        state = wait_until(quarantined, 15, what="soil-2 quarantined in …/state")
        line = state["buses"]["field-485"]
        assert line["type"] == "modbus_rtu" and line["settings"] == "19200 8E1" and line["state"] == "open"
        assert state["buses"]["mast-232"]["valid_lines"] > 0
        assert state["devices"]["soil-1"]["status"] == "ok" and state["devices"]["mast"]["status"] == "ok"
        events = [r for r in sub.records("event") if r.get("type") == "device.status" and r.get("device") == "soil-2"]
        assert any(e["status"] == "quarantined" for e in events), events
        before = len(by_point[("soil-1", "moisture")])
        wait_until(lambda: len(sub.by_point()[("soil-1", "moisture")]) > before + 5, 10, what="soil-1 still polled")

        # `canopy bus` reads the daemon's status file
        def bus_view():
            out = subprocess.run([sys.executable, "-m", "gateway", "bus", "-c", str(cfg), "--json"], cwd=ROOT,
                                 capture_output=True, text=True, timeout=30)
            data = json.loads(out.stdout) if out.returncode == 0 else {}
            slaves = data.get("buses", {}).get("field-485", {}).get("slaves", {})
            return slaves.get("2", {}).get("state") == "quarantined" and data

        data = wait_until(bus_view, 10, interval=0.5, what="canopy bus shows the quarantine")
        assert data["buses"]["field-485"]["slaves"]["1"]["success_rate"] == 1.0

        # it answers again: back by itself at the next re-probe
        rtu.set_fault(2, None)
        wait_until(lambda: (s := sub.latest_state()) and s["devices"]["soil-2"]["status"] == "ok", 15, what="soil-2 back")

        rc, took = gw.terminate()
        assert rc == 0 and took < 5.0, (rc, took, gw.output()[-2000:])
        wire = rtu.stats()
        assert wire["gap_violations"] == 0 and wire["collisions"] == 0, wire
    finally:
        rtu.stop()
        nmea.stop()


def test_vanished_adapter_makes_devices_unreachable_then_recovers(tmp_path, broker, subscriber_factory, gateway_factory):
    clock = SimClock(0)
    rtu = RtuLineSimulator(soil_probes([1, 2, 3], clock), RTU, link=str(tmp_path / "ttyRS485")).start()
    nmea = SerialSensorSimulator("nmea", WeatherStation(clock, 77), SerialSettings(4800), link=str(tmp_path / "ttyNMEA"),
                                 interval=0.2).start()
    try:
        sub = subscriber_factory(broker.port)
        gw = gateway_factory(write_config(tmp_path, rtu.path, nmea.path, broker.port))
        wait_until(lambda: (s := sub.latest_state()) and s.get("devices", {}).get("soil-1", {}).get("status") == "ok", 15,
                   what="first polls")
        rtu.vanish()  # USB adapter pulled

        def all_unreachable():
            st = sub.latest_state() or {}
            devs = st.get("devices", {})
            return all(devs.get(f"soil-{u}", {}).get("status") == "unreachable" for u in (1, 2, 3)) and st

        st = wait_until(all_unreachable, 10, what="all RTU devices unreachable")
        assert st["buses"]["field-485"]["state"] == "reopening"
        assert st["devices"]["mast"]["status"] == "ok"  # the other port is unaffected
        rtu.restore()
        wait_until(lambda: (s := sub.latest_state()) and all(s["devices"][f"soil-{u}"]["status"] == "ok" for u in (1, 2, 3)),
                   15, what="devices back after the adapter returned")
        assert gw.alive()
        rc, _ = gw.terminate()
        assert rc == 0
    finally:
        rtu.stop()
        nmea.stop()


def test_gateway_starts_without_its_adapter_and_picks_it_up_when_plugged_in(tmp_path, broker, subscriber_factory, gateway_factory):
    """An unplugged USB adapter at boot must not keep the gateway (and its alarms) down."""
    link = tmp_path / "ttyUSB-by-id"
    nmea_link = tmp_path / "ttyNMEA"
    clock = SimClock(0)
    nmea = SerialSensorSimulator("nmea", WeatherStation(clock, 77), SerialSettings(4800), link=str(nmea_link), interval=0.2).start()
    rtu = None
    try:
        sub = subscriber_factory(broker.port)
        cfg = write_config(tmp_path, str(link), nmea.path, broker.port)
        proc = subprocess.run([sys.executable, "-m", "gateway", "validate", str(cfg)], capture_output=True, text=True, cwd=ROOT)
        assert proc.returncode == 2 and "not found" in proc.stderr  # validate still says so
        gw = gateway_factory(cfg)
        wait_until(lambda: (s := sub.latest_state()) and s["devices"].get("soil-1", {}).get("status") == "unreachable", 15,
                   what=f"soil-1 unreachable while unplugged; log:\n{gw.output()[-1500:]}")
        wait_until(lambda: any(r["device"] == "mast" for r in sub.records("telemetry")), 10, what="the other bus running meanwhile")
        rtu = RtuLineSimulator(soil_probes([1, 2, 3], clock), RTU, link=str(link)).start()  # plugged in
        wait_until(lambda: any(r["device"] == "soil-1" for r in sub.records("telemetry")), 20,
                   what=f"soil-1 readings once the adapter appears; log:\n{gw.output()[-1500:]}")
        assert "starting anyway" in gw.output()
        rc, _ = gw.terminate()
        assert rc == 0
    finally:
        nmea.stop()
        if rtu is not None:
            rtu.stop()
