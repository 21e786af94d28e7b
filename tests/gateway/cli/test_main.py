"""`canopy validate`: what an installer sees for each kind of config mistake."""

from __future__ import annotations

import subprocess
import sys

import pytest

from gateway.cli.main import main
from tests.support import PROFILES, ROOT

GOOD = """\
site: farm-a
gateway: gw-1
profiles_dir: {profiles}
broker:
  host: 127.0.0.1
  port: 1883
buses:
  - id: field
    type: modbus_tcp
    host: 127.0.0.1
    port: 5020
    devices:
      - id: soil-1
        unit: 1
        profile: soil_probe
      - id: soil-2
        unit: 2
        profile: soil_probe
"""

# (name, text replacement (old, new), expected line, expected key, expected words)
CASES = [
    ("wrong type", ("  port: 5020", "  port: five"), 11, "buses[0].port", "integer"),
    ("unknown key", ("        profile: soil_probe\n      - id: soil-2", "        profile: soil_probe\n        pol_interval: 5\n      - id: soil-2"), 16, "buses[0].devices[0].pol_interval", "unknown key"),
    ("missing profile", ("unit: 2\n        profile: soil_probe", "unit: 2\n        profile: soil_prob"), 18, "buses[0].devices[1].profile", "not found"),
    ("bad yaml", ("  host: 127.0.0.1\n  port: 1883", "  host: [127.0.0.1\n  port: 1883"), 6, "", "started on line 5"),
    ("duplicate device id", ("- id: soil-2", "- id: soil-1"), 16, "buses[0].devices[1].id", "duplicate device id"),
]


@pytest.mark.parametrize("name,change,line,key,words", CASES, ids=[c[0] for c in CASES])
def test_validate_names_file_line_and_key_and_exits_2(tmp_path, capsys, name, change, line, key, words):
    text = GOOD.format(profiles=PROFILES)
    assert change[0] in text, "test case does not apply"
    path = tmp_path / "site.yaml"
    path.write_text(text.replace(change[0], change[1], 1))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:{line}:" in err, err
    assert key in err and words in err, err
    assert "Traceback" not in err


def test_validate_good_config_exits_0(tmp_path, capsys):
    path = tmp_path / "site.yaml"
    path.write_text(GOOD.format(profiles=PROFILES))
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "OK" in out and "2 device(s)" in out


@pytest.mark.parametrize("example", ["farm.yaml", "community.yaml"])
def test_shipped_site_configs_are_valid(example):
    proc = subprocess.run([sys.executable, "-m", "gateway", "validate", str(ROOT / "config" / example)], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr


def test_status_shows_the_outbox_per_lane_and_the_devices(tmp_path, capsys):
    """`canopy status`: "accepted" is the outbox's `produced` counter (committed records)."""
    import json

    from tests.support import site_config

    cfg = site_config(tmp_path, sim_port=5020, broker={"host": "127.0.0.1", "port": 1883})
    status = {"site": "test-site", "gateway": "gw-1", "boot": 3, "ts": 0, "uplink": {"connected": True},
              "outbox": {"telemetry": {"produced": 1234, "acknowledged": 1200, "pending": 34, "last_seq": 1234}},
              "devices": {"soil-1": {"bus": "field", "status": "ok", "polls": 10, "failures": 0}}}
    (tmp_path / "canopy-status.json").write_text(json.dumps(status))
    assert main(["status", "-c", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "accepted" in out and "1234" in out and "1200" in out and "None" not in out
    assert "soil-1" in out and "test-site/gw-1" in out
    (tmp_path / "canopy-status.json").unlink()
    assert main(["status", "-c", str(cfg)]) == 1
    assert "no status file" in capsys.readouterr().err
