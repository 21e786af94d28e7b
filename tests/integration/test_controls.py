"""Greenhouse scenarios (issue 16): the real daemon, a simulated T/RH sensor and fan relay on Modbus TCP, a real mosquitto.

Time mapping: the daemon runs on real time, so the control's times are scaled --
min_on 2 s / min_off 3 s stand for 2 min / 3 min (1 s ≙ 1 min); the exact timing
is unit-tested on a FakeClock (tests/gateway/controls).  The greenhouse models
live here: the test sets the air temperature and may make the fan's running
contact stick or the sensor fall silent.  A manual override is a signed protocol
v2 ``override`` command sent through the broker as the farmer's app would
(docs/commands.md, *Overrides of local controls*); its ``duration_s`` is scaled
the same way (5 s ≙ 5 min).
"""

from __future__ import annotations

import asyncio
import threading
import time

import orjson
import pytest
import yaml

from core.protocol import envelope
from gateway.cli.issuing import send
from simulator.clock import SimClock
from simulator.modbus_tcp import ModbusTcpSimulator, SimulatedDevice
from simulator.physics import Model
from simulator.sites import _profiles
from tests.gateway.alerts.support import GROUPS, alert_records, chain, online
from tests.gateway.controls.support import FAN, write_site
from tests.support import wait_until


class Air(Model):
    """Air temperature and humidity as the test sets them."""

    def __init__(self, clock: SimClock, seed: int) -> None:
        super().__init__(clock, seed)
        self.temperature, self.humidity = 24.0, 60.0

    def read(self, now: float) -> dict:
        return {"temperature": self.temperature, "humidity": self.humidity}


class FanRelay(Model):
    """Coils and their running contacts; a contact in ``stuck`` does not follow its coil."""

    def __init__(self, clock: SimClock, seed: int) -> None:
        super().__init__(clock, seed)
        self.coils = {"fan": False, "mister": False}
        self.running = {"fan": False, "mister": False}
        self.stuck: set[str] = set()
        self.history: list[tuple[float, str, bool]] = []

    def write(self, point: str, value, now: float) -> None:
        if point not in self.coils:
            raise ValueError(f"{point} is not writable")
        self.coils[point] = bool(value)
        self.history.append((time.time(), point, bool(value)))
        if point not in self.stuck:
            self.running[point] = bool(value)

    def read(self, now: float) -> dict:
        return {**self.coils, **{f"{k}_running": v for k, v in self.running.items()}}


class Greenhouse:
    """The sensor and the relay served on Modbus TCP from a thread with its own loop."""

    def __init__(self):
        clock = SimClock(0)
        profile = _profiles(None)
        self.air, self.relay = Air(clock, 1), FanRelay(clock, 2)
        self.devices = [SimulatedDevice("gh-air", 1, profile("climate_sensor"), self.air),
                        SimulatedDevice("gh-relay", 2, profile("fan_relay"), self.relay)]
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="sim-greenhouse", daemon=True)
        self.thread.start()
        self.sim = ModbusTcpSimulator(self.devices)
        asyncio.run_coroutine_threadsafe(self.sim.start(), self.loop).result(10)
        self.port = self.sim.port

    def silence(self, device: str, on: bool = True) -> None:
        self.sim.device(device).fault = "silent" if on else None

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.sim.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def greenhouse():
    g = Greenhouse()
    yield g
    g.stop()


def control_records(sub, type_: str = "control.switched") -> list[dict]:
    with sub.lock:
        msgs = [m for t, m, _ in sub.messages if t.endswith("/event") and isinstance(m, dict) and m.get("lane")]
    return [{**r, "_lane": m["lane"]} for m in msgs for r in m["records"] if r.get("type") == type_]


FARMER = envelope.generate()  # the farmer's app: may hold the greenhouse's controls (docs/commands.md, Overrides)
CMD_TOPIC = "canopy/v1/green-valley/gh-gw/cmd"


def start(tmp_path, greenhouse, broker, subscriber_factory, gateway_factory, commands: dict | None = None, **fan):
    sub = subscriber_factory(broker.port)
    rules = {"groups": GROUPS, "classes": {"facility": chain(0, 60)},
             "external": {"control.failed": {"class": "facility"}, "control.sensor_stale": {"class": "facility"}}}
    fan_cfg = {**FAN, "min_on": 2, "min_off": 3, "confirm_within": 1.5, "sensor_stale_after": 1.5, **fan}
    cfg = write_site(tmp_path, [fan_cfg], rules=rules, sim_port=greenhouse.port, devices=[
        {"id": "gh-air", "unit": 1, "profile": "climate_sensor", "poll_interval": 0.2, "location": {"zone": "greenhouse 1"}},
        {"id": "gh-relay", "unit": 2, "profile": "fan_relay", "poll_interval": 0.2, "location": {"zone": "greenhouse 1"}}],
        broker={"host": "127.0.0.1", "port": broker.port})
    if commands is not None:  # tests/gateway/controls/support.write_site has no `commands:`: added here
        data = yaml.safe_load(cfg.read_text(encoding="utf-8"))
        cfg.write_text(yaml.safe_dump({**data, "commands": commands}, sort_keys=False, allow_unicode=True), encoding="utf-8")
    gw = gateway_factory(cfg)
    wait_until(lambda: online(sub, "gh-air", "gh-relay"), 15, what="gateway online and polling")
    wait_until(lambda: control_records(sub), 5, what="the start command")
    return sub, gw


def test_the_fan_follows_the_temperature_with_hysteresis_never_faster_than_its_minimum_times_and_raises_no_alert(
        tmp_path, greenhouse, broker, subscriber_factory, gateway_factory):
    sub, _ = start(tmp_path, greenhouse, broker, subscriber_factory, gateway_factory)
    relay = greenhouse.relay
    greenhouse.air.temperature = 31.0
    wait_until(lambda: relay.coils["fan"], 3, 0.02, what="fan on above the setpoint")
    greenhouse.air.temperature = 28.5  # inside the band: stays on
    time.sleep(2.5)
    assert relay.coils["fan"]
    greenhouse.air.temperature = 27.5
    wait_until(lambda: not relay.coils["fan"], 3, 0.02, what="fan off below setpoint - hysteresis")
    # a noisy sensor around the setpoint for 8 s: switches no faster than min_on 2 s / min_off 3 s
    t_end = time.time() + 8
    i = 0
    while time.time() < t_end:
        greenhouse.air.temperature = (31.0, 27.0)[i % 2]
        i += 1
        time.sleep(0.1)
    fan = [(t, v) for t, p, v in relay.history if p == "fan"]
    for (t1, v1), (t2, _) in zip(fan[1:], fan[2:]):
        assert t2 - t1 >= (2.0 if v1 else 3.0) - 0.3, fan
    switched = wait_until(lambda: len(control_records(sub)) >= len(fan) and control_records(sub), 3, what="records")
    assert {r["_lane"] for r in switched} == {"event"} and switched[1]["reason"] == "setpoint"
    assert switched[1]["texts"]["en"].startswith("Greenhouse 1 fan switched on: temperature 31 degC is above 30 degC")
    assert alert_records(sub) == [], "normal cycling raises no alert, so no ack could turn the fan off"


def test_a_silent_sensor_sends_the_fan_to_its_safe_state_with_an_alert(tmp_path, greenhouse, broker, subscriber_factory,
                                                                        gateway_factory):
    sub, _ = start(tmp_path, greenhouse, broker, subscriber_factory, gateway_factory)
    greenhouse.air.temperature = 33.0
    wait_until(lambda: greenhouse.relay.coils["fan"], 3, 0.02, what="fan on")
    greenhouse.silence("gh-air")
    wait_until(lambda: not greenhouse.relay.coils["fan"], 5, 0.02, what="safe state: off")
    raised = wait_until(lambda: alert_records(sub, "alert.raised", rule="control.sensor_stale"), 5, what="stale alert")
    assert raised[0]["subject"] == "gh-fan" and raised[0]["class"] == "facility"
    greenhouse.silence("gh-air", False)
    wait_until(lambda: alert_records(sub, "alert.resolved", rule="control.sensor_stale"), 5, what="sensor back")
    wait_until(lambda: greenhouse.relay.coils["fan"], 6, 0.05, what="auto again (after min_off)")


def test_a_fan_that_never_confirms_fails_raises_an_alarm_and_is_switched_off(tmp_path, greenhouse, broker,
                                                                               subscriber_factory, gateway_factory):
    sub, _ = start(tmp_path, greenhouse, broker, subscriber_factory, gateway_factory)
    greenhouse.relay.stuck.add("fan")
    t0 = time.time()
    greenhouse.air.temperature = 33.0
    failed = wait_until(lambda: alert_records(sub, "alert.raised", rule="control.failed"), 5, 0.02, what="control.failed")
    assert failed[0]["raised_at"] - t0 < 1.5 + 0.2 + 1.0, "within confirm_within of the switch"
    assert "did not switch on" in failed[0]["texts"]["en"]
    wait_until(lambda: not greenhouse.relay.coils["fan"], 3, 0.02, what="safe state after the fault")
    state = wait_until(lambda: (s := sub.latest_state()) and s.get("controls", {}).get("gh-fan", {}).get("mode") == "fault" and s,
                       5, what="mode fault in …/state")
    assert state["controls"]["gh-fan"]["faults"] == 1


# --------------------------------------------------------------------------- manual override (a signed command)

def override_commands() -> dict:
    return {"issuers": {"farmer": {"public_key": envelope.public_key_text(FARMER.public_key()),
                                   "actions": ["override"], "targets": ["gh-*"]}}}


def override_env(state: str, duration_s: float | None = None) -> dict:
    """A protocol v2 command envelope, unsigned: ``envelope.sign(…, FARMER)`` makes it the farmer's."""
    params = {"state": state, **({"duration_s": duration_s} if duration_s is not None else {})}
    return envelope.make(v=2, issuer="farmer", site="green-valley", gateway="gh-gw", target="gh-fan", action="override",
                         params=params)


def fan_control(sub) -> dict:
    return ((sub.latest_state() or {}).get("controls") or {}).get("gh-fan") or {}


def fan_writes(relay, since: float) -> list[tuple[float, bool]]:
    return [(t, v) for t, p, v in list(relay.history) if p == "fan" and t >= since]


def hold_against_auto(sub, greenhouse, broker, state: str, hold: float, temperatures: tuple[float, ...]) -> dict:
    """A signed override ``state`` for ``hold`` s while the air (cycling through ``temperatures``) says the opposite.

    Asserts the fan switches at once, is never switched back while the override holds, then returns to
    auto within a decision (≤ 1 s) + a poll + a margin of its end.  Returns the command's ``executed`` result.
    """
    relay, on = greenhouse.relay, state == "on"
    greenhouse.air.temperature = temperatures[0]
    wait_until(lambda: relay.coils["fan"] != on and fan_control(sub).get("output") == ("off" if on else "on"), 6, 0.02,
               what=f"auto: fan {'off' if on else 'on'} at {temperatures[0]} degC")  # min_off/min_on may hold it a while
    t0 = time.time()
    res = send(envelope.sign(override_env(state, hold), FARMER), host="127.0.0.1", port=broker.port, timeout=10)
    assert [r["status"] for r in res] == ["accepted", "executed"], res
    done = res[-1]
    until = done["state"]["until"]
    assert done["state"]["override"] == state and done["state"]["mode"] == "override" and done["state"]["output"] == state
    assert t0 + hold - 0.1 <= until <= time.time() + hold + 0.1
    assert done["detail"].startswith(f"gh-fan held {state} until ") and done["detail"].endswith("then back to automatic")
    wait_until(lambda: relay.coils["fan"] == on, 2, 0.02, what=f"fan {state} by the override")
    shown = wait_until(lambda: (c := fan_control(sub)).get("mode") == "override" and c, 3, what="mode override in …/state")
    assert shown["override"]["state"] == state and shown["override"]["by"] == "farmer"
    assert shown["override"]["until"] == pytest.approx(until, abs=0.01)
    i = 0
    while time.time() < until - 0.3:  # the air says the opposite the whole time: the override holds
        greenhouse.air.temperature = temperatures[i % len(temperatures)]
        i += 1
        assert relay.coils["fan"] == on, f"fan switched back {until - time.time():.2f} s before the override's end"
        time.sleep(0.1)
    greenhouse.air.temperature = temperatures[-1]
    back = wait_until(lambda: [(t, v) for t, v in fan_writes(relay, t0) if v != on], until - time.time() + 3, 0.02,
                      what="the fan back to auto after the override")
    assert until <= back[0][0] <= until + 1.0 + 0.2 + 1.3, f"back to auto {back[0][0] - until:+.2f} s after the end"
    assert [v for _, v in fan_writes(relay, t0)] == [on, not on], "one switch by the override, one back"
    wait_until(lambda: (c := fan_control(sub)).get("mode") == "auto" and c.get("override") is None
               and c.get("output") == ("off" if on else "on"), 3, what="mode auto again in …/state")
    return done


def test_a_signed_override_holds_the_fan_against_the_temperature_for_its_time_then_returns_to_auto(
        tmp_path, greenhouse, broker, subscriber_factory, gateway_factory):
    """1 s ≙ 1 min: held on for 5 min in a cool house, then off for 4 min in a hot one; an unsigned override does nothing."""
    sub, _ = start(tmp_path, greenhouse, broker, subscriber_factory, gateway_factory, commands=override_commands())
    relay = greenhouse.relay
    greenhouse.air.temperature = 24.0  # cool: auto keeps the fan off
    wait_until(lambda: fan_control(sub).get("output") == "off" and not relay.coils["fan"], 5, what="auto: fan off")

    # an unsigned override: junk -- counted, never answered, and the fan does not move
    unsigned = override_env("on", 300)
    sub.publish(CMD_TOPIC, orjson.dumps(unsigned))
    wait_until(lambda: ((sub.latest_state() or {}).get("commands") or {}).get("counters", {}).get("junk", {}).get("unsigned"),
               5, what="the unsigned override counted as junk in …/state")
    assert not relay.coils["fan"] and fan_writes(relay, 0)[-1][1] is False
    assert fan_control(sub)["mode"] == "auto" and fan_control(sub)["override"] is None
    assert control_records(sub, "control.override") == []
    assert not [m for m in sub.of("cmd/result") if any(r.get("id") == unsigned["id"] for r in m["records"])]

    # held on for 5 s while the air is 24-27 °C (auto: off below 28 °C), then back to auto: off
    hold_against_auto(sub, greenhouse, broker, "on", 5, (24.0, 27.0, 25.5))
    # and off for 4 s while the air is 31-35 °C (auto: on above 30 °C), then back to auto: on
    hold_against_auto(sub, greenhouse, broker, "off", 4, (33.0, 35.0, 31.0))

    overrides = wait_until(lambda: len(control_records(sub, "control.override")) >= 4 and control_records(sub, "control.override"),
                           3, what="four control.override records")
    assert [(o["state"], o["ended"], o["by"]) for o in overrides] == [
        ("on", None, "farmer"), ("on", "expired", "farmer"), ("off", None, "farmer"), ("off", "expired", "farmer")]
    assert {o["_lane"] for o in overrides} == {"event"}
    assert overrides[0]["texts"]["en"].startswith("Greenhouse 1 fan: manual on by farmer until ")
    switched = [(r["state"], r["reason"], r["mode"]) for r in control_records(sub)]
    assert switched == [("off", "start", "auto"), ("on", "override", "override"), ("off", "override_ended", "auto"),
                        ("on", "setpoint", "auto"), ("off", "override", "override"), ("on", "override_ended", "auto")], switched
    held = [r for r in control_records(sub) if r["reason"] == "override"]
    assert [r["by"] for r in held] == ["farmer", "farmer"] and all(r["until"] for r in held)
    assert alert_records(sub) == [], "an override is no alarm"
