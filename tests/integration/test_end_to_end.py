"""The foundation's promises, end to end: simulator -> `canopy run` -> real mosquitto.

Each test runs the real daemon as a child process and judges it only by what
arrives on the broker (and, after a kill -9, by the SQLite file it left).
"""

from __future__ import annotations

import sqlite3
import time

import pytest

from gateway.config.load import load_profile
from tests.support import PROFILES, free_port, site_config, wait_until

FARM_PROFILES = {"soil-1": "soil_probe", "soil-2": "soil_probe", "soil-3": "soil_probe", "weather": "weather_station",
                 "meter-farm": "water_meter", "tank": "tank_level", "valves": "valve_relay"}


def assert_contiguous(seqs: list[int], start: int = 1) -> None:
    unique = sorted(set(seqs))
    assert unique, "no records arrived"
    assert unique[0] == start, f"sequence starts at {unique[0]}, expected {start}"
    missing = sorted(set(range(unique[0], unique[-1] + 1)) - set(unique))
    assert not missing, f"sequence gaps: {missing[:20]}"


def test_every_register_arrives_with_value_type_unit_and_scaling(tmp_path, farm_sim, broker, subscriber_factory, gateway_factory):
    sub = subscriber_factory(broker.port)
    cfg = site_config(tmp_path, sim_port=farm_sim.port, broker={"host": "127.0.0.1", "port": broker.port})
    gw = gateway_factory(cfg)
    expected_keys = {(dev, p.name) for dev, prof in FARM_PROFILES.items() for p in load_profile(PROFILES / f"{prof}.yaml").points}
    wait_until(lambda: expected_keys <= set(sub.by_point()), 15, what="every point of every farm device")
    by_point = sub.by_point()
    now = farm_sim.clock.now()  # speed 0: frozen, values constant
    for dev, prof_name in FARM_PROFILES.items():
        profile = load_profile(PROFILES / f"{prof_name}.yaml")
        expected = farm_sim.device(dev).expected(now)
        for point in profile.points:
            rec = by_point[(dev, point.name)][-1]
            want = expected[point.name]
            assert rec["value"] == want, f"{dev}.{point.name}: got {rec['value']!r}, want {want!r}"
            assert type(rec["value"]) is type(want), f"{dev}.{point.name}: JSON type {type(rec['value']).__name__}, want {type(want).__name__}"
            assert rec.get("unit", "") == point.unit, f"{dev}.{point.name}: unit {rec.get('unit')!r}"
    # scaled points really are scaled (raw u16 tenths -> percent with one decimal)
    moisture = by_point[("soil-1", "moisture")][-1]["value"]
    assert isinstance(moisture, float) and 0 < moisture < 100
    # one sequence, from 1, no gaps, no duplicates on a healthy link
    seqs = sub.seqs("telemetry")
    assert_contiguous(seqs)
    assert len(seqs) == len(set(seqs)), "duplicates without any fault"
    for m in sub.of("telemetry"):
        assert m["site"] == "test-site" and m["gateway"] == "gw-1" and m["lane"] == "telemetry"
        assert m["seq"] == [m["records"][0]["seq"], m["records"][-1]["seq"]]
    wait_until(lambda: (s := sub.latest_state()) and s.get("status") == "online"
               and all(d["status"] == "ok" for d in s["devices"].values()), 10, what="online state with every device ok")
    rc, took = gw.terminate()
    assert rc == 0 and took < 5.0, f"shutdown rc={rc} took {took:.1f}s"
    final = wait_until(lambda: (s := sub.latest_state()) and s.get("status") == "offline" and s, 5, what="offline state")
    assert final["reason"] == "shutdown"


def test_broker_outage_loses_nothing(tmp_path, farm_sim, broker, subscriber_factory, gateway_factory):
    """Stop the broker for 30 s while polling goes on: everything arrives afterwards, no gaps."""
    sub = subscriber_factory(broker.port, client_id="outage-sub")
    cfg = site_config(tmp_path, sim_port=farm_sim.port, broker={"host": "127.0.0.1", "port": broker.port})
    gw = gateway_factory(cfg)
    wait_until(lambda: len(sub.seqs("telemetry")) > 50, 15, what="first readings")
    sub.close()
    broker.stop()
    time.sleep(30)  # the outage itself: real time on purpose, the daemon is a separate process
    assert gw.alive(), "gateway died during the outage"
    db = sqlite3.connect(tmp_path / "outbox.sqlite")
    pending_during_outage = db.execute("SELECT count(*) FROM telemetry").fetchone()[0]
    db.close()
    assert pending_during_outage > 500, f"polling should have continued offline (pending {pending_during_outage})"
    broker.start()
    sub2 = subscriber_factory(broker.port, client_id="outage-sub")  # same persistent session
    rc, _ = (None, None)

    def drained():
        con = sqlite3.connect(tmp_path / "outbox.sqlite")
        try:
            return con.execute("SELECT count(*) FROM telemetry").fetchone()[0] == 0
        finally:
            con.close()

    wait_until(drained, 60, interval=0.5, what="backlog drained after the broker came back")
    rc, took = gw.terminate()
    assert rc == 0
    con = sqlite3.connect(tmp_path / "outbox.sqlite")
    last_seq = con.execute("SELECT seq FROM sqlite_sequence WHERE name='telemetry'").fetchone()[0]
    con.close()
    seqs = sub.seqs("telemetry") + sub2.seqs("telemetry")
    wait_until(lambda: max(sub.seqs("telemetry") + sub2.seqs("telemetry")) >= last_seq, 10, what="last record delivered")
    seqs = sub.seqs("telemetry") + sub2.seqs("telemetry")
    assert_contiguous(seqs)
    assert max(seqs) == last_seq
    dups = len(seqs) - len(set(seqs))
    # duplicates can only be records whose PUBACK the outage swallowed: at most one in-flight window
    assert dups <= 32 * 500, dups


def test_kill9_restart_continues_sequence_and_loses_nothing(tmp_path, farm_sim, broker, subscriber_factory, gateway_factory):
    sub = subscriber_factory(broker.port)
    cfg = site_config(tmp_path, sim_port=farm_sim.port, broker={"host": "127.0.0.1", "port": broker.port})
    gw = gateway_factory(cfg)
    wait_until(lambda: len(sub.seqs("telemetry")) > 100, 15, what="readings before the crash")
    gw.kill9()
    con = sqlite3.connect(tmp_path / "outbox.sqlite")
    committed_max = con.execute("SELECT seq FROM sqlite_sequence WHERE name='telemetry'").fetchone()[0]
    boot_before = int(con.execute("SELECT value FROM meta WHERE key='boot'").fetchone()[0])
    con.close()
    gw2 = gateway_factory(cfg)
    wait_until(lambda: max(sub.seqs("telemetry")) > committed_max + 50, 15, what="readings after the restart")
    seqs = sub.seqs("telemetry")
    assert_contiguous(seqs)  # everything committed before the crash arrived, and no number was reused or skipped
    after = [r for r in sub.records("telemetry") if r["seq"] > committed_max]
    assert after, "no new records after restart"
    state = wait_until(lambda: (s := sub.latest_state()) and s.get("boot") == boot_before + 1 and s, 10, what="state of the new boot")
    assert state["status"] == "online"
    gw2.terminate()


def test_failing_devices_are_reported_while_others_keep_their_schedule(tmp_path, farm_sim, broker, subscriber_factory, gateway_factory):
    dead_port = free_port()  # nothing listens here
    cfg = site_config(
        tmp_path, sim_port=farm_sim.port, broker={"host": "127.0.0.1", "port": broker.port},
        extra_buses=[{"id": "far-shed", "type": "modbus_tcp", "host": "127.0.0.1", "port": dead_port, "timeout": 0.3,
                      "backoff_initial": 0.2, "backoff_max": 1.0,
                      "devices": [{"id": "shed-meter", "unit": 1, "profile": "water_meter", "poll_interval": 0.5}]}],
    )
    farm_sim.device("soil-2").fault = "silent"
    farm_sim.device("tank").fault = "exception"
    sub = subscriber_factory(broker.port)
    gw = gateway_factory(cfg)

    def statuses():
        s = sub.latest_state()
        return s and {d: v["status"] for d, v in s.get("devices", {}).items()}

    want = {"soil-2": "timeout", "tank": "exception", "shed-meter": "unreachable", "soil-1": "ok", "weather": "ok"}
    wait_until(lambda: (st := statuses()) and all(st.get(k) == v for k, v in want.items()), 15, what=f"device statuses {want}")
    t0 = time.time()
    time.sleep(5)  # observe the healthy devices' schedule over a real window
    t1 = time.time()
    polls = {r["ts"] for r in sub.records("telemetry") if r["device"] == "soil-1" and t0 <= r["ts"] <= t1}
    assert len(polls) >= 8, f"soil-1 polled {len(polls)} times in 5 s at 0.5 s interval despite dead neighbours"
    events = [e for e in sub.records("event") if e["type"] == "device.status"]
    got = {(e["device"], e["status"]) for e in events}
    assert {("soil-2", "timeout"), ("tank", "exception"), ("shed-meter", "unreachable")} <= got
    # one event per transition, not one per failed poll
    assert sum(1 for e in events if e["device"] == "soil-2") == 1
    # recovery is reported too
    farm_sim.device("soil-2").fault = None
    wait_until(lambda: any(e["device"] == "soil-2" and e["status"] == "ok" for e in sub.records("event")), 10, what="recovery event")
    out = gw.output()
    assert "device soil-2: timeout" in out and out.count("device soil-2: timeout") == 1, "first failure loud, then quiet"
    gw.terminate()


@pytest.mark.parametrize("bad", ["port: 1", "missing"])
def test_run_refuses_bad_config_with_exit_2(tmp_path, bad, gateway_factory):
    cfg = tmp_path / "site.yaml"
    if bad == "missing":
        cfg.write_text("site: s\ngateway: g\nbuses:\n  - {id: b, type: modbus_tcp, host: 127.0.0.1, devices: [{id: d, unit: 1, profile: nope}]}\n")
    else:
        cfg.write_text("site: s\ngateway: g\nbogus_key: 1\n")
    gw = gateway_factory(cfg)
    rc = gw.proc.wait(15)
    assert rc == 2
    out = gw.output()
    assert f"{cfg}:" in out
    assert ("profile 'nope' not found" in out) if bad == "missing" else ("bogus_key" in out and "unknown key" in out)


def test_json_logs_are_one_object_per_line(tmp_path, farm_sim, broker, subscriber_factory, gateway_factory):
    import json

    farm_sim.device("soil-3").fault = "exception"
    sub = subscriber_factory(broker.port)
    cfg = site_config(tmp_path, sim_port=farm_sim.port, broker={"host": "127.0.0.1", "port": broker.port})
    gw = gateway_factory(cfg, args=["--log-json"])
    wait_until(lambda: "soil-3" in gw.output() and sub.seqs("telemetry"), 10, what="a device failure logged")
    gw.terminate()
    lines = [json.loads(line) for line in gw.output().splitlines() if line.strip()]
    assert lines and all({"ts", "level", "logger", "msg"} <= set(x) for x in lines)
    assert any(x["level"] == "warning" and "soil-3" in x["msg"] for x in lines)


def test_status_command_shows_the_running_gateway(tmp_path, farm_sim, broker, gateway_factory):
    import subprocess
    import sys

    from tests.support import ROOT

    cfg = site_config(tmp_path, sim_port=farm_sim.port, broker={"host": "127.0.0.1", "port": broker.port})
    gw = gateway_factory(cfg)
    status_file = tmp_path / "canopy-status.json"
    import json as _json

    def snapshot_with_data():
        try:
            snap = _json.loads(status_file.read_bytes())
        except (FileNotFoundError, ValueError):
            return None
        return snap if snap["outbox"]["telemetry"]["produced"] > 0 and snap["devices"]["soil-1"]["status"] == "ok" else None

    wait_until(snapshot_with_data, 15, what="status file with committed readings")
    proc = subprocess.run([sys.executable, "-m", "gateway", "status", "-c", str(cfg)], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "test-site/gw-1" in proc.stdout and "soil-1" in proc.stdout and "telemetry" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "gateway", "status", "-c", str(cfg), "--json"], capture_output=True, text=True, cwd=ROOT)
    import json

    snap = json.loads(proc.stdout)
    tel = snap["outbox"]["telemetry"]
    assert tel["produced"] > 0 and snap["devices"]["soil-1"]["status"] == "ok"
    gw.terminate()


def canopy_status(cfg, *args: str):
    import subprocess
    import sys

    from tests.support import ROOT

    return subprocess.run([sys.executable, "-m", "gateway", "status", "-c", str(cfg), *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=30)


def test_status_tells_running_stale_and_not_running_after_kill9(tmp_path, farm_sim, broker, subscriber_factory, gateway_factory):
    """`canopy status` judges the writer, not only the snapshot: SIGSTOP -> "stale" (4), kill -9 -> "not running" (3)."""
    import json
    import signal

    sub = subscriber_factory(broker.port)
    cfg = site_config(tmp_path, sim_port=farm_sim.port, broker={"host": "127.0.0.1", "port": broker.port})  # state_interval 1
    gw = gateway_factory(cfg)
    wait_until(lambda: canopy_status(cfg).returncode == 0, 15, interval=0.5, what="`canopy status` says running")
    # …/state carries the new figures inside its open sections and stays valid (the subscriber checks every message)
    state = wait_until(lambda: (s := sub.latest_state()) and s.get("status") == "online"
                       and s["uplink"].get("last_puback_ts") and s, 15, what="a state with the last PUBACK")
    assert "oldest_age_s" in state["outbox"]["telemetry"]
    assert state["uptime_s"] >= 0 and "disk_free_bytes" in state["host"]  # the board from afar, in the protocol's …/state
    snap = json.loads((tmp_path / "canopy-status.json").read_bytes())
    assert snap["host"]["rss_bytes"] > 0 and snap["host"]["disk_free_bytes"] > 0 and snap["uptime_s"] >= 0
    assert snap["daemon"]["pid"] == gw.proc.pid and snap["daemon"]["state"] == "running"
    gw.proc.send_signal(signal.SIGSTOP)  # alive, but writes nothing: a hung loop
    try:
        proc = wait_until(lambda: (p := canopy_status(cfg)).returncode == 4 and p, 20, interval=0.5, what="stale")
        assert "stale" in proc.stdout
    finally:
        gw.proc.send_signal(signal.SIGCONT)
    wait_until(lambda: canopy_status(cfg).returncode == 0, 10, interval=0.5, what="running again")
    gw.kill9()
    proc = canopy_status(cfg)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "not running" in proc.stdout and "killed or crashed" in " ".join(proc.stdout.split())


def test_status_file_follows_the_backlog_and_is_rewritten_at_shutdown(tmp_path, farm_sim, gateway_factory):
    """No broker and a 60 s state interval: the file still follows the growing backlog, and its last word is "stopped"."""
    import json

    from core.records import LANES

    cfg = site_config(tmp_path, sim_port=farm_sim.port, broker={"host": "127.0.0.1", "port": free_port()},
                      uplink={"state_interval": 60})
    status_file = tmp_path / "canopy-status.json"
    gw = gateway_factory(cfg)

    def in_db() -> dict[str, int]:
        con = sqlite3.connect(tmp_path / "outbox.sqlite")
        try:
            return {lane: con.execute(f"SELECT count(*) FROM {lane}").fetchone()[0] for lane in LANES}
        finally:
            con.close()

    def on_file() -> dict:
        return json.loads(status_file.read_bytes())

    wait_until(lambda: status_file.exists() and in_db()["telemetry"] > 100, 20, what="a backlog")
    t0, n0 = time.monotonic(), in_db()["telemetry"]
    stamps = set()
    for _ in range(10):
        time.sleep(1)
        snap, actual = on_file(), in_db()["telemetry"]
        rate = (actual - n0) / (time.monotonic() - t0)
        shown = snap["outbox"]["telemetry"]["pending"]
        assert actual - shown <= max(100, 0.1 * shown) + 3 * rate, f"file shows {shown}, outbox has {actual}"
        stamps.add(snap["ts"])
    assert len(stamps) >= 3, "the backlog moved but the file was not rewritten"
    rc, _ = gw.terminate()
    assert rc == 0
    snap, rows = on_file(), in_db()
    assert snap["daemon"]["state"] == "stopped"
    assert {lane: snap["outbox"][lane]["pending"] for lane in LANES} == rows  # the last snapshot is exact
    proc = canopy_status(cfg)
    assert proc.returncode == 3 and "stopped cleanly" in proc.stdout


def test_status_file_shows_the_broker_and_devices_within_seconds_of_start(tmp_path, farm_sim, broker, gateway_factory):
    """With the default-like 60 s state interval the file is still current: link and device changes rewrite it."""
    import json

    cfg = site_config(tmp_path, sim_port=farm_sim.port, broker={"host": "127.0.0.1", "port": broker.port},
                      uplink={"state_interval": 60})
    gw = gateway_factory(cfg)
    status_file = tmp_path / "canopy-status.json"

    def current():
        try:
            snap = json.loads(status_file.read_bytes())
        except (FileNotFoundError, ValueError):
            return None
        return snap["uplink"]["connected"] and all(d["status"] == "ok" for d in snap["devices"].values()) and snap

    snap = wait_until(current, 6, what="a status file that says connected with every device ok")
    assert snap["daemon"]["stale_after_s"] == 126.0
    gw.terminate()
