"""Greenhouse scenarios (issue 16): the real daemon, a simulated T/RH sensor and fan relay on Modbus TCP, a real mosquitto.

Time mapping: the daemon runs on real time, so the control's times are scaled --
min_on 2 s / min_off 3 s stand for 2 min / 3 min (1 s ≙ 1 min); the exact timing
is unit-tested on a FakeClock (tests/gateway/controls).  The greenhouse models
live here: the test sets the air temperature and may make the fan's running
contact stick or the sensor fall silent.

These tests need the runtime wiring of ``controls:`` (SiteConfig key, load-time
validation, ``Gateway._start_controls``): they are skipped until it is applied.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

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


def start(tmp_path, greenhouse, broker, subscriber_factory, gateway_factory, **fan):
    sub = subscriber_factory(broker.port)
    rules = {"groups": GROUPS, "classes": {"facility": chain(0, 60)},
             "external": {"control.failed": {"class": "facility"}, "control.sensor_stale": {"class": "facility"}}}
    fan_cfg = {**FAN, "min_on": 2, "min_off": 3, "confirm_within": 1.5, "sensor_stale_after": 1.5, **fan}
    cfg = write_site(tmp_path, [fan_cfg], rules=rules, sim_port=greenhouse.port, devices=[
        {"id": "gh-air", "unit": 1, "profile": "climate_sensor", "poll_interval": 0.2, "location": {"zone": "greenhouse 1"}},
        {"id": "gh-relay", "unit": 2, "profile": "fan_relay", "poll_interval": 0.2, "location": {"zone": "greenhouse 1"}}],
        broker={"host": "127.0.0.1", "port": broker.port})
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
