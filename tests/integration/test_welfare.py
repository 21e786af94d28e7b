"""Living alone (issue 16): a welfare check on a noisy power reading with ``change_by`` fires on time.

The real daemon, a real mosquitto, and a household's energy meter on Modbus TCP
(``simulator.physics.HouseholdPower``: a fridge's compressor cycling over standby,
a float that wobbles on every poll and stays within ~70 W; the test
switches a kettle of 1850 W on and off).

Time mapping: the daemon runs on real time, so the rule's ``for: 6s`` stands for
12 h (1 s ≙ 2 h) and the meter is polled every 0.25 s; the meter's own physics run
600x (a simulated fridge cycle of ~40 min passes in ~4 s), so the noise really
wobbles between polls.  The exact timing is unit-tested on a FakeClock
(tests/gateway/alerts/test_welfare.py, rules/test_inactivity.py).
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from simulator.clock import SimClock
from simulator.modbus_tcp import ModbusTcpSimulator, SimulatedDevice
from simulator.physics import HouseholdPower
from simulator.sites import _profiles
from tests.gateway.alerts.support import GROUPS, alert_records, chain, online, write_site
from tests.support import wait_until

FOR = 6.0  # s: "12 h" without a sign of life
POLL = 0.25  # s: the meter's poll interval
MARGIN = 1.0  # s: reading, deciding, committing and delivering, on a busy machine
KETTLE = 1850.0  # W
CHANGE_BY = 100  # W: the kettle counts, the fridge does not
HOUSEHOLD = {"building": "3", "unit": "1", "household": "101"}


class Household:
    """The meter served on Modbus TCP from a thread with its own loop; the test switches the appliances."""

    def __init__(self, speed: float = 600.0, seed: int = 7):
        self.meter = HouseholdPower(SimClock(speed), seed)
        device = SimulatedDevice("power-101", 21, _profiles(None)("energy_meter"), self.meter)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="sim-household", daemon=True)
        self.thread.start()
        self.sim = ModbusTcpSimulator([device])
        asyncio.run_coroutine_threadsafe(self.sim.start(), self.loop).result(10)
        self.port = self.sim.port

    def appliance(self, watts: float) -> None:
        self.loop.call_soon_threadsafe(self.meter.set_appliance, watts)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.sim.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def household():
    h = Household()
    yield h
    h.stop()


def welfare_rules() -> dict:
    """The documented living-alone check (docs/alerts.md), and the same rule without a deadband to compare."""
    rule = {"type": "inactivity", "per": "household", "for": f"{FOR:g}s", "severity": "warning", "class": "welfare"}
    return {"groups": GROUPS, "classes": {"welfare": chain(0, 60)}, "rules": [
        {**rule, "id": "welfare-check", "sources": [{"device": "power-101", "point": "power", "change_by": CHANGE_BY}]},
        {**rule, "id": "welfare-no-deadband", "sources": [{"device": "power-101", "point": "power"}]}]}


def power(sub, since: float = 0.0) -> list[dict]:
    return [r for r in sub.records("telemetry") if r["device"] == "power-101" and r["point"] == "power" and r["ts"] >= since]


def kettle(house: Household, sub) -> tuple[float, float]:
    """Boil the kettle; returns when the test switched it off and the time of the gateway's first reading after that."""
    on_at = time.time()
    house.appliance(KETTLE)
    wait_until(lambda: [r for r in power(sub, on_at) if r["value"] > KETTLE / 2], 3, 0.02, what="the kettle in the telemetry")
    off_at = time.time()
    house.appliance(0.0)
    seen = wait_until(lambda: [r for r in power(sub, off_at) if r["value"] < KETTLE / 2], 3, 0.02,
                      what="the kettle off in the telemetry")
    return off_at, seen[0]["ts"]


def raised(sub, rule: str) -> list[dict]:
    return alert_records(sub, "alert.raised", rule=rule)


def test_welfare_check_on_noisy_power_with_change_by_fires_on_time_and_a_kettle_resets_it(
        tmp_path, household, broker, subscriber_factory, gateway_factory):
    sub = subscriber_factory(broker.port)
    cfg = write_site(tmp_path, welfare_rules(), sim_port=household.port, broker={"host": "127.0.0.1", "port": broker.port},
                     devices=[{"id": "power-101", "unit": 21, "profile": "energy_meter", "poll_interval": POLL,
                               "location": HOUSEHOLD}])
    gateway_factory(cfg)
    wait_until(lambda: online(sub, "power-101"), 15, what="gateway online and polling the meter")

    # 08:00 the kettle: a sign of life (started less than FOR ago, so nothing is due yet)
    assert alert_records(sub) == [], "the gateway took longer than the whole check to start"
    _, first = kettle(household, sub)
    # then nobody for half the time: only the fridge and standby
    time.sleep(FOR / 2)
    assert alert_records(sub) == []
    # 14:00 the kettle again, before the check is due: its clock starts again
    off_at, last = kettle(household, sub)
    time.sleep(max(0.0, first + FOR + MARGIN - time.time()))
    assert raised(sub, "welfare-check") == [], "due 12 h after the first kettle: the second one did not reset the check"

    alert = wait_until(lambda: raised(sub, "welfare-check"), last + FOR + 5 - time.time(), 0.02, what="the welfare alert")[0]
    late = alert["raised_at"] - (last + FOR)
    assert alert["raised_at"] >= last + FOR - 0.05, f"{-late:.2f} s early: the kettle was not counted"
    assert alert["raised_at"] <= off_at + FOR + POLL + MARGIN, f"{late:.2f} s late: the noise counted as activity"
    assert alert["subject"] == "101" and alert["class"] == "welfare" and alert["severity"] == "warning"
    assert alert["location"] == {"site": "sunny-court", **HOUSEHOLD}
    assert alert["message"].startswith("[WARNING] Welfare check: no activity for")
    assert [(r["point"], r["ts"]) for r in alert["readings"]] == [("power", last)], "its evidence: the kettle going off"

    idle = [r["value"] for r in power(sub, last) if r["ts"] < alert["raised_at"]]
    assert len(idle) >= FOR / POLL / 2, "polled all along"
    assert sum(a != b for a, b in zip(idle, idle[1:])) >= 0.8 * (len(idle) - 1), "the reading wobbled from poll to poll"
    assert max(idle) - min(idle) < CHANGE_BY, "the noise stayed inside the deadband"
    assert raised(sub, "welfare-no-deadband") == [], "without change_by every wobble is 'activity': it never fires"

    # she makes tea: the alert resolves by itself
    kettle(household, sub)
    resolved = wait_until(lambda: alert_records(sub, "alert.resolved", rule="welfare-check"), 3, what="resolved by the kettle")
    assert resolved[0]["alert"] == alert["alert"]
    assert len(raised(sub, "welfare-check")) == 1, "one welfare alert, no storm"
