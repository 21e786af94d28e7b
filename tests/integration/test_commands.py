"""Signed remote commands end to end: `canopy remote ...` -> real mosquitto -> `canopy run` -> simulator.

The daemon runs as a real child process with its real clock; durations are a
few seconds (the CLI takes fractions of minutes or --seconds).  Judged by
what the simulator's devices do and by what arrives on the broker.
"""

from __future__ import annotations

import argparse
import time

import orjson
import pytest

from core.protocol import envelope
from gateway.cli.commands import add_parsers
from gateway.cli.issuing import send
from simulator.netfault import FaultProxyThread
from tests.conftest import SimThread
from tests.support import site_config, wait_until

SITE, GW = "test-site", "gw-1"


def cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="canopy")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return args.func(args)


def remote(action: str, port: int, key, *extra: str, timeout: float = 15) -> int:
    return cli("remote", action, "--site", SITE, "--gateway", GW, "--key", str(key), "--broker", f"127.0.0.1:{port}",
               "--timeout", str(timeout), *extra)


@pytest.fixture
def farmer_key(tmp_path, capsys):
    key = tmp_path / "farmer.key"
    assert cli("keys", "gen", "--out", str(key)) == 0
    out = capsys.readouterr().out
    assert "farmer:" in out and (tmp_path / "farmer.pub").read_text().strip() in out
    assert (key.stat().st_mode & 0o777) == 0o600
    return key


def farm_commands(pub_file, **valves) -> dict:
    cmds = {
        "issuers": {"farmer": {"public_key_file": str(pub_file), "actions": ["irrigate", "close", "close_all"],
                               "targets": ["zone-*"]}},
        "valves": [
            {"id": f"zone-{n}", "zone": n, "device": "valves", "point": f"zone_{n}", "pulse_point": f"zone_{n}_pulse",
             "max_run": "10m", "interlocks": {"rain": {"device": "weather"}, "tank": {"device": "tank", "below": 0.2}}}
            for n in (1, 2, 3, 4)
        ],
    }
    for v in cmds["valves"]:
        v.update(valves.get(v["id"], {}))
    return cmds


def wait_online(sub):
    wait_until(lambda: (s := sub.latest_state()) and s.get("status") == "online" and "commands" in s, 15,
               what="gateway online with commands")
    wait_until(lambda: {"weather", "tank"} <= {r["device"] for r in sub.records("telemetry")}, 10,
               what="interlock readings")


def events(sub, type_: str) -> list[dict]:
    return [r for m in sub.of("event") for r in m["records"] if r.get("type") == type_]


def results(sub, cmd_id: str) -> list[dict]:
    return [r for m in sub.of("cmd/result") for r in m["records"] if r.get("id") == cmd_id]


def junk(sub) -> dict:
    """The commands' junk counters in the latest …/state (kind -> reason -> count)."""
    state = sub.latest_state() or {}
    return (state.get("commands") or {}).get("counters", {}).get("junk", {})


def zone_open(sim, n: int) -> bool:
    return sim.device("valves").model.is_open(n, sim.clock.now())


def test_irrigate_end_to_end_reads_back_and_closes_by_itself(tmp_path, farm_sim, broker, subscriber_factory,
                                                             gateway_factory, farmer_key, capsys):
    sub = subscriber_factory(broker.port)
    cfg = site_config(tmp_path, sim_port=farm_sim.port, broker={"host": "127.0.0.1", "port": broker.port},
                      commands=farm_commands(tmp_path / "farmer.pub"))
    gw = gateway_factory(cfg)
    wait_online(sub)

    # a forged command first: junk -- counted, never answered nor audited, and nothing moves
    key = envelope.load_private_key(farmer_key.read_bytes())
    forged = envelope.sign(envelope.make(issuer="farmer", site=SITE, gateway=GW, target="zone-2", action="irrigate",
                                         params={"duration_s": 60}), key)
    forged["params"]["duration_s"] = 600
    assert send(forged, host="127.0.0.1", port=broker.port, timeout=1.5) == []
    wait_until(lambda: junk(sub).get("bad_signature"), 5, what="the forged command counted in the state")
    assert not zone_open(farm_sim, 2)
    assert not [a for a in events(sub, "cmd.audit") if a["id"] == forged["id"]]

    t0 = time.monotonic()
    assert remote("irrigate", broker.port, farmer_key, "--zone", "2", "--minutes", "0.05") == 0
    out = capsys.readouterr().out
    assert "accepted" in out and "executed" in out and "zone_2=true" in out and "zone_2_pulse=3" in out
    assert zone_open(farm_sim, 2)
    assert farm_sim.device("valves").model.pulse[1] == 3  # the device timer is armed too
    closed = wait_until(lambda: [e for e in events(sub, "valve.closed") if e["valve"] == "zone-2"], 10, what="valve.closed")
    took = time.monotonic() - t0
    assert not zone_open(farm_sim, 2)
    assert closed[0]["reason"] == "duration_elapsed" and 2.9 <= closed[0]["ran_s"] <= 4.0, closed[0]
    assert closed[0]["state"]["zone_2"] is False and took < 8
    opened = events(sub, "valve.opened")
    assert opened and opened[0]["issuer"] == "farmer" and opened[0]["duration_s"] == 3
    executed = [a for a in events(sub, "cmd.audit") if a["outcome"] == "executed"]
    assert executed and executed[0]["target"] == "zone-2"
    state = wait_until(lambda: (s := sub.latest_state()) and s["commands"]["counters"]["executed"] == 1 and s, 5,
                       what="commands in state")
    assert state["commands"]["counters"]["rejected"] == {}
    assert state["commands"]["counters"]["junk"] == {"bad_signature": {"bad_signature": 1}}
    rc, took = gw.terminate()
    assert rc == 0 and took < 5


def test_kill9_during_a_cycle_then_restart_closes_and_reports(tmp_path, farm_sim, broker, subscriber_factory,
                                                              gateway_factory, farmer_key):
    sub = subscriber_factory(broker.port)
    cfg = site_config(tmp_path, sim_port=farm_sim.port, broker={"host": "127.0.0.1", "port": broker.port},
                      commands=farm_commands(tmp_path / "farmer.pub"))
    gw = gateway_factory(cfg)
    wait_online(sub)
    assert remote("irrigate", broker.port, farmer_key, "--zone", "1", "--seconds", "120") == 0
    assert zone_open(farm_sim, 1)
    gw.kill9()
    assert zone_open(farm_sim, 1), "nothing closed it yet: the gateway is dead (the sim's clock is frozen)"
    gateway_factory(cfg)
    wait_until(lambda: not zone_open(farm_sim, 1), 10, what="valve closed at start-up")
    (ev,) = wait_until(lambda: events(sub, "valve.interrupted"), 10, what="interrupted-cycle event")
    assert ev["valve"] == "zone-1" and ev["issuer"] == "farmer" and ev["duration_s"] == 120
    assert ev["closed"] is True and ev["state"]["zone_1"] is False


def test_broker_cut_during_cycles_valves_still_close(tmp_path, farm_sim, broker, subscriber_factory, gateway_factory,
                                                     farmer_key):
    """zone-3 keeps its timed cycle without the broker and closes at max_run; zone-1 closes 1 s after the link went."""
    proxy = FaultProxyThread("127.0.0.1", broker.port)
    try:
        sub = subscriber_factory(broker.port)
        cmds = farm_commands(tmp_path / "farmer.pub", **{"zone-3": {"max_run": 5},
                                                          "zone-1": {"on_link_loss": "close", "link_loss_after": 1}})
        cfg = site_config(tmp_path, sim_port=farm_sim.port, broker={"host": "127.0.0.1", "port": proxy.port,
                                                                     "keepalive": 5}, commands=cmds)
        gateway_factory(cfg)
        wait_online(sub)
        t_open = time.monotonic()
        assert remote("irrigate", broker.port, farmer_key, "--zone", "3", "--seconds", "5") == 0
        assert remote("irrigate", broker.port, farmer_key, "--zone", "1", "--seconds", "60") == 0
        assert zone_open(farm_sim, 3) and zone_open(farm_sim, 1)
        proxy.refuse(True)
        proxy.reset()  # the 4G link drops, and stays down
        t_cut = time.monotonic()
        wait_until(lambda: not zone_open(farm_sim, 1), 5, what="zone-1 closed by the link-loss policy")
        assert 0.8 <= time.monotonic() - t_cut <= 3.5
        assert zone_open(farm_sim, 3)
        wait_until(lambda: not zone_open(farm_sim, 3), 8, what="zone-3 closed at its max run time")
        assert 4.0 <= time.monotonic() - t_open <= 7.5
        proxy.refuse(False)
        closed = wait_until(lambda: len(events(sub, "valve.closed")) >= 2 and events(sub, "valve.closed"), 15,
                            what="the close events after the link is back")
        reasons = {e["valve"]: e["reason"] for e in closed}
        assert reasons == {"zone-1": "link_loss", "zone-3": "duration_elapsed"}
        assert next(e for e in closed if e["valve"] == "zone-3")["ran_s"] == pytest.approx(5, abs=0.5)
    finally:
        proxy.stop()


def test_unlock_relocks_and_unauthorised_is_refused(tmp_path, broker, subscriber_factory, gateway_factory, capsys):
    sim = SimThread("community", speed=1.0)  # the lock's own relock timer runs in real time
    try:
        duty = tmp_path / "duty.key"
        assert cli("keys", "gen", "--out", str(duty)) == 0
        other = tmp_path / "farmer.key"
        assert cli("keys", "gen", "--out", str(other)) == 0
        capsys.readouterr()
        devices = [{"id": "door-101", "unit": 10, "profile": "door_lock", "poll_interval": 0.3,
                    "location": {"building": "3", "household": "101"}}]
        cmds = {"issuers": {"duty": {"public_key_file": str(tmp_path / "duty.pub"), "actions": ["unlock", "lock"],
                                     "buildings": ["3"]},
                            "farmer": {"public_key_file": str(tmp_path / "farmer.pub"), "actions": ["irrigate"],
                                       "targets": ["*"]}},
                "locks": [{"id": "door-101", "device": "door-101", "relock_after": 2}]}
        sub = subscriber_factory(broker.port)
        cfg = site_config(tmp_path, sim_port=sim.port, broker={"host": "127.0.0.1", "port": broker.port},
                          devices=devices, commands=cmds)
        gateway_factory(cfg)
        wait_until(lambda: (s := sub.latest_state()) and s.get("status") == "online", 15, what="online")
        door = sim.device("door-101").model

        assert remote("unlock", broker.port, other, "--lock", "door-101") == 1
        assert "unauthorised_action" in capsys.readouterr().out
        assert door.locked

        assert remote("unlock", broker.port, duty, "--lock", "door-101", "--json", "--as", "vol-wang") == 0
        lines = [orjson.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
        final = lines[-1]
        assert final["status"] == "executed" and final["state"]["locked"] is False and final["relock_by"] == "device"
        assert final["on_behalf_of"] == "vol-wang"
        assert door.relock_after == 2.0  # armed on the device
        relocked = wait_until(lambda: events(sub, "lock.relocked"), 10, what="relock event")
        assert relocked[0]["by"] == "device" and relocked[0]["issuer"] == "duty"
        assert door.locked
        audits = events(sub, "cmd.audit")
        assert {a["outcome"] for a in audits} == {"rejected", "executed"}
        assert any(a["issuer"] == "farmer" and a["reason"] == "unauthorised_action" for a in audits)
    finally:
        sim.stop()


def test_remote_without_a_gateway_times_out_clearly(tmp_path, broker, farmer_key, capsys):
    assert remote("close-all", broker.port, farmer_key, timeout=1.0) == 3
    assert "no result" in capsys.readouterr().err


def test_junk_never_locks_a_door_out_and_a_lockout_is_per_person(tmp_path, broker, subscriber_factory, gateway_factory,
                                                                  capsys):
    """Issue 12: 5,000 unsigned, unknown-issuer and bad-signature unlocks each cost no record and lock nothing out;
    five signed refused unlocks by one person lock out that person only."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    sim = SimThread("community", speed=1.0)
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="junk-sender")
    try:
        for name in ("duty", "centre"):
            assert cli("keys", "gen", "--out", str(tmp_path / f"{name}.key")) == 0
        capsys.readouterr()
        devices = [{"id": "door-101", "unit": 10, "profile": "door_lock", "poll_interval": 0.3,
                    "location": {"building": "3", "household": "101"}}]
        cmds = {"issuers": {name: {"public_key_file": str(tmp_path / f"{name}.pub"), "actions": ["unlock", "lock"],
                                   "buildings": ["3"]} for name in ("duty", "centre")},
                "locks": [{"id": "door-101", "device": "door-101", "relock_after": 2}]}
        sub = subscriber_factory(broker.port)
        cfg = site_config(tmp_path, sim_port=sim.port, broker={"host": "127.0.0.1", "port": broker.port},
                          devices=devices, commands=cmds)
        gateway_factory(cfg)
        wait_until(lambda: (s := sub.latest_state()) and s.get("status") == "online", 15, what="online")
        stranger, centre = envelope.generate(), envelope.load_private_key((tmp_path / "centre.key").read_bytes())

        def unlock(issuer, key, **kw) -> dict:
            env = envelope.make(issuer=issuer, site=SITE, gateway=GW, target="door-101", action="unlock", v=2, **kw)
            return envelope.sign(env, key) if key is not None else env

        pub.connect("127.0.0.1", broker.port)
        pub.loop_start()
        topic = f"canopy/v1/{SITE}/{GW}/cmd"
        for make in (lambda: unlock("duty", None), lambda: unlock("mallory", stranger), lambda: unlock("duty", stranger)):
            for _ in range(5000):
                pub.publish(topic, orjson.dumps(make()), qos=0)
        wait_until(lambda: sum(sum(r.values()) for r in junk(sub).values()) >= 15000, 60, 0.2, what="15,000 junk counted")
        counted = junk(sub)
        assert counted["unsigned"] == {"unsigned": 5000} and counted["unknown_issuer"] == {"unknown": 5000}
        assert sum(counted["bad_signature"].values()) + sum(counted.get("rate_limited", {}).values()) == 5000
        assert not events(sub, "lock.lockout") and not sub.of("cmd/result") and not events(sub, "cmd.audit")
        assert remote("unlock", broker.port, tmp_path / "duty.key", "--lock", "door-101") == 0

        for _ in range(5):  # signed by the centre for one person, refused (a parameter unlock does not take)
            recs = send(unlock("centre", centre, on_behalf_of="mallory", params={"hold_open": True}),
                        host="127.0.0.1", port=broker.port, timeout=10)
            assert recs[-1]["reason"] == "invalid_params" and recs[-1]["on_behalf_of"] == "mallory"
        (alarm,) = wait_until(lambda: events(sub, "lock.lockout"), 5, what="lock.lockout alarm")
        assert alarm["lock"] == "door-101" and "centre/mallory" in alarm["message"]
        recs = send(unlock("centre", centre, on_behalf_of="mallory"), host="127.0.0.1", port=broker.port, timeout=10)
        assert recs[-1]["reason"] == "lockout"
        recs = send(unlock("centre", centre, on_behalf_of="vol-wang"), host="127.0.0.1", port=broker.port, timeout=10)
        assert recs[-1]["status"] == "executed"
    finally:
        pub.loop_stop()
        pub.disconnect()
        sim.stop()


# -- issue 16: confirmed valves, flow rules, capacity, interlock words -------------------------------------------
def with_feedback(confirm_within: float = 2, **more) -> dict:
    """Every zone's position input as its valve's feedback (the simulated module has one per zone)."""
    return {f"zone-{n}": {"feedback": {"device": "valves", "point": f"zone_{n}_open"}, "confirm_within": confirm_within,
                          **more} for n in (1, 2, 3, 4)}


def test_a_valve_whose_feedback_never_confirms_fails_with_an_alarm_and_is_closed_again(
        tmp_path, farm_sim, broker, subscriber_factory, gateway_factory, farmer_key, capsys):
    sub = subscriber_factory(broker.port)
    cfg = site_config(tmp_path, sim_port=farm_sim.port, broker={"host": "127.0.0.1", "port": broker.port},
                      commands=farm_commands(tmp_path / "farmer.pub", **with_feedback()))
    gateway_factory(cfg)
    wait_online(sub)
    relay = farm_sim.device("valves").model
    relay.set_stuck(2, False)  # the coil switches, the valve does not move

    t0 = time.monotonic()
    assert remote("irrigate", broker.port, farmer_key, "--zone", "2", "--seconds", "60") == 1
    took = time.monotonic() - t0
    out = capsys.readouterr().out
    assert "failed irrigate zone-2: not_confirmed" in out and "zone_2_open reads False 2 s after opening" in out, out
    assert 2.0 <= took < 6, took
    (alarm,) = wait_until(lambda: events(sub, "valve.not_confirmed"), 5, what="valve.not_confirmed alarm")
    assert alarm["valve"] == "zone-2" and alarm["feedback"] == {"zone_2_open": False}
    assert not relay.coil_on(2, farm_sim.clock.now()), "an opening nobody can confirm is commanded closed again"
    assert not zone_open(farm_sim, 2)

    assert remote("irrigate", broker.port, farmer_key, "--zone", "3", "--seconds", "60", "--json") == 0
    final = [orjson.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")][-1]
    assert final["status"] == "executed" and final["confirmed"] is True and final["state"]["zone_3_open"] is True


def test_flow_while_every_valve_is_closed_raises_an_alarm(tmp_path, farm_sim, broker, subscriber_factory, gateway_factory,
                                                          farmer_key):
    sub = subscriber_factory(broker.port)
    interlocks = {"rain": {"device": "weather"}, "tank": {"device": "tank", "below": 0.2},
                  "flow": {"device": "meter-farm", "min": 1.0, "max": 2.0, "settle": 1, "idle_max": 0.05}}
    cmds = farm_commands(tmp_path / "farmer.pub", **{f"zone-{n}": {"interlocks": interlocks} for n in (1, 2, 3, 4)})
    cfg = site_config(tmp_path, sim_port=farm_sim.port, broker={"host": "127.0.0.1", "port": broker.port}, commands=cmds)
    gateway_factory(cfg)
    wait_online(sub)
    relay = farm_sim.device("valves").model
    relay.set_stuck(1, True)  # zone 1 stays open with its coil off: water runs
    farm_sim.clock.advance(20)  # the meter sees it (the simulation's time is frozen otherwise)
    (alarm,) = wait_until(lambda: events(sub, "valve.flow_alarm"), 10, what="flow-while-closed alarm")
    assert alarm["rule"] == "flow_while_closed" and alarm["meter"] == "meter-farm.flow_rate" and alarm["unit"] == "m3/h"
    assert alarm["flow"] > 1 and "with every valve on it closed" in alarm["detail"]
    assert not any(relay.coil_on(n, farm_sim.clock.now()) for n in (1, 2, 3, 4))
    relay.set_stuck(1, None)
    farm_sim.clock.advance(20)
    (cleared,) = wait_until(lambda: events(sub, "valve.flow_alarm_cleared"), 10, what="flow alarm cleared")
    assert cleared["rule"] == "flow_while_closed"
    assert len(events(sub, "valve.flow_alarm")) == 1


def test_three_zones_with_a_capacity_of_two_the_third_waits(tmp_path, farm_sim, broker, subscriber_factory, gateway_factory,
                                                            farmer_key):
    sub = subscriber_factory(broker.port)
    cmds = farm_commands(tmp_path / "farmer.pub")
    cmds["manifolds"] = [{"id": "pump-1", "valves": ["zone-1", "zone-2", "zone-3"], "max_open": 2, "max_wait": "5m"}]
    cfg = site_config(tmp_path, sim_port=farm_sim.port, broker={"host": "127.0.0.1", "port": broker.port}, commands=cmds)
    gateway_factory(cfg)
    wait_online(sub)
    for n in (1, 2):
        assert remote("irrigate", broker.port, farmer_key, "--zone", str(n), "--seconds", "120") == 0
    key = envelope.load_private_key(farmer_key.read_bytes())

    def command(action: str, target: str, params: dict | None = None) -> dict:
        return envelope.sign(envelope.make(issuer="farmer", site=SITE, gateway=GW, target=target, action=action,
                                           params=params, v=2), key)

    third = command("irrigate", "zone-3", {"duration_s": 60})
    recs = send(third, host="127.0.0.1", port=broker.port, timeout=2)
    assert [r["status"] for r in recs] == ["accepted", "queued"], recs
    assert recs[-1]["manifold"] == "pump-1" and "pump-1 already feeds 2 of 2 zones (zone-1, zone-2)" in recs[-1]["detail"]
    assert not zone_open(farm_sim, 3) and zone_open(farm_sim, 1) and zone_open(farm_sim, 2)

    assert send(command("close", "zone-1"), host="127.0.0.1", port=broker.port, timeout=10)[-1]["status"] == "executed"
    done = wait_until(lambda: [r for r in results(sub, third["id"]) if r["status"] == "executed"], 10,
                      what="the queued opening executed")
    assert done[0]["state"]["zone_3"] is True
    assert zone_open(farm_sim, 3) and not zone_open(farm_sim, 1)


def test_an_interlocked_opening_is_refused_naming_the_interlock_and_the_unit(tmp_path, farm_sim, broker, subscriber_factory,
                                                                           gateway_factory, farmer_key, capsys):
    sub = subscriber_factory(broker.port)
    cfg = site_config(tmp_path, sim_port=farm_sim.port, broker={"host": "127.0.0.1", "port": broker.port},
                      commands=farm_commands(tmp_path / "farmer.pub"))
    gateway_factory(cfg)
    wait_online(sub)
    farm_sim.device("tank").model.set_level(0.1)
    wait_until(lambda: any(r["value"] <= 0.1 for r in sub.by_point()[("tank", "level")]), 10, what="the low tank polled")
    capsys.readouterr()
    assert remote("irrigate", broker.port, farmer_key, "--zone", "1", "--seconds", "60") == 1
    out = capsys.readouterr().out
    assert "blocked by interlock tank: tank level 0.1 m is below 0.2 m (tank.level)" in out, out
    assert not zone_open(farm_sim, 1)
