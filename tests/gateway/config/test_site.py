"""Site config loading: every mistake an installer can make names file, line and key.

Each bad config is a small YAML written into tmp_path next to a copy of the
shipped profiles.  Expected line numbers are found by searching the YAML text
for a marker, so the tests say *which* line is meant, not just a number.
"""

from __future__ import annotations

import os
import shutil
import textwrap
from pathlib import Path

import pytest

from core.yamlsrc import ConfigError, Problem
from drivers.modbus.profile import Profile
from gateway.config.load import (
    _data_path,  # noqa: PLC2701 - the discriminator mapping is worth testing on its own
    load_config,
    load_profile,
)
from gateway.config.site import LoadedConfig

REPO = Path(__file__).resolve().parents[3]
SHIPPED_PROFILES = REPO / "config" / "profiles"

GOOD = """\
site: green-valley
gateway: gw-01
broker:
  host: mqtt.example.com
  port: 8883
  username: gw-01
  password: ${CANOPY_TEST_PW}
buses:
  - type: modbus_tcp
    id: field-485
    host: 192.168.1.50
    devices:
      - id: soil-a
        unit: 1
        profile: soil_probe
        poll_interval: 10
        location: {zone: north}
      - id: soil-b
        unit: 2
        profile: soil_probe
      - id: meter
        unit: 3
        profile: water_meter
  - type: modbus_tcp
    id: shed
    host: 192.168.1.60
    port: 5020
    devices:
      - {id: smoke-1, unit: 1, profile: smoke_gas_detector}
"""


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def site_dir(tmp_path: Path) -> Path:
    shutil.copytree(SHIPPED_PROFILES, tmp_path / "profiles")
    return tmp_path


def write(site_dir: Path, text: str, name: str = "site.yaml") -> Path:
    path = site_dir / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def line(text: str, marker: str, nth: int = 1) -> int:
    """1-based line of the nth line containing marker."""
    hits = [i + 1 for i, ln in enumerate(textwrap.dedent(text).splitlines()) if marker in ln]
    assert len(hits) >= nth, f"marker {marker!r} not in text"
    return hits[nth - 1]


def problems_of(path: Path) -> list[Problem]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    problems = info.value.problems
    assert problems, "ConfigError without problems"
    for p in problems:
        assert isinstance(p, Problem)
        assert p.message and "Traceback" not in p.message
    return problems


def only_problem(path: Path) -> Problem:
    problems = problems_of(path)
    assert len(problems) == 1, problems
    return problems[0]


# --------------------------------------------------------------------------- a good config


def test_good_config_loads(site_dir, monkeypatch):
    monkeypatch.setenv("CANOPY_TEST_PW", "s3cret")
    cfg = load_config(write(site_dir, GOOD))
    assert isinstance(cfg, LoadedConfig)
    assert cfg.site.site == "green-valley" and cfg.site.gateway == "gw-01"
    assert cfg.file == str(site_dir / "site.yaml")
    assert cfg.base_dir == str(site_dir)

    devices = [(bus.id, dev.id, dev.unit, dev.profile) for bus, dev in cfg.devices()]
    assert devices == [
        ("field-485", "soil-a", 1, "soil_probe"),
        ("field-485", "soil-b", 2, "soil_probe"),
        ("field-485", "meter", 3, "water_meter"),
        ("shed", "smoke-1", 1, "smoke_gas_detector"),
    ]
    assert set(cfg.profiles) == {"soil_probe", "water_meter", "smoke_gas_detector"}
    soil = cfg.profiles["soil_probe"]
    assert isinstance(soil, Profile)
    assert soil.point("moisture").scale == pytest.approx(0.1)
    assert soil.point("water_potential").count == 2


def test_good_config_defaults(site_dir, monkeypatch):
    monkeypatch.setenv("CANOPY_TEST_PW", "s3cret")
    cfg = load_config(write(site_dir, GOOD))
    site = cfg.site
    assert site.language == "en"
    assert site.profiles_dir == "profiles"
    assert site.store.path == "canopy-outbox.sqlite"
    assert site.store.commit_interval == 0.5
    assert site.store.queue_size == 10000
    assert site.uplink.batch_max_records == 500
    assert site.uplink.batch_max_bytes == 128 * 1024
    assert site.uplink.state_interval == 30.0
    bus0, bus1 = site.buses
    assert bus0.port == 502 and bus1.port == 5020
    assert bus0.max_read_registers == 125 and bus0.max_gap == 8
    soil_a, soil_b, _ = bus0.devices
    assert soil_a.poll_interval == 10 and soil_b.poll_interval == 5.0
    assert soil_a.location.zone == "north" and soil_b.location is None
    assert soil_b.enabled is True and soil_b.timeout is None
    assert site.broker.keepalive == 30 and site.broker.tls is None
    assert cfg.resolve(site.store.path) == str(site_dir / "canopy-outbox.sqlite")
    assert cfg.resolve("/abs/x") == "/abs/x"


def test_env_var_expansion(site_dir, monkeypatch):
    monkeypatch.setenv("CANOPY_TEST_PW", "pa$$ word")
    monkeypatch.setenv("CANOPY_TEST_HOST", "10.8.0.1")
    monkeypatch.setenv("CANOPY_TEST_PORT", "1883")
    text = GOOD.replace("mqtt.example.com", "${CANOPY_TEST_HOST}").replace("port: 8883", "port: ${CANOPY_TEST_PORT}")
    cfg = load_config(write(site_dir, text))
    assert cfg.site.broker.password == "pa$$ word"
    assert cfg.site.broker.host == "10.8.0.1"
    assert cfg.site.broker.port == 1883


def test_env_var_inside_text(site_dir, monkeypatch):
    monkeypatch.setenv("CANOPY_TEST_SITE", "valley")
    cfg = load_config(write(site_dir, "site: green-${CANOPY_TEST_SITE}-2\ngateway: gw\n"))
    assert cfg.site.site == "green-valley-2"


def test_minimal_config_without_broker_or_buses(site_dir):
    cfg = load_config(write(site_dir, "site: s\ngateway: g\nbuses:\n"))
    assert cfg.site.broker is None and cfg.site.buses == [] and cfg.profiles == {}


def test_bus_with_empty_devices_key(site_dir):
    cfg = load_config(
        write(site_dir, "site: s\ngateway: g\nbuses:\n  - type: modbus_tcp\n    id: b\n    host: h\n    devices:\n")
    )
    assert cfg.site.buses[0].devices == []


def test_yaml_merge_keys_share_device_settings(site_dir):
    text = """\
    site: s
    gateway: g
    buses:
      - type: modbus_tcp
        id: b
        host: h
        devices:
          - &probe {id: p1, unit: 1, profile: soil_probe, poll_interval: 30}
          - <<: *probe
            id: p2
            unit: 2
    """
    cfg = load_config(write(site_dir, text))
    p1, p2 = cfg.site.buses[0].devices
    assert (p2.id, p2.unit, p2.profile, p2.poll_interval) == ("p2", 2, "soil_probe", 30)
    assert p1.id == "p1"


def test_shipped_profiles_load():
    files = sorted(SHIPPED_PROFILES.glob("*.yaml"))
    assert files
    for f in files:
        prof = load_profile(f)
        assert prof.name == f.stem, f"{f.name}: name {prof.name!r} differs from the file name"


def test_profiles_dir_is_relative_to_the_config_file(tmp_path, monkeypatch):
    (tmp_path / "conf").mkdir()
    shutil.copytree(SHIPPED_PROFILES, tmp_path / "conf" / "models")
    write(tmp_path / "conf", "site: s\ngateway: g\nprofiles_dir: models\nbuses:\n"
          "  - {type: modbus_tcp, id: b, host: h, devices: [{id: d, unit: 1, profile: tank_level}]}\n")
    monkeypatch.chdir(tmp_path)  # not the config's folder
    cfg = load_config("conf/site.yaml")
    assert set(cfg.profiles) == {"tank_level"}


# --------------------------------------------------------------------------- wrong values


def test_wrong_type(site_dir):
    text = """\
    site: s
    gateway: g
    buses:
      - type: modbus_tcp
        id: b
        host: h
        port: abc
    """
    path = write(site_dir, text)
    p = only_problem(path)
    assert p.file == str(path)
    assert p.line == line(text, "port: abc")
    assert p.key == "buses[0].port"  # the discriminator tag is not in the key
    assert "integer" in p.message and "'abc'" in p.message
    assert str(p) == f"{path}:{p.line}: buses[0].port: {p.message}"


def test_out_of_range_value(site_dir):
    text = "site: s\ngateway: g\nbroker:\n  host: h\n  port: 70000\n"
    p = only_problem(write(site_dir, text))
    assert (p.line, p.key) == (5, "broker.port")
    assert "65535" in p.message and "70000" in p.message


def test_number_where_text_is_expected_suggests_quotes(site_dir):
    text = "site: s\ngateway: g\nbroker:\n  host: h\n  username: u\n  password: 123456\n"
    p = only_problem(write(site_dir, text))
    assert (p.line, p.key) == (6, "broker.password")
    assert "quotes" in p.message


def test_unknown_key_typo(site_dir):
    text = """\
    site: s
    gateway: g
    buses:
      - type: modbus_tcp
        id: b
        host: h
        devices:
          - id: d1
            unit: 1
            profile: soil_probe
            pol_interval: 5
    """
    path = write(site_dir, text)
    p = only_problem(path)
    assert p.file == str(path)
    assert p.line == line(text, "pol_interval")
    assert p.key == "buses[0].devices[0].pol_interval"
    assert "unknown key" in p.message


def test_unknown_top_level_key(site_dir):
    text = "site: s\ngateway: g\nbrokr:\n  host: h\n"
    p = only_problem(write(site_dir, text))
    assert (p.line, p.key) == (3, "brokr")
    assert "unknown key" in p.message


def test_missing_required_key_site(site_dir):
    path = write(site_dir, "# a site without its name\ngateway: g\n")
    p = only_problem(path)
    assert p.key == "site"
    assert p.line is not None
    assert "required" in p.message and "missing" in p.message


def test_missing_required_nested_key_points_at_the_parent(site_dir):
    text = "site: s\ngateway: g\nbroker:\n  port: 1883\n"
    p = only_problem(write(site_dir, text))
    assert (p.line, p.key) == (3, "broker.host")
    assert "required" in p.message


def test_model_level_rule_names_the_block(site_dir):
    text = "site: s\ngateway: g\nbroker:\n  host: h\n  password: x\n"
    p = only_problem(write(site_dir, text))
    assert (p.line, p.key) == (3, "broker")
    assert p.message == "a password needs a username"


def test_several_problems_are_all_reported(site_dir):
    text = "site: s\ngateway: g\nstore: {queue_size: 5}\nuplink:\n  batch_max_records: 0\n  extra: 1\n"
    problems = problems_of(write(site_dir, text))
    assert {(p.line, p.key) for p in problems} == {
        (3, "store.queue_size"),
        (5, "uplink.batch_max_records"),
        (6, "uplink.extra"),
    }


# --------------------------------------------------------------------------- buses (tagged union)


def test_unknown_bus_type(site_dir):
    text = """\
    site: s
    gateway: g
    buses:
      - type: modbus_tcp
        id: ok
        host: h
      - id: serial
        type: foo
        host: h
    """
    p = only_problem(write(site_dir, text))
    assert p.line == line(text, "type: foo")
    assert p.key == "buses[1].type"
    assert "'foo'" in p.message and "modbus_tcp" in p.message
    assert "discriminator" not in p.message


def test_missing_bus_type(site_dir):
    text = "site: s\ngateway: g\nbuses:\n  - id: b\n    host: h\n"
    p = only_problem(write(site_dir, text))
    assert p.line == 4
    assert p.key == "buses[0].type"
    assert "missing" in p.message and "modbus_tcp" in p.message


def test_error_inside_a_device_of_a_tagged_bus(site_dir):
    text = """\
    site: s
    gateway: g
    buses:
      - type: modbus_tcp
        id: b
        host: h
        devices:
          - {id: d1, unit: 1, profile: soil_probe}
          - id: d2
            unit: 300
            profile: soil_probe
    """
    p = only_problem(write(site_dir, text))
    assert p.line == line(text, "unit: 300")
    assert p.key == "buses[0].devices[1].unit"
    assert "247" in p.message


def test_key_named_like_the_tag_is_still_a_key(site_dir):
    text = "site: s\ngateway: g\nbuses:\n  - type: modbus_tcp\n    id: b\n    host: h\n    modbus_tcp: 1\n"
    p = only_problem(write(site_dir, text))
    assert (p.line, p.key) == (7, "buses[0].modbus_tcp")
    assert "unknown key" in p.message


def test_data_path_drops_discriminator_tags():
    data = {"buses": [{"type": "modbus_tcp", "id": "b", "port": "x"}]}
    assert _data_path(data, ("buses", 0, "modbus_tcp", "port")) == ("buses", 0, "port")
    # a missing key is kept (its parent's line will be shown)
    assert _data_path(data, ("buses", 0, "modbus_tcp", "host")) == ("buses", 0, "host")
    # an unknown key that happens to be called like the tag
    data2 = {"buses": [{"type": "modbus_tcp", "modbus_tcp": 1}]}
    assert _data_path(data2, ("buses", 0, "modbus_tcp", "modbus_tcp")) == ("buses", 0, "modbus_tcp")
    # a bus type added later is handled the same way, without a hard-coded list
    data3 = {"buses": [{"type": "can_bus", "bitrate": "x"}]}
    assert _data_path(data3, ("buses", 0, "can_bus", "bitrate")) == ("buses", 0, "bitrate")
    assert _data_path({"a": 1}, ()) == ()


# --------------------------------------------------------------------------- YAML level


def test_bad_yaml_syntax_names_the_line(site_dir):
    text = """\
    site: s
    gateway: g
    broker:
      host: h
       port: 1883
    """
    path = write(site_dir, text)
    p = only_problem(path)
    assert p.file == str(path)
    assert p.line == line(text, "port: 1883")
    assert p.key == ""
    assert p.message.startswith("YAML syntax error")


def test_unclosed_flow_mapping_at_end_of_file(site_dir):
    text = "site: s\ngateway: g\nstore: {path: x.sqlite\n"
    p = only_problem(write(site_dir, text))
    assert p.line == 3  # not line 4, which the editor does not show
    assert "YAML syntax error" in p.message and "line 3" in p.message


def test_duplicate_yaml_key(site_dir):
    text = """\
    site: s
    gateway: g
    broker:
      host: a
      port: 1883
      host: b
    """
    p = only_problem(write(site_dir, text))
    assert p.line == line(text, "host: b")
    assert p.key == "broker.host"
    assert "duplicate key" in p.message and f"line {line(text, 'host: a')}" in p.message


def test_unset_env_var_in_broker_password(site_dir, monkeypatch):
    monkeypatch.delenv("CANOPY_UNSET_VAR", raising=False)
    text = "site: s\ngateway: g\nbroker:\n  host: h\n  username: u\n  password: ${CANOPY_UNSET_VAR}\n"
    path = write(site_dir, text)
    p = only_problem(path)
    assert (p.file, p.line, p.key) == (str(path), 6, "broker.password")
    assert "${CANOPY_UNSET_VAR}" in p.message and "not set" in p.message


def test_python_tags_are_refused_not_a_traceback(site_dir):
    text = "site: s\ngateway: g\nbroker: !!python/object/apply:os.system ['true']\n"
    problems = problems_of(write(site_dir, text))
    assert problems[0].line == 3
    assert "tag" in problems[0].message


def test_python_tag_on_a_mapping_is_refused(site_dir):
    text = "site: s\ngateway: g\nbroker: !!python/object:gateway.config.BrokerConfig {host: h}\n"
    p = only_problem(write(site_dir, text))
    assert (p.line, p.key) == (3, "broker")
    assert "unsupported YAML tag" in p.message


def test_unknown_scalar_tag(site_dir):
    text = "site: s\ngateway: !secret gw\n"
    p = only_problem(write(site_dir, text))
    assert (p.line, p.key) == (2, "gateway")
    assert "tag" in p.message


def test_invalid_explicit_int(site_dir):
    text = "site: s\ngateway: g\nbroker:\n  host: h\n  port: !!int abc\n"
    p = only_problem(write(site_dir, text))
    assert (p.line, p.key) == (5, "broker.port")


def test_empty_file(site_dir):
    p = only_problem(write(site_dir, "# nothing yet\n"))
    assert "empty" in p.message


def test_not_a_mapping(site_dir):
    p = only_problem(write(site_dir, "- site: s\n"))
    assert p.line == 1 and "mapping" in p.message


def test_missing_file(tmp_path):
    p = only_problem(tmp_path / "nope.yaml")
    assert p.file == str(tmp_path / "nope.yaml")
    assert "not found" in p.message


# --------------------------------------------------------------------------- devices and profiles


def test_missing_profile(site_dir):
    text = """\
    site: s
    gateway: g
    buses:
      - type: modbus_tcp
        id: b
        host: h
        devices:
          - id: d1
            unit: 1
            profile: soil_prob
    """
    path = write(site_dir, text)
    p = only_problem(path)
    assert p.file == str(path)
    assert p.line == line(text, "profile: soil_prob")
    assert p.key == "buses[0].devices[0].profile"
    assert "'soil_prob'" in p.message and "not found" in p.message
    assert str(site_dir / "profiles" / "soil_prob.yaml") in p.message


def test_profile_name_cannot_leave_the_profiles_dir(site_dir):
    (site_dir / "evil.yaml").write_text("name: evil\npoints:\n  - {name: a, address: 0}\n")
    text = "site: s\ngateway: g\nbuses:\n  - type: modbus_tcp\n    id: b\n    host: h\n    devices:\n" \
           "      - id: d1\n        unit: 1\n        profile: ../evil\n"
    p = only_problem(write(site_dir, text))
    assert (p.line, p.key) == (10, "buses[0].devices[0].profile")


def test_duplicate_device_id(site_dir):
    text = """\
    site: s
    gateway: g
    buses:
      - type: modbus_tcp
        id: b1
        host: h
        devices:
          - id: pump
            unit: 1
            profile: tank_level
      - type: modbus_tcp
        id: b2
        host: h2
        devices:
          - id: other
            unit: 1
            profile: tank_level
          - id: pump
            unit: 2
            profile: tank_level
    """
    p = only_problem(write(site_dir, text))
    assert p.line == line(text, "id: pump", nth=2)
    assert p.key == "buses[1].devices[1].id"
    assert "duplicate device id 'pump'" in p.message
    assert f"line {line(text, 'id: pump')}" in p.message


def test_third_duplicate_points_at_the_first(site_dir):
    text = """\
    site: s
    gateway: g
    buses:
      - type: modbus_tcp
        id: b
        host: h
        devices:
          - {id: t, unit: 1, profile: tank_level}
          - {id: t, unit: 2, profile: tank_level}
          - {id: t, unit: 3, profile: tank_level}
    """
    problems = problems_of(write(site_dir, text))
    assert [(p.line, p.key) for p in problems] == [(9, "buses[0].devices[1].id"), (10, "buses[0].devices[2].id")]
    assert all("first at line 8" in p.message for p in problems)


def test_duplicate_bus_id(site_dir):
    text = "site: s\ngateway: g\nbuses:\n  - {type: modbus_tcp, id: b, host: h}\n  - {type: modbus_tcp, id: b, host: h2}\n"
    p = only_problem(write(site_dir, text))
    assert (p.line, p.key) == (5, "buses[1].id")
    assert "duplicate bus id" in p.message and "line 4" in p.message


def test_unit_id_reused_on_one_bus(site_dir):
    text = """\
    site: s
    gateway: g
    buses:
      - type: modbus_tcp
        id: b
        host: h
        devices:
          - {id: tank, unit: 7, profile: tank_level}
          - {id: meter, unit: 7, profile: water_meter}
    """
    p = only_problem(write(site_dir, text))
    assert p.line == line(text, "id: meter")
    assert p.key == "buses[0].devices[1].unit"
    assert "unit 7" in p.message and "'tank'" in p.message and "'b'" in p.message


def test_same_unit_on_different_buses_is_fine(site_dir):
    text = """\
    site: s
    gateway: g
    buses:
      - {type: modbus_tcp, id: b1, host: h, devices: [{id: t1, unit: 1, profile: tank_level}]}
      - {type: modbus_tcp, id: b2, host: h, devices: [{id: t2, unit: 1, profile: tank_level}]}
    """
    assert len(list(load_config(write(site_dir, text)).devices())) == 2


BROKEN_PROFILE_SITE = """\
site: s
gateway: g
buses:
  - type: modbus_tcp
    id: b
    host: h
    devices:
      - {id: d1, unit: 1, profile: broken}
      - {id: d2, unit: 2, profile: broken}
"""


def test_broken_profile_yaml_names_the_profile_file_once(site_dir):
    prof = site_dir / "profiles" / "broken.yaml"
    prof.write_text("name: broken\npoints:\n  - {name: a, address: 0\n  - {name: b, address: 1}\n")
    problems = problems_of(write(site_dir, BROKEN_PROFILE_SITE))
    assert len(problems) == 1, problems  # two devices, one broken file: one problem
    p = problems[0]
    assert p.file == str(prof)
    assert p.line in (3, 4)
    assert "YAML syntax error" in p.message


def test_profile_with_unknown_key_names_profile_line(site_dir):
    prof = site_dir / "profiles" / "broken.yaml"
    prof.write_text("name: broken\npoints:\n  - name: a\n    address: 0\n    scael: 0.1\n")
    p = only_problem(write(site_dir, BROKEN_PROFILE_SITE))
    assert (p.file, p.line, p.key) == (str(prof), 5, "points[0].scael")


def test_bad_point_coil_with_u16(site_dir):
    prof = site_dir / "profiles" / "broken.yaml"
    text = """\
    name: broken
    points:
      - {name: ok, table: holding, address: 0}
      - name: valve
        table: coil
        address: 1
        type: u16
    """
    prof.write_text(textwrap.dedent(text))
    p = only_problem(write(site_dir, BROKEN_PROFILE_SITE))
    assert p.file == str(prof)
    assert p.line == line(text, "type: u16")
    assert p.key == "points[1].type"
    assert "coil" in p.message and "bool" in p.message and "u16" in p.message
    assert not p.message.startswith("Value error")


def test_coil_without_type_is_a_bool(tmp_path):
    prof = tmp_path / "relay.yaml"
    prof.write_text("name: relay\npoints:\n  - {name: r1, table: coil, address: 0}\n  - {name: d, table: discrete, address: 0}\n")
    loaded = load_profile(prof)
    assert [p.type for p in loaded.points] == ["bool", "bool"]


@pytest.mark.parametrize(
    ("point", "key", "words"),
    [
        ("{name: s, address: 0, type: string, length: 4, scale: 2}", "points[1].scale", "strings"),
        ("{name: s, address: 0, type: string, length: 4, offset: 1}", "points[1].offset", "strings"),
        ("{name: x, address: 0, scale: 0}", "points[1].scale", "0"),
        ("{name: Bad, address: 0}", "points[1].name", "pattern"),
        ("{name: x, address: 70000}", "points[1].address", "65535"),
        ("{name: x, address: 0, type: u128}", "points[1].type", "u128"),
    ],
)
def test_bad_points(tmp_path, point, key, words):
    prof = tmp_path / "p.yaml"
    prof.write_text(f"name: p\npoints:\n  - {{name: fine, address: 9}}\n  - {point}\n")
    with pytest.raises(ConfigError) as info:
        load_profile(prof)
    (p,) = info.value.problems
    assert p.file == str(prof) and p.line == 4
    assert p.key == key
    assert words in p.message


def test_profile_point_defined_twice(tmp_path):
    prof = tmp_path / "p.yaml"
    prof.write_text("name: p\npoints:\n  - {name: a, address: 0}\n  - {name: a, address: 1}\n")
    with pytest.raises(ConfigError) as info:
        load_profile(prof)
    (p,) = info.value.problems
    assert "'a'" in p.message and "twice" in p.message


def test_point_longer_than_the_bus_read_limit(site_dir):
    text = "site: s\ngateway: g\nbuses:\n  - type: modbus_tcp\n    id: b\n    host: h\n    max_read_registers: 1\n" \
           "    devices:\n      - {id: m, unit: 1, profile: water_meter}\n"
    p = only_problem(write(site_dir, text))
    assert (p.line, p.key) == (9, "buses[0].devices[0].profile")
    assert "total_volume" in p.message and "pulse_count" in p.message and "battery" not in p.message


# --------------------------------------------------------------------------- secrets


def _broker_with_password_file(site_dir: Path, mode: int | None, name: str = "mqtt.pw") -> Path:
    secret = site_dir / name
    if mode is not None:
        secret.write_text("hunter2\n")
        os.chmod(secret, mode)
    text = f"site: s\ngateway: g\nbroker:\n  host: h\n  username: u\n  password_file: {name}\n"
    return write(site_dir, text)


def test_password_file_mode_0600_accepted(site_dir):
    cfg = load_config(_broker_with_password_file(site_dir, 0o600))
    assert cfg.site.broker.password_file == "mqtt.pw"


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_password_file_readable_by_others_rejected(site_dir, mode):
    path = _broker_with_password_file(site_dir, mode)
    p = only_problem(path)
    assert (p.file, p.line, p.key) == (str(path), 6, "broker.password_file")
    assert f"{mode:04o}" in p.message and "chmod 600" in p.message


def test_password_file_missing(site_dir):
    p = only_problem(_broker_with_password_file(site_dir, None))
    assert (p.line, p.key) == (6, "broker.password_file")
    assert "not found" in p.message


def test_password_file_is_a_folder(site_dir):
    (site_dir / "secrets").mkdir(mode=0o700)
    os.chmod(site_dir / "secrets", 0o700)
    p = only_problem(_broker_with_password_file(site_dir, None, name="secrets"))
    assert (p.line, p.key) == (6, "broker.password_file")
    assert "folder" in p.message


def test_tls_key_readable_by_others_rejected(site_dir):
    for name, mode in [("ca.pem", 0o644), ("c.pem", 0o644), ("k.pem", 0o644)]:
        (site_dir / name).write_text("x")
        os.chmod(site_dir / name, mode)
    text = "site: s\ngateway: g\nbroker:\n  host: h\n  tls:\n    ca: ca.pem\n    cert: c.pem\n    key: k.pem\n"
    p = only_problem(write(site_dir, text))
    assert (p.line, p.key) == (8, "broker.tls.key")
    assert "0644" in p.message
    os.chmod(site_dir / "k.pem", 0o600)
    assert load_config(site_dir / "site.yaml").site.broker.tls.key == "k.pem"


def test_tls_file_missing(site_dir):
    text = "site: s\ngateway: g\nbroker:\n  host: h\n  tls:\n    ca: nope.pem\n"
    p = only_problem(write(site_dir, text))
    assert (p.line, p.key) == (6, "broker.tls.ca")
    assert "not found" in p.message


def test_a_password_is_never_echoed_in_an_error(site_dir):
    text = "site: s\ngateway: g\nbroker:\n  host: h\n  username: u\n  password: 987654\n"
    p = only_problem(write(site_dir, text))
    assert "987654" not in str(p) and "quotes" in p.message


# --------------------------------------------------------------------------- removed keys

RTU_WITH_ENGINE = """\
site: s
gateway: g
buses:
  - type: modbus_rtu
    id: field-485
    port: /dev/ttyUSB0
    engine: pymodbus
    devices:
      - {id: soil-1, unit: 1, profile: soil_probe}
"""


@pytest.mark.parametrize("engine", ["pymodbus", "raw"])
def test_rtu_engine_key_was_removed(site_dir, engine):
    path = write(site_dir, RTU_WITH_ENGINE.replace("engine: pymodbus", f"engine: {engine}"))
    p = only_problem(path)
    assert (p.file, p.line, p.key) == (str(path), line(RTU_WITH_ENGINE, "engine:"), "buses[0].engine")
    assert p.message == "engine: pymodbus was removed; the built-in RTU engine is always used -- delete this key"


def test_rtu_engine_key_fails_validate_with_exit_2(site_dir, capsys):
    from gateway.cli.main import EXIT_CONFIG, main

    path = write(site_dir, RTU_WITH_ENGINE)
    assert main(["validate", str(path)]) == EXIT_CONFIG == 2
    err = capsys.readouterr().err
    assert f"{path}:{line(RTU_WITH_ENGINE, 'engine:')}: buses[0].engine: engine: pymodbus was removed" in err
    assert "Traceback" not in err
