"""The envelope's canonical form, Ed25519 signatures and key formats."""

from __future__ import annotations

from pathlib import Path
import base64

import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from core.protocol import envelope
from core.protocol.envelope import KeyError_, Malformed, Unsigned


def signed(key=None, **over) -> dict:
    key = key or envelope.generate()
    env = envelope.make(issuer="farmer", site="s", gateway="g", target="zone-2", action="irrigate",
                        params={"duration_s": 900}, now=1_767_225_600, id="c-1")
    env.update(over)
    return envelope.sign(env, key)


def test_canonical_is_sorted_compact_and_ignores_the_signature():
    obj = {"b": 1, "a": {"z": 1.5, "y": "ü"}, "signature": "x"}
    assert envelope.canonical(obj) == '{"a":{"y":"ü","z":1.5},"b":1}'.encode()
    assert envelope.canonical({"a": 1}) == envelope.canonical({"a": 1, "signature": "whatever"})


def test_documented_example_bytes():
    # docs/commands.md shows exactly these bytes
    env = envelope.make(issuer="farmer", site="green-valley", gateway="farm-gw-01", target="zone-2", action="irrigate",
                        params={"duration_s": 900}, now=1767225600, valid_for=300, id="7f3a9c01")
    assert envelope.canonical(env) == (
        b'{"action":"irrigate","expires_at":1767225900,"gateway":"farm-gw-01","id":"7f3a9c01",'
        b'"issued_at":1767225600,"issuer":"farmer","params":{"duration_s":900},"site":"green-valley",'
        b'"target":"zone-2","v":1}')


def test_sign_parse_verify_round_trip():
    key = envelope.generate()
    env = signed(key)
    parsed = envelope.parse(orjson.dumps(env))
    assert parsed.id == "c-1" and parsed.params == {"duration_s": 900}
    assert envelope.verify(parsed, key.public_key())
    assert not envelope.verify(parsed, envelope.generate().public_key())


def test_key_order_and_whitespace_of_the_message_do_not_matter():
    key = envelope.generate()
    env = signed(key)
    text = orjson.dumps(dict(reversed(list(env.items()))), option=orjson.OPT_INDENT_2)
    assert envelope.verify(envelope.parse(text), key.public_key())


@pytest.mark.parametrize("field, value", [("target", "zone-3"), ("action", "close"), ("expires_at", 1_767_999_999),
                                          ("params", {"duration_s": 901}), ("gateway", "g2"), ("id", "c-2")])
def test_every_field_is_covered_by_the_signature(field, value):
    key = envelope.generate()
    env = signed(key)
    env[field] = value
    assert not envelope.verify(envelope.parse(orjson.dumps(env)), key.public_key())


def test_unsigned_and_malformed():
    env = signed()
    env.pop("signature")
    with pytest.raises(Unsigned):
        envelope.parse(orjson.dumps(env))
    with pytest.raises(Unsigned):
        envelope.parse(orjson.dumps({**env, "signature": ""}))
    with pytest.raises(Malformed, match="not JSON"):
        envelope.parse(b"{nope")
    with pytest.raises(Malformed, match="object"):
        envelope.parse(b'"text"')
    with pytest.raises(Malformed, match="at most"):
        envelope.parse(b" " * 10000)
    with pytest.raises(Malformed, match="unknown field"):
        envelope.parse(orjson.dumps({**signed(), "priority": 1}))
    with pytest.raises(Malformed, match="missing"):
        bad = signed()
        bad.pop("issuer")
        envelope.parse(orjson.dumps(bad))
    with pytest.raises(Malformed, match="64 bytes"):
        envelope.parse(orjson.dumps({**signed(), "signature": base64.b64encode(b"x" * 10).decode()}))
    with pytest.raises(Malformed, match="number"):
        envelope.parse(orjson.dumps({**signed(), "issued_at": True}))


def test_peek_takes_what_it_can_from_a_bad_message():
    assert envelope.peek(b'{"id": "a1", "action": 3, "target": "door-1"}') == {"id": "a1", "target": "door-1"}
    assert envelope.peek(b"garbage") == {}


def test_public_key_formats():
    key = envelope.generate()
    text = envelope.public_key_text(key.public_key())
    assert len(text) == 44
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    for form in (text, f"ed25519:{text}", pem, text + "\n"):
        loaded = envelope.load_public_key(form)
        assert loaded.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw) == raw
    with pytest.raises(KeyError_, match="32 bytes"):
        envelope.load_public_key(base64.b64encode(b"x" * 31).decode())
    with pytest.raises(KeyError_, match="base64"):
        envelope.load_public_key("not a key!")
    ec_pem = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    with pytest.raises(KeyError_, match="Ed25519"):
        envelope.load_public_key(ec_pem)


def test_private_key_round_trip_and_refusals():
    key = envelope.generate()
    again = envelope.load_private_key(envelope.private_pem(key))
    assert envelope.public_key_text(again.public_key()) == envelope.public_key_text(key.public_key())
    with pytest.raises(KeyError_):
        envelope.load_private_key(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    ec_key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    with pytest.raises(KeyError_, match="Ed25519"):
        envelope.load_private_key(ec_key)


def test_every_reason_is_documented():
    doc = str(Path(__file__).resolve().parents[3] / "docs" / "commands.md")
    text = open(doc, encoding="utf-8").read()
    for reason in list(envelope.REJECT_REASONS) + list(envelope.FAIL_REASONS):
        assert f"`{reason}`" in text, f"reason {reason} is not in docs/commands.md"
