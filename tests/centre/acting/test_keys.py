"""Issuer keys: files 0600 under keys_dir, the gateway snippet, and rotation with two keys valid at once.

The snippet is checked by the gateway's own code: its config model and its ack checker
(``gateway.alerts.acks``) accept envelopes the centre signs, with either key during a
changeover, and refuse the old key once it is retired.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time

import orjson
import pytest
import yaml

from centre.acting import signing
from centre.acting.keys import KeysError, KeyStore, gateway_snippet
from centre.cli import build_parser
from gateway.alerts.ack_ids import SeenAcks
from gateway.alerts.acks import AckChecker, AckRefusal, AckRequest, ack_keys
from gateway.commands.config import CommandsConfig
from tests.support import ROOT

SITE, GW = "sunny-court", "gw-3"


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def gateway_checker(store: KeyStore) -> AckChecker:
    """What a gateway configured with ``keys show``'s snippet would do with an ack."""
    cc = CommandsConfig.model_validate(yaml.safe_load(gateway_snippet(SITE, store.keys(SITE)))["commands"])
    return AckChecker(SITE, GW, cc, ack_keys(cc, "."), SeenAcks())


def signed_ack(store: KeyStore, now: float) -> bytes:
    env = signing.sign(store, id=f"a{time.monotonic_ns()}", kind="ack", site=SITE, gateway=GW, target="1-d70e",
                       action="acknowledge", params={}, on_behalf_of="vol-wang", valid_until=now + 600, now=now,
                       envelope_validity=3600)
    return orjson.dumps(env)


def test_keys_are_files_only_the_centre_can_read(tmp_path):
    store = KeyStore(tmp_path / "keys")
    key = store.generate(SITE)
    assert key.issuer == "centre-1" and key.active
    assert mode(tmp_path / "keys") == 0o700 and mode(tmp_path / "keys" / SITE) == 0o700
    assert mode(tmp_path / "keys" / SITE / "centre-1.key") == 0o600
    assert (tmp_path / "keys" / SITE / "centre-1.pub").read_text().strip() == key.public_key
    issuer, _ = store.signing_key(SITE)
    assert issuer == "centre-1"
    os.chmod(tmp_path / "keys" / SITE / "centre-1.key", 0o644)
    with pytest.raises(KeysError, match="readable by others"):
        KeyStore(tmp_path / "keys").signing_key(SITE)
    with pytest.raises(KeysError, match="keys gen --site other"):
        store.signing_key("other")
    with pytest.raises(KeysError, match="not an id"):
        store.generate("../etc")


def test_rotation_keeps_two_keys_valid_during_the_changeover(tmp_path):
    store = KeyStore(tmp_path / "keys")
    store.generate(SITE)
    now = time.time()
    old_ack = signed_ack(store, now)  # signed with centre-1, still travelling when the rotation starts

    nxt = store.generate(SITE)  # step 1: the next key; centre-1 still signs
    assert nxt.issuer == "centre-2" and not nxt.active and store.signing_key(SITE)[0] == "centre-1"
    with pytest.raises(KeysError, match="already waiting"):
        store.generate(SITE)
    gw = gateway_checker(store)  # step 2: the gateways get both issuers
    assert set(gw.keys) == {"centre-1", "centre-2"}

    store.activate(SITE)  # step 3: centre-2 signs
    assert store.signing_key(SITE)[0] == "centre-2"
    new_ack = signed_ack(store, now)
    for payload in (old_ack, new_ack):
        req = gw.check(payload, now + 1)
        assert isinstance(req, AckRequest) and req.by == "vol-wang", req
    assert orjson.loads(new_ack)["issuer"] == "centre-2"

    with pytest.raises(KeysError, match="signs for site"):
        store.retire(SITE, "centre-2")
    store.retire(SITE, "centre-1")  # step 4
    assert [k.issuer for k in store.keys(SITE)] == ["centre-2"]
    assert not (tmp_path / "keys" / SITE / "centre-1.key").exists()
    after = gateway_checker(store)
    refused = after.check(signed_ack_with(old_ack), now + 1)
    assert isinstance(refused, AckRefusal) and refused.reason == "unauthorised_issuer"
    assert store.generate(SITE).issuer == "centre-3"  # a retired issuer id is never reused


def signed_ack_with(payload: bytes) -> bytes:
    obj = orjson.loads(payload)
    obj["id"] = obj["id"] + "x"  # a new id, same (old) key: only the issuer decides
    return orjson.dumps(obj)


def test_keys_command_prints_the_public_key_and_the_snippet(tmp_path, capsys):
    parser = build_parser()
    args = parser.parse_args(["keys", "gen", "--site", SITE, "--keys-dir", str(tmp_path)])
    assert args.config_func(args, None) == 0
    out = capsys.readouterr().out
    pub = (tmp_path / SITE / "centre-1.pub").read_text().strip()
    assert f"centre-1: {pub}  (signs now)" in out
    snippet = yaml.safe_load(out[out.index("# Canopy Centre issuer keys"):])
    issuer = snippet["commands"]["issuers"]["centre-1"]
    assert issuer["public_key"] == pub and issuer["ack"] == "all" and issuer["targets"] == ["*"]
    assert "irrigate" in issuer["actions"] and "unlock" in issuer["actions"] and "override" not in issuer["actions"]
    with_controls = yaml.safe_load(gateway_snippet(SITE, KeyStore(tmp_path).keys(SITE), controls=True))["commands"]
    assert "override" in with_controls["issuers"]["centre-1"]["actions"]
    assert "override" in CommandsConfig.model_validate(with_controls).issuers["centre-1"].actions  # the gateway's model
    args = parser.parse_args(["keys", "show", "--site", "nowhere", "--keys-dir", str(tmp_path)])
    assert args.config_func(args, None) == 1
    assert "has no keys" in capsys.readouterr().err


def test_keys_command_takes_the_whole_centre_yaml(tmp_path):
    """``-c`` with the demo's centre.yaml (acting:, routing:, … beside the base sections), as an operator runs it:
    keys_dir relative to the file, the acting section's issuer_prefix honoured; a typo is still refused."""
    data = yaml.safe_load((ROOT / "config" / "centre.demo.yaml").read_text())
    data["acting"]["issuer_prefix"] = "hq"
    (tmp_path / "centre.yaml").write_text(yaml.safe_dump(data, sort_keys=False))

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "centre", "keys", *args, "--site", SITE, "-c", "centre.yaml"],
                              cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                              timeout=60)

    gen = cli("gen")
    assert gen.returncode == 0, gen.stderr
    pub = (tmp_path / "keys" / SITE / "hq-1.pub").read_text().strip()
    assert mode(tmp_path / "keys" / SITE / "hq-1.key") == 0o600
    show = cli("show")
    assert show.returncode == 0 and f"hq-1: {pub}  (signs now)" in show.stdout, show.stderr
    assert yaml.safe_load(show.stdout[show.stdout.index("# Canopy Centre"):])["commands"]["issuers"]["hq-1"]["public_key"] == pub
    data["acting"]["resend_aftr"] = 5
    (tmp_path / "centre.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    bad = cli("show")
    assert bad.returncode == 2 and "acting.resend_aftr: unknown key" in bad.stderr and "Traceback" not in bad.stderr
