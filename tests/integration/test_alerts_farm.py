"""Farm scenario (issue 5): soil too dry for the debounce time -> one warning; wet again past the
hysteresis -> resolved.  Real daemon, farm simulator, real mosquitto.

Time mapping: 1 s ≙ 10 min, so `delay_on: 1s` is the 10-minute debounce of config/farm.yaml.  The
simulator is frozen (speed 0) and jumped forward 2 simulated hours while zone 1 irrigates.
"""

from __future__ import annotations

import time

from tests.gateway.alerts.support import alert_records, farm_devices, online, write_site
from tests.support import wait_until


def test_dry_soil_warns_once_and_resolves_after_irrigation(tmp_path, farm_sim, broker, subscriber_factory, gateway_factory):
    sub = subscriber_factory(broker.port)
    moisture = farm_sim.device("soil-1").expected(farm_sim.clock.now())["moisture"]
    below = round(moisture + 1.0, 1)  # the probe reads just under the threshold
    rules = {
        "groups": {"farmer": {"recipients": ["farmer-zhang"]}, "cooperative": {"recipients": ["coop"]}},
        "classes": {"field": {"escalation": [{"group": "farmer"}, {"group": "cooperative", "after": "2h"}]}},
        "rules": [{"id": "soil-dry", "type": "threshold", "device": "soil-1", "point": "moisture", "below": below,
                   "hysteresis": 2.0, "delay_on": "1s", "delay_off": "1s", "severity": "warning", "class": "field"}],
    }
    cfg = write_site(tmp_path, rules, devices=farm_devices(0.2), sim_port=farm_sim.port, site="green-valley",
                     broker={"host": "127.0.0.1", "port": broker.port})
    gateway_factory(cfg)
    wait_until(lambda: online(sub, "soil-1"), 15, what="gateway online")
    rec = wait_until(lambda: alert_records(sub, "alert.raised"), 8, what="dry-soil warning")[0]
    first_dry = rec["readings"][0]  # the reading that went below the threshold
    assert first_dry["point"] == "moisture" and first_dry["value"] == moisture
    assert 1.0 <= rec["raised_at"] - first_dry["ts"] < 1.5, "raised before (or long after) the debounce time"
    assert rec["severity"] == "warning" and rec["device"] == "soil-1" and rec["group"] == "farmer"
    assert rec["location"] == {"site": "green-valley", "zone": "zone-1"}
    assert rec["message"] == f"[WARNING] soil-1 moisture is {moisture} %, below {below} % at zone-1"
    time.sleep(1.0)
    assert len(alert_records(sub, "alert.raised")) == 1, "one warning while it stays dry"

    # irrigate zone 1 for two simulated hours: the soil comes back above threshold + hysteresis
    valves = farm_sim.device("valves").model
    farm_sim.loop.call_soon_threadsafe(lambda: valves.write("zone_1", True, farm_sim.clock.now()))
    time.sleep(0.1)
    farm_sim.clock.advance(2 * 3600)
    wet = farm_sim.device("soil-1").expected(farm_sim.clock.now())["moisture"]
    assert wet > below + 2.0, f"irrigation did not bring the soil back ({moisture} -> {wet})"
    res = wait_until(lambda: alert_records(sub, "alert.resolved"), 8, what="resolved")
    assert res[0]["alert"] == rec["alert"] and res[0]["resolved_by"] == "condition"
    assert res[0]["readings"][0]["value"] >= below + 2.0
    assert len(alert_records(sub, "alert.raised")) == 1
