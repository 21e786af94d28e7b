"""Secure by default: insecure broker settings are warned about (refused under `security: strict`),
and every file the daemon creates is private whatever the umask."""

from __future__ import annotations

import os
import stat
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

from core.protocol import envelope
from core.yamlsrc import load_yaml
from gateway.cli.main import main
from gateway.config import security
from gateway.config.load import load_config
from gateway.config.security import broker_findings, daemon_paths, exposed_files, is_loopback, review
from tests.support import PROFILES, site_config, wait_until

SITE = """\
site: farm-a
gateway: gw-1
profiles_dir: {profiles}
broker:
{broker}
"""

PLAIN_REMOTE = "  host: mqtt.example.com\n  port: 1883\n  username: gw-1\n  password_file: gw.password"
LITERAL_PASSWORD = "  host: 127.0.0.1\n  port: 1883\n  username: gw-1\n  password: hunter2"
NO_CREDENTIALS = "  host: 192.0.2.7\n  tls: {ca: ca.pem}"
SECURE = "  host: mqtt.example.com\n  tls: {ca: ca.pem}\n  username: gw-1\n  password_file: gw.password"
MTLS = "  host: mqtt.example.com\n  tls: {ca: ca.pem, cert: gw.pem, key: gw.key}"
ENV_PASSWORD = "  host: 127.0.0.1\n  port: 1883\n  username: gw-1\n  password: ${CANOPY_TEST_PW}"


@pytest.fixture
def site_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("CANOPY_TEST_PW", "from-the-environment")
    for name in ("gw.password", "gw.key"):
        (tmp_path / name).write_text("secret\n")
        os.chmod(tmp_path / name, 0o600)
    for name in ("ca.pem", "gw.pem"):
        (tmp_path / name).write_text("not checked here\n")
    return tmp_path


def write(site_dir: Path, broker: str, extra: str = "") -> Path:
    path = site_dir / "site.yaml"
    path.write_text(SITE.format(profiles=PROFILES, broker=broker) + textwrap.dedent(extra))
    return path


def findings(path: Path) -> list[str]:
    cfg = load_config(path)
    return [str(p) for p in broker_findings(cfg.site, load_yaml(path))]


CASES = {
    "plain TCP off the board": (PLAIN_REMOTE, [(5, "broker.host", "plain TCP to mqtt.example.com")]),
    "password in the YAML": (LITERAL_PASSWORD, [(8, "broker.password", "name that file in `password_file`")]),
    "no credentials off the board": (NO_CREDENTIALS, [(4, "broker", "no credentials for 192.0.2.7")]),
}


@pytest.mark.parametrize("broker,expected", CASES.values(), ids=CASES.keys())
def test_each_weakness_names_file_line_key_and_the_fix(site_dir, broker, expected):
    path = write(site_dir, broker)
    found = findings(path)
    assert len(found) == len(expected), found
    for text, (line, key, words) in zip(found, expected):
        assert text.startswith(f"{path}:{line}: {key}: ") and words in text, text


@pytest.mark.parametrize("broker", [SECURE, MTLS, ENV_PASSWORD], ids=["tls+password_file", "mtls", "password from ${ENV}"])
def test_secure_settings_say_nothing(site_dir, broker):
    assert findings(write(site_dir, broker)) == []


def test_no_broker_means_the_embedded_loopback_one(site_dir):
    path = site_dir / "site.yaml"
    path.write_text(f"site: farm-a\ngateway: gw-1\nprofiles_dir: {PROFILES}\n")
    assert findings(path) == []


@pytest.mark.parametrize("host,loopback", [("127.0.0.1", True), ("127.8.0.1", True), ("::1", True), ("[::1]", True),
                                           ("localhost", True), ("LOCALHOST.", True), ("10.0.0.1", False),
                                           ("mqtt.example.com", False), ("localhost.example.com", False)])
def test_loopback_is_judged_without_dns(host, loopback):
    assert is_loopback(host) is loopback


def test_validate_warns_with_file_line_and_still_exits_0(site_dir, capsys):
    path = write(site_dir, PLAIN_REMOTE.replace("password_file: gw.password", "password: hunter2"))
    assert main(["validate", str(path)]) == 0
    err = capsys.readouterr().err
    assert f"warning: {path}:5: broker.host: plain TCP" in err
    assert f"warning: {path}:8: broker.password: password written in the config" in err
    assert "hunter2" not in err, "never echo a secret"


def test_strict_refuses_each_weakness_with_exit_2(site_dir, capsys, monkeypatch):
    """The CLI path of `security: strict` (the key itself needs SiteConfig.security: see the next test)."""
    monkeypatch.setattr(security, "security_mode", lambda site: "strict")
    path = write(site_dir, NO_CREDENTIALS)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:4: broker: no credentials" in err and "refused: the site says `security: strict`" in err
    assert main(["validate", str(write(site_dir, SECURE))]) == 0


def test_strict_refuses_canopy_run_before_anything_starts(site_dir, capsys, monkeypatch):
    monkeypatch.setattr(security, "security_mode", lambda site: "strict")
    monkeypatch.setattr("gateway.logs.setup", lambda **kw: None)  # keep pytest's log capture
    old = os.umask(0o022)
    try:
        assert main(["run", "-c", str(write(site_dir, LITERAL_PASSWORD))]) == 2
        assert os.umask(0o022) == 0o077, "canopy run makes its files private first"
    finally:
        os.umask(old)
    assert "broker.password: password written in the config" in capsys.readouterr().err


def test_security_strict_in_the_site_file_refuses(site_dir, capsys):
    path = write(site_dir, LITERAL_PASSWORD, "security: strict\n")
    assert main(["validate", str(path)]) == 2
    assert f"{path}:8: broker.password:" in capsys.readouterr().err
    assert main(["validate", str(write(site_dir, SECURE, "security: strict\n"))]) == 0


def test_review_splits_warnings_from_refusals(site_dir):
    path = write(site_dir, PLAIN_REMOTE)
    site, src = load_config(path).site, load_yaml(path)
    warned = review(site, src)
    assert (warned.mode, len(warned.warnings), warned.refused) == ("warn", 1, [])
    strict = review(SimpleNamespace(broker=site.broker, security="strict"), src)
    assert (len(strict.refused), strict.warnings) == (1, [])
    with pytest.raises(ValueError, match="security must be one of"):
        review(SimpleNamespace(broker=site.broker, security="lax"), src)


def test_existing_state_open_to_others_is_reported_with_the_fix(tmp_path):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    outbox = state / "outbox.sqlite"
    outbox.write_bytes(b"")
    os.chmod(outbox, 0o644)
    (state / "outbox.sqlite-wal").write_bytes(b"")
    os.chmod(state / "outbox.sqlite-wal", 0o600)
    cfg = load_config(site_config(tmp_path, sim_port=5020, broker=None, store={"path": str(outbox)}))
    paths = list(daemon_paths(cfg))
    assert str(state) in paths and str(state / "canopy-status.json") in paths
    assert str(state / "commands.sqlite") in paths and str(state / "canopy-alerts-test-site-gw-1.json") in paths
    assert exposed_files(paths) == [f"state file {outbox} is readable by other users (mode 0644); chmod 600 {outbox}"]
    os.chmod(state, 0o755)
    assert f"state folder {state} is open to other users (mode 0755)" in exposed_files(paths)[0]


def test_the_daemon_creates_only_private_files_under_umask_022(tmp_path, farm_sim, broker, subscriber_factory, gateway_factory):
    """`canopy run` sets its umask to 0o077: outbox, WAL, SHM, status, alert and command state are 0600.

    It also warns, with file:line and the fix, about the password written in the YAML and the
    state folder that existed before it, open to its group."""
    state = tmp_path / "state"
    state.mkdir()
    os.chmod(state, 0o750)  # an existing folder open to the group: reported, left alone
    key = envelope.generate()
    rules = {"groups": {"farmer": {"recipients": ["farmer-zhang"]}},
             "classes": {"field": {"escalation": [{"group": "farmer"}]}},
             "rules": [{"id": "tank-low", "type": "threshold", "device": "tank", "point": "level", "below": 1000,
                        "severity": "warning", "class": "field"}]}
    commands = {"issuers": {"farmer": {"public_key": envelope.public_key_text(key.public_key()), "actions": ["irrigate"],
                                       "targets": ["zone-*"]}},
                "valves": [{"id": "zone-1", "zone": 1, "device": "valves", "point": "zone_1", "max_run": "10m"}]}
    cfg = site_config(tmp_path, sim_port=farm_sim.port, store={"path": str(state / "outbox.sqlite")}, rules=rules,
                      commands=commands, broker={"host": "127.0.0.1", "port": broker.port, "username": "gw-1",
                                                 "password": "written-in-the-yaml"})
    sub = subscriber_factory(broker.port)
    old = os.umask(0o022)
    try:
        gw = gateway_factory(cfg)
    finally:
        os.umask(old)
    expected = {"outbox.sqlite", "outbox.sqlite-wal", "outbox.sqlite-shm", "canopy-status.json",
                "canopy-alerts-test-site-gw-1.json", "commands.sqlite"}
    wait_until(lambda: len(sub.seqs("telemetry")) > 10 and expected <= set(os.listdir(state)), 20,
               what=f"readings and the daemon's files ({sorted(os.listdir(state))})")
    modes = {name: stat.S_IMODE(os.stat(state / name).st_mode) for name in os.listdir(state)}
    assert modes == {name: 0o600 for name in modes}, {n: f"{m:04o}" for n, m in modes.items()}
    assert f"state folder {state} is open to other users (mode 0750)" in gw.output()
    line = next(i for i, text in enumerate(cfg.read_text().splitlines(), 1) if "written-in-the-yaml" in text)
    assert f"{cfg}:{line}: broker.password: password written in the config" in gw.output()
    assert "written-in-the-yaml" not in gw.output(), "never echo a secret"
    rc, _ = gw.terminate()
    assert rc == 0
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o750, "the daemon reports an existing folder, it does not chmod it"
