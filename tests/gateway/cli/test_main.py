"""`canopy validate`, `run` and `status`: what an installer sees for each kind of mistake or failure."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time

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
    status = {"site": "test-site", "gateway": "gw-1", "boot": 3, "ts": time.time(), "uplink": {"connected": True},
              "daemon": daemon_of_this_process(),
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


def daemon_of_this_process(**extra) -> dict:
    """A status file's writer record naming a live process (this one)."""
    from gateway.status.status_file import daemon_record

    return {**daemon_record("running", 65), **extra}


def test_status_says_not_running_or_stale_and_exits_non_zero(tmp_path, capsys):
    """A snapshot is only as good as its writer: a gone process is "not running" (3), a late snapshot "stale" (4)."""
    import json

    from tests.support import site_config

    cfg = site_config(tmp_path, sim_port=5020, broker={"host": "127.0.0.1", "port": 1883})
    gone = subprocess.Popen(["true"])
    gone.wait()
    base = {"site": "test-site", "gateway": "gw-1", "boot": 3, "uplink": {"connected": True}, "outbox": {}, "devices": {}}
    cases = [({"ts": time.time() - 66, "daemon": daemon_of_this_process(pid=gone.pid)}, 3, "not running", "killed or crashed"),
             ({"ts": time.time() - 400, "daemon": daemon_of_this_process(state="stopped")}, 3, "not running", "stopped cleanly"),
             ({"ts": time.time() - 70, "daemon": daemon_of_this_process()}, 4, "stale", "has not rewritten its status"),
             ({"ts": time.time() - 1, "daemon": daemon_of_this_process()}, 0, "running", f"pid {os.getpid()}")]
    for snapshot, code, state, words in cases:
        (tmp_path / "canopy-status.json").write_text(json.dumps(base | snapshot))
        assert main(["status", "-c", str(cfg)]) == code, state
        out = capsys.readouterr().out
        assert state in out and words in out.replace("\n", " "), out
        assert main(["status", "-c", str(cfg), "--json"]) == code
        assert json.loads(capsys.readouterr().out)["verdict"]["state"] == state


def test_validate_refuses_a_store_path_in_a_missing_folder(tmp_path, capsys):
    """What `canopy run` could not open, `canopy validate` does not pass."""
    path = tmp_path / "site.yaml"
    path.write_text(GOOD.format(profiles=PROFILES) + f"store:\n  path: {tmp_path}/nope/outbox.sqlite\n")
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:20: store.path: folder {tmp_path}/nope does not exist" in err, err
    path.write_text(GOOD.format(profiles=PROFILES) + f"store:\n  path: {tmp_path}\n")
    assert main(["validate", str(path)]) == 2
    assert "is a folder, not a file" in capsys.readouterr().err


def test_a_state_folder_this_user_cannot_write_is_a_warning_for_validate_and_an_error_for_run(tmp_path, capsys, monkeypatch):
    from core.yamlsrc import load_yaml
    from gateway.cli import site
    from gateway.config.load import load_config

    path = tmp_path / "site.yaml"
    path.write_text(GOOD.format(profiles=PROFILES) + f"store:\n  path: {tmp_path}/outbox.sqlite\n")
    cfg, src = load_config(path), load_yaml(path)
    monkeypatch.setattr(site.os, "access", lambda *a, **k: False)  # as a user other than the folder's owner
    errors, warnings = site.state_path_problems(cfg, src, daemon=False)
    assert not errors and "is not writable by" in str(warnings[0]) and "store.path" in str(warnings[0])
    errors, warnings = site.state_path_problems(cfg, src, daemon=True)
    assert not warnings and "is not writable by" in str(errors[0])
    assert main(["validate", str(path)]) == 0
    assert "warning:" in capsys.readouterr().err


def run_daemon(cfg, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway", "run", "-c", str(cfg), *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout)


def assert_one_line(proc: subprocess.CompletedProcess, words: str) -> None:
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out, out
    assert words in out, out
    errors = [line for line in out.splitlines() if "ERROR" in line or line.startswith("  ")]
    assert len(errors) == 1, out


def test_run_with_a_store_path_in_a_missing_folder_exits_2_in_one_line(tmp_path):
    from tests.support import site_config

    cfg = site_config(tmp_path, sim_port=5020, broker={"host": "127.0.0.1", "port": 1}, store={"path": str(tmp_path / "nope" / "o.sqlite")})
    proc = run_daemon(cfg)
    assert proc.returncode == 2
    assert_one_line(proc, f"store.path: folder {tmp_path}/nope does not exist")


def test_run_refuses_bad_metrics_options_with_exit_2(tmp_path):
    from tests.support import site_config

    cfg = site_config(tmp_path, sim_port=5020, broker={"host": "127.0.0.1", "port": 1})
    proc = run_daemon(cfg, "--metrics-file", str(tmp_path / "canopy.txt"))
    assert proc.returncode == 2
    assert_one_line(proc, "reads only files ending in .prom")


def test_run_that_cannot_start_says_why_in_one_line_and_exits_1(tmp_path):
    """Not the config's fault: a metrics port another program holds, an outbox another instance holds."""
    import socket

    from tests.support import site_config

    cfg = site_config(tmp_path, sim_port=5020, broker={"host": "127.0.0.1", "port": 1})
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = run_daemon(cfg, "--metrics-port", str(port))
    assert proc.returncode == 1
    assert_one_line(proc, f"cannot start: cannot serve metrics on 127.0.0.1:{port}")
    holder = sqlite3.connect(tmp_path / "outbox.sqlite", isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        proc = run_daemon(cfg)
    finally:
        holder.close()
    assert proc.returncode == 1
    assert_one_line(proc, "cannot start: cannot open outbox")


def test_a_start_that_fails_in_sqlite_itself_prints_no_thread_traceback(tmp_path):
    """aiosqlite's failed connect posts to the loop after it closed (a traceback 1 run in 3): never shown."""
    from tests.support import site_config

    cfg = site_config(tmp_path, sim_port=5020, broker={"host": "127.0.0.1", "port": 1}, store={"path": str(tmp_path / "nope" / "o.sqlite")})
    script = ("import asyncio, logging, sys; logging.basicConfig(); from gateway.config.load import load_config; "
              "from gateway.daemon import run_gateway; "
              f"sys.exit(asyncio.run(run_gateway(load_config({str(cfg)!r}))))")  # no path check: straight into sqlite
    for _ in range(4):
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=30)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert "cannot start: cannot open outbox" in proc.stderr
