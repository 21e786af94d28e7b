"""Invalid rules are config errors with file, line and key; `canopy validate` exits 2."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from core.protocol import envelope
from core.yamlsrc import ConfigError
from gateway.cli.main import main
from gateway.config.load import load_config
from tests.support import PROFILES, ROOT

SITE = """\
site: sunny-court
gateway: gw-3
profiles_dir: {profiles}
buses:
  - id: block-3
    type: modbus_tcp
    host: 127.0.0.1
    port: 5021
    devices:
      - {{id: smoke-shed, unit: 1, profile: smoke_gas_detector, poll_interval: 1, location: {{building: "3"}}}}
      - {{id: door-101, unit: 10, profile: door_lock, poll_interval: 1, location: {{household: "101"}}}}
      - {{id: meter-101, unit: 20, profile: water_meter, poll_interval: 5, location: {{household: "101"}}}}
      - {{id: sounder, unit: 30, profile: relay_module, poll_interval: 5}}
rules:
  timezone: UTC
  groups:
    office: {{recipients: [desk]}}
    volunteers: {{recipients: [wang]}}
  classes:
    fire:
      escalation:
        - {{group: office}}
        - {{group: volunteers, after: 2m}}
  schedules:
    night: {{quiet_hours: ["22:00-07:00"]}}
  rules:
    - id: smoke
      type: state
      device: smoke-shed
      point: alarm
      to: true
      severity: critical
      class: fire
      outputs: [{{device: sounder, point: sounder}}]
    - id: heat
      type: rate
      device: smoke-shed
      point: temperature
      rise: 3
      window: 1m
      alert: false
    - id: fire
      type: all
      of: [smoke, heat]
    - id: welfare
      type: inactivity
      sources:
        - {{device: door-101, point: door_open}}
        - {{device: meter-101, point: flow_rate, above: 0.01}}
      for: 12h
      schedule: night
    - id: tap
      type: flow
      device: meter-101
      point: flow_rate
      for: 30m
""" + """\
commands:
  issuers:
    desk: {{public_key: "KEY", ack: all}}
    vol-app: {{public_key: "KEY", ack: [fire, "group:volunteers"]}}
""".replace("KEY", envelope.public_key_text(envelope.generate().public_key()))

# (name, old, new, marker of the expected line, key, words)
CASES = [
    ("unknown device", "      device: smoke-shed\n      point: alarm", "      device: smoke-shedd\n      point: alarm",
     "device: smoke-shedd", "rules.rules[0].device", "unknown device 'smoke-shedd'"),
    ("unknown point", "point: temperature", "point: temprature", "point: temprature", "rules.rules[1].point",
     "has no point 'temprature'"),
    ("unknown source point", "{device: door-101, point: door_open}", "{device: door-101, point: door_opened}",
     "door_opened", "rules.rules[3].sources[0].point", "no point 'door_opened'"),
    ("negative duration", "for: 30m", "for: -30", "for: -30", "rules.rules[4].for", "greater than 0"),
    ("not a duration", "window: 1m", "window: a while", "window: a while", "rules.rules[1].window", "not a duration"),
    ("too long", "for: 12h", "for: 400d", "for: 400d", "rules.rules[3].for", "less than or equal"),
    ("window shorter than two polls", "window: 1m", "window: 1s", "window: 1s", "rules.rules[1].window",
     "shorter than two polls"),
    ("flow shorter than a poll", "for: 30m", "for: 2s", "for: 2s", "rules.rules[4].for", "shorter than the poll interval"),
    ("quiet hours all week", 'night: {quiet_hours: ["22:00-07:00"]}', 'night: {quiet_hours: ["00:00-12:00", "12:00-24:00"]}',
     "for: 12h", "rules.rules[3].for", "cover the whole week"),
    ("bad quiet window", '"22:00-07:00"', '"22:00-25:00"', "quiet_hours", "rules.schedules.night.quiet_hours[0]",
     "not a time of day"),
    ("cycle", "of: [smoke, heat]", "of: [smoke, fire2]\n    - id: fire2\n      type: any\n      of: [fire]",
     "of: [fire]", "rules.rules[3].of[0]", "cycle in composition: fire -> fire2 -> fire"),
    ("self reference", "of: [smoke, heat]", "of: [smoke, fire]", "of: [smoke, fire]", "rules.rules[2].of[1]", "cannot contain itself"),
    ("unknown rule in of", "of: [smoke, heat]", "of: [smoke, hot]", "of: [smoke, hot]", "rules.rules[2].of[1]", "unknown rule 'hot'"),
    ("unknown class", "class: fire", "class: flames", "class: flames", "rules.rules[0].class", "unknown class 'flames'"),
    ("unknown group", "{group: volunteers, after: 2m}", "{group: neighbours, after: 2m}", "neighbours",
     "rules.classes.fire.escalation[1].group", "unknown group 'neighbours'"),
    ("delays not increasing", "{group: volunteers, after: 2m}", "{group: volunteers, after: 0}", "escalation:",
     "rules.classes.fire.escalation", "must come later"),
    ("output not writable", "{device: sounder, point: sounder}", "{device: smoke-shed, point: alarm}", "outputs:",
     "rules.rules[0].outputs[0].point", "not writable"),
    ("wrong type for to", "to: true", "to: 5", "to: 5", "rules.rules[0].to", "can never match"),
    ("rate on a bool", "point: temperature", "point: fault", "point: fault", "rules.rules[1].point", "needs a number"),
    ("unknown rule type", "type: flow", "type: flood", "type: flood", "rules.rules[4].type", "unknown type 'flood'"),
    ("unknown key", "      rise: 3", "      rise: 3\n      rize: 4", "rize: 4", "rules.rules[1].rize", "unknown key"),
    ("duplicate id", "- id: tap", "- id: heat  # again", "# again", "rules.rules[4].id", "duplicate rule id 'heat' (first at line"),
    ("household missing", "location: {household: \"101\"}}\n      - {id: meter-101", "}\n      - {id: meter-101",
     "{device: door-101, point: door_open}", "rules.rules[3].sources[0].device", "no location.household"),
    ("unknown schedule", "schedule: night", "schedule: nite", "schedule: nite", "rules.rules[3].schedule", "unknown schedule 'nite'"),
    ("unknown timezone", "timezone: UTC", "timezone: Mars/Olympus", "timezone:", "rules.timezone", "unknown time zone"),
    ("ack is not a group name", "    volunteers: {recipients: [wang]}", "    volunteers: {recipients: [wang]}\n    ack: {recipients: [x]}",
     "ack: {recipients", "rules.groups.ack", "'ack' cannot be a group name: …/alert/ack is where acknowledgements arrive"),
    ("ack names an unknown class", "ack: [fire,", "ack: [flames,", "ack: [flames", "commands.issuers.vol-app.ack[0]",
     "unknown alert class 'flames' (classes: fire"),
    ("ack names an unknown group", '"group:volunteers"', '"group:neighbours"', "group:neighbours",
     "commands.issuers.vol-app.ack[1]", "unknown group 'neighbours' (groups: office, volunteers)"),
    ("ack is all or a list", "ack: all", "ack: everyone", "ack: everyone", "commands.issuers.desk.ack", "expected `all`, or a list"),
    ("ack entry is a class or group:name", '"group:volunteers"', '"group: volunteers"', '"group: volunteers"',
     "commands.issuers.vol-app.ack[1]", "is not an alert class or group:<recipient group>"),
    ("issuer that may do nothing", ", ack: all}", "}", "desk: {public_key", "commands.issuers.desk",
     "give actions (commands this issuer may send), ack"),
    ("dead time without policy", "      alert: false", "      alert: false\n      dead_time: 5m", "- id: heat",
     "rules.rules[1]", "dead_time only applies"),
    ("outputs on a rule without alerts", "      alert: false", "      alert: false\n      outputs: [{device: sounder, point: beacon}]",
     "point: beacon}]", "rules.rules[1].outputs", "its outputs would never be driven; for a closed loop (a fan on "
     "temperature, a heater, a mister) use the controls: section (docs/controls.md)"),
    ("change_by on a bool point", "{device: door-101, point: door_open}", "{device: door-101, point: door_open, change_by: 5}",
     "change_by: 5", "rules.rules[3].sources[0].change_by", "'door_open' is a bool point; change_by needs a number"),
    ("change_by not a number", "{device: meter-101, point: flow_rate, above: 0.01}", "{device: meter-101, point: flow_rate, change_by: lots}",
     "change_by: lots", "rules.rules[3].sources[1].change_by", "'lots' is neither a number nor a percentage like '5%'"),
    ("change_by with on: above", "above: 0.01}", "above: 0.01, change_by: 2}", "change_by: 2", "rules.rules[3].sources[1]",
     "change_by applies to on: change or on: increase"),
    ("incident named by one rule", "      class: fire\n      outputs", "      class: fire\n      incident: smoek\n      outputs",
     "incident: smoek", "rules.rules[0].incident", "incident 'smoek' is named by this rule only: declare it under rules.incidents"),
    ("incident on a condition", "      alert: false", "      alert: false\n      incident: smoke", "incident: smoke",
     "rules.rules[1].incident", "it raises nothing, so it cannot join incident 'smoke'"),
    ("incident declared but unused", "  schedules:\n", "  incidents:\n    smoke: {on_rise: next}\n  schedules:\n", "smoke: {on_rise",
     "rules.incidents.smoke", "no rule names incident 'smoke'"),
    ("incident on_rise", "  schedules:\n", "  incidents:\n    smoke: {on_rise: later}\n  schedules:\n", "smoke: {on_rise",
     "rules.incidents.smoke.on_rise", "'restart', 'next' or 'keep'"),
]


@pytest.mark.parametrize("name,old,new,marker,key,words", CASES, ids=[c[0] for c in CASES])
def test_invalid_rules_name_file_line_and_key(tmp_path, capsys, name, old, new, marker, key, words):
    text = SITE.format(profiles=PROFILES)
    assert old in text, "test case does not apply"
    text = text.replace(old, new, 1)
    path = tmp_path / "site.yaml"
    path.write_text(text)
    line = next(i + 1 for i, ln in enumerate(text.splitlines()) if marker in ln)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:{line}: {key}:" in err, err
    assert words in err, err
    assert "Traceback" not in err


def test_the_base_site_is_valid():
    # (also a guard for the cases above: each breaks exactly one thing)
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "site.yaml"
        p.write_text(SITE.format(profiles=PROFILES))
        cfg = load_config(p)
        assert [r.id for r in cfg.site.rules.rules] == ["smoke", "heat", "fire", "welfare", "tap"]


def test_custom_message_placeholders_are_checked(tmp_path):
    text = SITE.format(profiles=PROFILES).replace(
        "      severity: critical\n", "      severity: critical\n      message: {en: 'Fire at {where} on {devce}'}\n", 1)
    path = tmp_path / "site.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert "unknown placeholder(s) {devce}" in str(exc.value) and "rules.rules[0].message.en" in str(exc.value)


def test_validate_as_a_process_exits_2_with_file_line(tmp_path):
    text = textwrap.dedent(SITE.format(profiles=PROFILES)).replace("point: temperature", "point: temprature")
    path = tmp_path / "site.yaml"
    path.write_text(text)
    proc = subprocess.run([sys.executable, "-m", "gateway", "validate", str(path)], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2
    assert f"{path}:" in proc.stderr and "rules.rules[1].point" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("example", ["farm.yaml", "community.yaml"])
def test_shipped_configs_have_meaningful_rules(example):
    cfg = load_config(ROOT / "config" / example)
    types = {r.type for r in cfg.site.rules.rules}
    if example == "community.yaml":
        assert {"state", "inactivity", "flow", "all", "stale"} <= types
        smoke = next(r for r in cfg.site.rules.rules if r.id == "smoke-alarm")
        assert smoke.severity == "critical" and smoke.outputs[0].device == "sounder"
    else:
        assert any(r.id == "soil-dry" and r.below is not None and r.hysteresis > 0 for r in cfg.site.rules.rules)


def test_external_sources_are_checked(tmp_path):
    text = SITE.format(profiles=PROFILES).replace(
        "  schedules:\n", "  external:\n    camera.fall: {class: falls, outputs: [{device: door-101, point: locked}]}\n  schedules:\n", 1)
    path = tmp_path / "site.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    msg = str(exc.value)
    assert "rules.external.camera.fall.class: unknown class 'falls'" in msg
    assert "rules.external.camera.fall.outputs[0].point: point 'locked' of 'door-101' is not writable" in msg


def test_unquoted_times_in_a_window_are_explained(tmp_path):
    text = SITE.format(profiles=PROFILES).replace('night: {quiet_hours: ["22:00-07:00"]}', "night: {quiet_hours: [{from: 22:00, to: '07:00'}]}")
    path = tmp_path / "site.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert 'put the time in quotes: from: "HH:MM"' in str(exc.value)
