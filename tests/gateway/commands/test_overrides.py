"""``override``: a signed command holds a local control on or off for a while (the controls' own override API)."""

from __future__ import annotations

import pytest

from core.yamlsrc import ConfigError
from gateway.config.load import load_config
from gateway.controls.service import ControlService
from tests.gateway.commands.support import DUTY, FARMER, Harness, commands, devices, write_site

FAN = {"id": "gh-fan", "kind": "fan", "sensor": {"device": "gh-air", "point": "temperature"},
       "output": {"device": "gh-relay", "point": "fan"}, "on_when": "above", "setpoint": 30.0, "hysteresis": 2.0,
       "max_override": "2h"}
GREENHOUSE = [{"id": "gh-air", "unit": 60, "profile": "climate_sensor", "poll_interval": 5},
              {"id": "gh-relay", "unit": 61, "profile": "fan_relay", "poll_interval": 5, "location": {"building": "gh"}}]


def site() -> dict:
    cmds = commands()
    cmds["issuers"]["farmer"]["actions"].append("override")
    cmds["issuers"]["farmer"]["targets"].append("gh-*")
    return cmds


@pytest.fixture
async def hc(tmp_path):
    h = Harness(tmp_path, site(), devs=devices() + GREENHOUSE, extra={"controls": [FAN]})
    writes = []

    async def write_point(device, point, value):
        writes.append((device, point, value))

    controls = ControlService(h.cfg, h.clock, h.emit, write_point, state_dir=str(h.state_dir))
    await h.start(controls=controls)
    h.controls, h.writes = controls, writes
    yield h
    await h.stop()


async def test_override_on_holds_the_control_then_auto_ends_it(hc):
    env = hc.env("override", "gh-fan", {"state": "on", "duration_s": 1800})
    res = await hc.send(env)
    assert [r["status"] for r in hc.results(env["id"])] == ["accepted", "executed"]
    assert res["state"]["override"] == "on" and res["state"]["mode"] == "override" and res["state"]["output"] == "on"
    assert res["state"]["until"] == pytest.approx(hc.clock.time() + 1800)
    assert res["detail"].startswith("gh-fan held on until 2023-11-15 06:43:20 UTC+08:00 (Asia/Shanghai)")
    snap = hc.controls.snapshot()["gh-fan"]
    assert snap["override"]["state"] == "on" and snap["override"]["by"] == "farmer"
    res = await hc.send(hc.env("override", "gh-fan", {"state": "auto"}))
    assert res["status"] == "executed" and hc.controls.snapshot()["gh-fan"]["override"] is None


async def test_override_signed_for_a_person_names_them(hc):
    await hc.send(hc.env("override", "gh-fan", {"state": "off", "duration_s": 600}, on_behalf_of="zhang"))
    assert hc.controls.snapshot()["gh-fan"]["override"]["by"] == "farmer/zhang"


@pytest.mark.parametrize("params, reason, words", [
    ({"state": "on"}, "invalid_params", "needs duration_s"),
    ({"state": "sideways", "duration_s": 60}, "invalid_params", "one of on, off, auto"),
    ({"state": "on", "duration_s": 3 * 3600}, "invalid_params", "max_override"),
    ({"state": "on", "duration_s": 60, "force": 1}, "invalid_params", "unknown parameter"),
])
async def test_bad_overrides_are_refused_and_change_nothing(hc, params, reason, words):
    res = await hc.send(hc.env("override", "gh-fan", params))
    assert res["status"] == "rejected" and res["reason"] == reason and words in res["detail"]
    assert hc.controls.snapshot()["gh-fan"]["override"] is None


async def test_override_needs_the_action_and_a_known_control(hc):
    res = await hc.send(hc.env("override", "gh-heater", {"state": "on", "duration_s": 60}))
    assert res["reason"] == "unknown_target" and "no control 'gh-heater'" in res["detail"]
    res = await hc.send(hc.env("override", "gh-fan", {"state": "on", "duration_s": 60}, key=DUTY, issuer="duty"))
    assert res["reason"] == "unauthorised_action"
    res = await hc.send(hc.env("irrigate", "gh-fan", {"duration_s": 60}, key=FARMER))
    assert res["reason"] == "unknown_target"  # a control is not a valve


def test_override_without_controls_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(write_site(tmp_path, site()))
    found = [str(p) for p in err.value.problems]
    assert any("commands.issuers.farmer.actions: override needs a control" in p for p in found), found
