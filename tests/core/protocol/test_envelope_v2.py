"""Signed envelope v2: every kind, on_behalf_of, kind/topic checks, v1 compatibility, the v1 unsigned ack."""

from __future__ import annotations

import orjson
import pytest

from core.protocol import envelope, reasons
from core.protocol.envelope import Malformed, Unsigned

KEY = envelope.generate()


def v2(kind: str = "ack", **over) -> dict:
    env = envelope.make(v=2, kind=kind, issuer="centre-1", on_behalf_of="vol-wang", site="s", gateway="g",
                        target="1-d70e", action="acknowledge", params={"note": "on my way"}, now=1_767_225_600, id="a-1")
    env.update(over)
    return envelope.sign(env, KEY)


def problem(payload: bytes, **kw) -> str:
    with pytest.raises(Malformed) as info:
        envelope.parse(payload, **kw)
    return info.value.reason


def test_v2_ack_round_trip_with_on_behalf_of():
    env = envelope.parse(orjson.dumps(v2()), kind="ack")
    assert (env.v, env.kind, env.issuer, env.on_behalf_of, env.acting_for) == (2, "ack", "centre-1", "vol-wang", "vol-wang")
    assert env.params == {"note": "on my way"}
    assert envelope.verify(env, KEY.public_key())


@pytest.mark.parametrize("kind, action, target, params", [
    ("command", "irrigate", "zone-2", {"duration_s": 900}),
    ("config", "apply", "*", {"config": {"site": "s", "buses": []}, "sha256": "ab" * 32}),
    ("replay", "records", "*", {"lane": "event", "epoch": "9f1c2a7b30d4e8f1", "from_seq": 3, "to_seq": 9}),
])
def test_every_kind_signs_and_verifies(kind, action, target, params):
    env = envelope.sign(envelope.make(v=2, kind=kind, issuer="centre-1", site="s", gateway="g", target=target,
                                      action=action, params=params, now=1_767_225_600), KEY)
    parsed = envelope.parse(orjson.dumps(env), kind=kind)
    assert parsed.kind == kind and parsed.on_behalf_of is None and parsed.acting_for == "centre-1"
    assert envelope.verify(parsed, KEY.public_key())


@pytest.mark.parametrize("field, value", [("on_behalf_of", "vol-li"), ("kind", "command"), ("v", 1)])
def test_the_new_fields_are_covered_by_the_signature(field, value):
    env = v2()
    env[field] = value
    canonical_before = envelope.canonical(v2())
    assert envelope.canonical(env) != canonical_before


def test_on_behalf_of_cannot_be_added_after_signing():
    env = envelope.sign(envelope.make(v=2, kind="ack", issuer="centre-1", site="s", gateway="g", target="1-d70e",
                                      action="acknowledge", now=1_767_225_600), KEY)
    env["on_behalf_of"] = "someone-else"
    assert not envelope.verify(envelope.parse(orjson.dumps(env), kind="ack"), KEY.public_key())


def test_kind_must_match_the_topic():
    assert problem(orjson.dumps(v2()), kind="command") == "wrong_kind"
    assert problem(orjson.dumps(v2(kind="command")), kind="ack") == "wrong_kind"


def test_v1_commands_still_parse_and_only_commands_may_be_v1():
    v1 = envelope.sign(envelope.make(issuer="farmer", site="s", gateway="g", target="zone-2", action="irrigate",
                                     params={"duration_s": 900}, now=1_767_225_600), KEY)
    parsed = envelope.parse(orjson.dumps(v1))
    assert (parsed.v, parsed.kind, parsed.on_behalf_of) == (1, "command", None)
    no_v = envelope.sign({k: val for k, val in v1.items() if k not in ("v", "signature")}, KEY)
    assert envelope.verify(envelope.parse(orjson.dumps(no_v)), KEY.public_key())
    assert problem(orjson.dumps(v1), kind="ack") == "bad_version"
    assert problem(orjson.dumps({**v1, "on_behalf_of": "x"})) == "unknown_field"
    assert problem(orjson.dumps({**v1, "v": 3})) == "bad_version"
    with pytest.raises(ValueError):
        envelope.make(issuer="a", site="s", gateway="g", target="*", action="apply", kind="config")


def test_malformed_v2_envelopes_say_what_is_wrong():
    env = v2()
    env.pop("kind")
    assert problem(orjson.dumps(env), kind="ack") == "missing_field"
    assert problem(orjson.dumps({**v2(), "on_behalf_of": "no spaces allowed"}), kind="ack") == "bad_field"
    assert problem(orjson.dumps({**v2(), "signature": "AAAA"}), kind="ack") == "bad_signature_format"
    assert problem(orjson.dumps({**v2(), "params": {"note": "x" * 2000}}), kind="ack") == "string_too_long"
    assert problem(orjson.dumps(v2()) + b" " * 5000, kind="ack") == "too_large"
    unsigned = v2()
    unsigned.pop("signature")
    with pytest.raises(Unsigned) as info:
        envelope.parse(orjson.dumps(unsigned), kind="ack")
    assert info.value.reason == "unsigned"


def test_every_problem_code_is_known():
    for code in ("too_large", "not_json", "not_object", "too_deep", "too_many_fields", "string_too_long", "bad_version",
                 "wrong_kind", "missing_field", "unknown_field", "bad_field", "bad_signature_format"):
        assert code in reasons.PROBLEMS


def test_a_v1_unsigned_ack_is_recognised_so_it_can_be_answered():
    ack = orjson.dumps({"v": 1, "alert": "2-d065", "by": "vol-wang", "resolve": False, "note": "on my way"})
    assert envelope.legacy_ack(ack) == {"alert": "2-d065", "by": "vol-wang"}
    assert envelope.legacy_ack(b'{"alert": "2-d065", "by": 5}') == {"alert": "2-d065", "by": ""}
    assert envelope.legacy_ack(orjson.dumps(v2())) is None  # a signed v2 ack is not a legacy one
    assert envelope.legacy_ack(b"garbage") is None
    assert envelope.legacy_ack(b'{"alert": "x"}') is None
    assert reasons.UNSIGNED_ACK == "unsigned_ack"
    assert "docs/protocol.md#acknowledgements" in reasons.UNSIGNED_ACK_DETAIL


def test_peek_reads_kind_and_refuses_huge_payloads():
    assert envelope.peek(orjson.dumps(v2()))["kind"] == "ack"
    assert envelope.peek(b'{"id": "x"}' + b" " * (300 * 1024)) == {}
