"""`canopy keys gen` and `canopy remote ...` (the handlers, called directly)."""

from __future__ import annotations

import argparse
import os

import orjson
import pytest

from core.protocol import envelope
from gateway.cli.commands import _describe_record, add_parsers, build_envelope
from gateway.cli.issuing import load_issuer_key


def parse(*argv: str):
    parser = argparse.ArgumentParser(prog="canopy")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(list(argv))


def run(*argv: str) -> int:
    args = parse(*argv)
    return args.func(args)


@pytest.fixture
def key(tmp_path):
    path = tmp_path / "farmer.key"
    assert run("keys", "gen", "--out", str(path)) == 0
    return path


def test_keys_gen_writes_a_private_key_0600_and_a_public_key(tmp_path, capsys, key):
    out = capsys.readouterr().out
    pub = (tmp_path / "farmer.pub").read_text().strip()
    assert os.stat(key).st_mode & 0o777 == 0o600
    assert "farmer:" in out and pub in out and "public_key" in out
    loaded = load_issuer_key(str(key))
    assert envelope.public_key_text(loaded.public_key()) == pub
    assert run("keys", "gen", "--out", str(key)) == 2  # never overwrites by accident
    assert "exists" in capsys.readouterr().err
    assert run("keys", "gen", "--out", str(key), "--force", "--issuer", "zhang") == 0
    assert "zhang:" in capsys.readouterr().out


def test_a_key_others_can_read_is_refused(tmp_path, capsys, key):
    os.chmod(key, 0o644)
    code = run("remote", "close-all", "--site", "s", "--gateway", "g", "--key", str(key), "--broker", "127.0.0.1:1")
    assert code == 2 and "chmod 600" in capsys.readouterr().err


def test_missing_key_file(tmp_path, capsys):
    code = run("remote", "close-all", "--site", "s", "--gateway", "g", "--key", str(tmp_path / "nope.key"))
    assert code == 2 and "not found" in capsys.readouterr().err


def test_irrigate_envelope_from_minutes_or_seconds(key):
    args = parse("remote", "irrigate", "--site", "s", "--gateway", "g", "--zone", "2", "--minutes", "15", "--key", str(key))
    env, k = build_envelope(args, now=1000.0)
    assert env["target"] == "zone-2" and env["action"] == "irrigate" and env["params"] == {"duration_s": 900}
    assert env["issuer"] == "farmer" and env["expires_at"] - env["issued_at"] == 120
    assert envelope.verify(envelope.parse(orjson.dumps(env)), k.public_key())
    args = parse("remote", "irrigate", "--site", "s", "--gateway", "g", "--target", "north-field", "--minutes", "0.05",
                 "--key", str(key), "--issuer", "zhang", "--valid-for", "30")
    env, _ = build_envelope(args)
    assert env["params"] == {"duration_s": 3} and env["target"] == "north-field" and env["issuer"] == "zhang"
    args = parse("remote", "irrigate", "--site", "s", "--gateway", "g", "--zone", "1", "--seconds", "2.5", "--key", str(key))
    assert build_envelope(args)[0]["params"] == {"duration_s": 2.5}


def test_other_actions(key):
    base = ["--site", "s", "--gateway", "g", "--key", str(key)]
    env, _ = build_envelope(parse("remote", "close-all", *base, "--hold-minutes", "0"))
    assert env["action"] == "close_all" and env["target"] == "*" and env["params"] == {"hold_s": 0}
    env, _ = build_envelope(parse("remote", "unlock", *base, "--lock", "door-101"))
    assert env["action"] == "unlock" and env["target"] == "door-101" and env["params"] == {}
    env, _ = build_envelope(parse("remote", "reset-lockout", *base, "--target", "door-101"))
    assert env["action"] == "reset_lockout"
    env, _ = build_envelope(parse("remote", "close", *base, "--zone", "3"))
    assert env["action"] == "close" and env["target"] == "zone-3"


def test_envelopes_are_v2_and_name_the_person_with_as(key, capsys):
    base = ["--site", "s", "--gateway", "g", "--key", str(key)]
    env, k = build_envelope(parse("remote", "unlock", *base, "--lock", "door-101"))
    assert env["v"] == 2 and env["kind"] == "command" and "on_behalf_of" not in env
    env, k = build_envelope(parse("remote", "unlock", *base, "--lock", "door-101", "--as", "vol-wang"))
    assert env["on_behalf_of"] == "vol-wang"
    parsed = envelope.parse(orjson.dumps(env))
    assert parsed.v == 2 and parsed.on_behalf_of == "vol-wang" and envelope.verify(parsed, k.public_key())
    assert run("remote", "unlock", *base, "--lock", "door-101", "--as", "Mrs Wang") == 2
    assert "--as" in capsys.readouterr().err


def test_usage_errors(capsys, key):
    base = ["--site", "s", "--gateway", "g", "--key", str(key)]
    assert run("remote", "irrigate", *base, "--zone", "1", "--minutes", "0") == 2
    assert "positive" in capsys.readouterr().err
    assert run("remote", "close-all", *base, "--broker", "host:notaport") == 2
    assert "host:port" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse("remote", "irrigate", *base, "--zone", "1")  # no duration


def test_unreachable_broker_is_no_answer(capsys, key):
    from tests.support import free_port

    code = run("remote", "close-all", "--site", "s", "--gateway", "g", "--key", str(key),
               "--broker", f"127.0.0.1:{free_port()}", "--timeout", "2")
    assert code == 3 and "cannot reach the broker" in capsys.readouterr().err


def test_result_lines_read_well():
    assert "rejected" in _describe_record({"status": "rejected", "action": "irrigate", "target": "zone-2",
                                           "reason": "interlock", "interlock": "rain", "detail": "rain detected"})
    text = _describe_record({"status": "executed", "action": "irrigate", "target": "zone-2", "duration_s": 900,
                             "closes_at": 1_700_000_900, "device_timer": True, "state": {"zone_2": True, "zone_2_pulse": 900}})
    assert "zone_2=true" in text and "900 s" in text and "device timer" in text
    text = _describe_record({"status": "executed", "action": "close_all", "target": "*",
                             "state": {"zone-1": {"zone_1": False}}})
    assert "zone-1={zone_1=false}" in text
    text = _describe_record({"status": "rejected", "action": "close", "target": "zone-1", "reason": "malformed",
                             "problem": "too_deep", "detail": "params nests deeper than 4 levels"})
    assert "malformed" in text and "too_deep" in text
