"""The ``controls:`` section: every problem names file:line:key, a valid one loads, YAML's on/off are understood."""

from __future__ import annotations

import pytest

from core.yamlsrc import ConfigError
from tests.gateway.controls.support import load_file
from tests.support import PROFILES

SITE = """\
site: green-valley
gateway: gh-gw
profiles_dir: {profiles}
buses:
  - id: gh-bus
    type: modbus_tcp
    host: 127.0.0.1
    port: 5021
    devices:
      - {{id: gh-air, unit: 1, profile: climate_sensor, poll_interval: 5}}
      - {{id: gh-relay, unit: 2, profile: fan_relay, poll_interval: 2}}
rules:
  timezone: Asia/Shanghai
  rules:
    - id: too-hot
      type: threshold
      device: gh-air
      point: temperature
      above: 40
      outputs: [{{device: gh-relay, point: mister}}]
controls:
  - id: gh-fan
    kind: fan
    sensor: {{device: gh-air, point: temperature}}
    output: {{device: gh-relay, point: fan}}
    feedback: {{device: gh-relay, point: fan_running}}
    on_when: above
    setpoint: 30
    hysteresis: 2
    min_on: 2m
    min_off: 3m
    max_run: 2h
    safe_state: off
    setpoints:
      - {{from: "20:00", to: "06:00", setpoint: 26}}
    active_hours: ["05:00-23:00"]
    labels: {{en: Greenhouse 1 fan, zh-CN: 1号温室风机}}
"""

# (name, old, new, marker of the expected line, key, words)
CASES = [
    ("unknown sensor device", "sensor: {device: gh-air,", "sensor: {device: gh-aire,", "gh-aire", "controls[0].sensor.device",
     "unknown device 'gh-aire' (devices: gh-air, gh-relay)"),
    ("sensor not a number", "sensor: {device: gh-air, point: temperature}", "sensor: {device: gh-relay, point: fan_running}",
     "sensor: {device: gh-relay", "controls[0].sensor.point", "'fan_running' is a bool point; a control regulates a number"),
    ("output not writable", "output: {device: gh-relay, point: fan}", "output: {device: gh-relay, point: mister_running}",
     "output: {", "controls[0].output.point", "point 'mister_running' of 'gh-relay' is not writable"),
    ("on value of the wrong type", "output: {device: gh-relay, point: fan}", "output: {device: gh-relay, point: fan, on_value: 1}",
     "output: {", "controls[0].output.on_value", "'fan' is a bool point; on_value 1 does not fit"),
    ("output with two owners", "output: {device: gh-relay, point: fan}", "output: {device: gh-relay, point: mister}",
     "output: {", "controls[0].output", "gh-relay/mister is already driven by the outputs of rule 'too-hot': one output has one owner"),
    ("unknown feedback point", "point: fan_running}", "point: fan_runing}", "fan_runing", "controls[0].feedback.point",
     "device 'gh-relay' has no point 'fan_runing'"),
    ("stale sooner than two polls", "    safe_state: off\n", "    safe_state: off\n    sensor_stale_after: 6s\n",
     "sensor_stale_after: 6s", "controls[0].sensor_stale_after", "shorter than two polls of 'gh-air' (poll_interval 5 s)"),
    ("confirm sooner than a poll", "    safe_state: off\n", "    safe_state: off\n    confirm_within: 1s\n",
     "confirm_within: 1s", "controls[0].confirm_within", "no feedback could ever confirm"),
    ("max run not longer than min on", "max_run: 2h", "max_run: 1m", "- id: gh-fan", "controls[0]",
     "max_run (60 s) must be longer than min_on (120 s)"),
    ("unknown safe state", "safe_state: off", "safe_state: maybe", "safe_state: maybe", "controls[0].safe_state", "'on', 'off' or 'hold'"),
    ("unquoted setpoint time", '{from: "20:00", to: "06:00", setpoint: 26}', '{from: 20:00, to: "06:00", setpoint: 26}',
     "from: 20:00", "controls[0].setpoints[0].from", "put it in quotes"),
    ("bad active hours", '["05:00-23:00"]', '["05:00-25:00"]', "active_hours", "controls[0].active_hours[0]", "not a time of day"),
    ("unknown time zone", "    safe_state: off\n", "    safe_state: off\n    timezone: Mars/Olympus\n", "Mars/Olympus",
     "controls[0].timezone", "unknown time zone"),
    ("unknown key", "    hysteresis: 2\n", "    hysteresis: 2\n    hysterisis: 2\n", "hysterisis", "controls[0].hysterisis", "unknown key"),
    ("on_when missing", "    on_when: above\n", "", "- id: gh-fan", "controls[0].on_when", "required key is missing"),
    ("duplicate id", "    labels: {en: Greenhouse 1 fan, zh-CN: 1号温室风机}\n",
     "    labels: {en: Greenhouse 1 fan, zh-CN: 1号温室风机}\n  - {id: gh-fan, sensor: {device: gh-air, point: humidity}, "
     "output: {device: gh-relay, point: fan}, on_when: below, setpoint: 70}\n", "point: humidity", "controls[1].id",
     "duplicate control id 'gh-fan' (first at line"),
]


@pytest.mark.parametrize("name,old,new,marker,key,words", CASES, ids=[c[0] for c in CASES])
def test_invalid_controls_name_file_line_and_key(tmp_path, name, old, new, marker, key, words):
    text = SITE.format(profiles=PROFILES)
    assert old in text, "test case does not apply"
    text = text.replace(old, new, 1)
    path = tmp_path / "site.yaml"
    path.write_text(text, encoding="utf-8")
    line = next(i + 1 for i, ln in enumerate(text.splitlines()) if marker in ln)
    with pytest.raises(ConfigError) as exc:
        load_file(path)
    err = str(exc.value)
    assert f"{path}:{line}: {key}:" in err, err
    assert words in err, err


def test_the_base_site_is_valid_and_yaml_on_off_are_words(tmp_path):
    path = tmp_path / "site.yaml"
    path.write_text(SITE.format(profiles=PROFILES), encoding="utf-8")
    cfg = load_file(path)
    fan = cfg.site.controls[0]
    assert fan.safe_state == "off" and fan.min_on == 120 and fan.max_run == 7200
    assert fan.setpoints[0].setpoint == 26 and fan.label("zh-CN") == "1号温室风机" and fan.label("en") == "Greenhouse 1 fan"
