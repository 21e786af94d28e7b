"""The `commands:` section: shapes, and cross-checks that name file:line:key."""

from __future__ import annotations

import copy

import pytest

from core.yamlsrc import ConfigError
from gateway.commands.config import parse_duration, parse_window
from gateway.config.load import load_config
from tests.gateway.commands.support import commands, write_site


def problems(tmp_path, cmds) -> list[str]:
    with pytest.raises(ConfigError) as err:
        load_config(write_site(tmp_path, cmds))
    return [str(p) for p in err.value.problems]


def test_the_test_site_loads(tmp_path):
    cfg = load_config(write_site(tmp_path))
    cc = cfg.site.commands
    assert [v.id for v in cc.valves] == ["zone-1", "zone-2", "zone-3", "zone-4"]
    assert cc.valves[0].max_run == 1800 and cc.clock_skew == 30 and cc.issuers["duty"].buildings == ["3"]


def test_durations_and_windows():
    assert parse_duration("90s") == 90 and parse_duration("15m") == 900 and parse_duration("1h30m") == 5400
    assert parse_duration(2.5) == 2.5 and parse_duration("2.5") == 2.5 and parse_duration("1d") == 86400
    for bad in ("soon", True, "15 minutes", None):
        with pytest.raises(ValueError):
            parse_duration(bad)
    assert parse_window("05:00-09:30") == (300, 570) and parse_window("22:00-02:00") == (1320, 120)
    for bad in ("5-9", "05:00-05:00", "25:00-26:00"):
        with pytest.raises(ValueError):
            parse_window(bad)


def test_a_valve_without_max_run_is_refused_at_its_line(tmp_path):
    cmds = commands()
    del cmds["valves"][1]["max_run"]
    (p,) = problems(tmp_path, cmds)
    assert "site.yaml:" in p and "commands.valves[1].max_run: required key is missing" in p


@pytest.mark.parametrize("mutate, expect", [
    (lambda c: c["valves"][0].update(device="pump-9"), "commands.valves[0].device: unknown device 'pump-9'"),
    (lambda c: c["valves"][0].update(point="zone_9"), "commands.valves[0].point: device 'valves' has no point 'zone_9'"),
    (lambda c: c["valves"][3].update(point="zone_3"), "is already driven by line"),
    (lambda c: c["valves"][3].update(zone=1), "commands.valves[3].zone: zone 1 is already"),
    (lambda c: c["valves"][3].update(id="zone-1"), "duplicate target id 'zone-1'"),
    (lambda c: c["valves"][0].update(max_run="soon"), "expected a duration"),
    (lambda c: c["valves"][0]["interlocks"]["rain"].update(device="weather-2"), "interlocks.rain.device: unknown device"),
    (lambda c: c["valves"][0]["interlocks"]["tank"].update(point="depth"), "device 'tank' has no point 'depth'"),
    (lambda c: c["locks"][0].update(point="locked"), "is not writable"),
    (lambda c: c["locks"][1].update(device="tank", relock="device"), "relock: device needs relock_point"),
    (lambda c: c["issuers"]["farmer"].update(public_key="AAAA"), "commands.issuers.farmer.public_key: an Ed25519 public key is 32 bytes"),
    (lambda c: c["issuers"]["farmer"].update(public_key="nope!"), "not base64"),
    (lambda c: c["issuers"]["farmer"].update(targets=["valve-*"]), "'valve-*' matches no valve or lock"),
    (lambda c: c["issuers"]["duty"].update(buildings=["9"]), "no valve or lock is in building '9'"),
    (lambda c: c["issuers"]["farmer"].update(actions=["open"]), "commands.issuers.farmer.actions[0]: Input should be"),
    (lambda c: c["issuers"]["farmer"].pop("targets"), "need targets or buildings"),
    (lambda c: c.update(timezone="Mars/Olympus"), "unknown time zone"),
    (lambda c: c.update(programs=[{"id": "p", "valve": "zone-9", "sensor": {"device": "soil-1", "point": "moisture"},
                                   "start_below": 20, "stop_at": 30, "max_run": "10m", "max_per_day": 2}]), "unknown valve 'zone-9'"),
    (lambda c: c.update(programs=[{"id": "p", "valve": "zone-4", "sensor": {"device": "soil-1", "point": "moisture"},
                                   "start_below": 20, "stop_at": 30, "max_run": "1h", "max_per_day": 2}]), "longer than the valve's max_run"),
    (lambda c: c.update(programs=[{"id": "p", "valve": "zone-4", "sensor": {"device": "soil-1", "point": "moisture"},
                                   "start_below": 30, "stop_at": 20, "max_run": "1m", "max_per_day": 2}]), "stop_at must be above start_below"),
    (lambda c: c.update(programs=[{"id": "p", "valve": "zone-4", "sensor": {"device": "soil-1", "point": "moisture"},
                                   "start_below": 20, "stop_at": 30, "max_run": "1m", "max_per_day": 2,
                                   "windows": ["dawn"]}]), "expected a time window"),
    (lambda c: c.update(unknown_key=1), "commands.unknown_key: unknown key"),
])
def test_problems_name_file_line_and_key(tmp_path, mutate, expect):
    cmds = copy.deepcopy(commands())
    mutate(cmds)
    found = problems(tmp_path, cmds)
    assert any(expect in p for p in found), found
    assert all(":" in p.split(" ")[0] for p in found)  # file:line first


def test_public_key_file(tmp_path):
    from core.protocol import envelope

    key = envelope.generate()
    (tmp_path / "farmer.pub").write_text(envelope.public_key_text(key.public_key()) + "\n")
    cmds = commands()
    cmds["issuers"]["farmer"] = {**cmds["issuers"]["farmer"], "public_key_file": "farmer.pub"}
    del cmds["issuers"]["farmer"]["public_key"]
    load_config(write_site(tmp_path, cmds))  # relative to the config file
    cmds["issuers"]["farmer"]["public_key_file"] = "missing.pub"
    (p,) = problems(tmp_path, cmds)
    assert "public_key_file: file not found" in p
    cmds["issuers"]["farmer"]["public_key"] = "x"
    assert any("exactly one" in p for p in problems(tmp_path, cmds))
