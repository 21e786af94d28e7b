"""The bounded parser: every refusal has its own reason, nothing recurses, size is checked before parsing."""

from __future__ import annotations

import orjson
import pytest

from core.protocol import envelope, limits
from core.protocol.limits import Malformed


def reason(payload, lim=limits.COMMAND, **kw) -> str:
    with pytest.raises(Malformed) as info:
        limits.parse(payload, lim, **kw)
    return info.value.reason


def nested(depth: int) -> bytes:
    """An object ``depth`` levels deep, as JSON text (orjson itself refuses to write one past 254)."""
    return b'{"a":' * (depth - 1) + b"{}" + b"}" * (depth - 1)


def test_a_command_with_params_nested_300_deep_is_too_deep_not_a_crash():
    env = envelope.sign(envelope.make(issuer="farmer", site="s", gateway="g", target="zone-2", action="irrigate",
                                      now=1_767_225_600, id="c-1"), envelope.generate())
    env["params"] = {}
    payload = orjson.dumps(env).replace(b'"params":{}', b'"params":' + nested(300))
    assert len(payload) < 8192
    with pytest.raises(Malformed) as info:
        envelope.parse(payload)
    assert info.value.reason == "too_deep"
    assert "params" in str(info.value) and "4" in str(info.value)


def test_the_922_byte_params_300_deep_message():
    # the measured case: 922 bytes, params 300 levels deep (v1 code raised a TypeError from orjson)
    head = b'{"v":1,"id":"' + b"x" * 84 + b'","issuer":"farmer","site":"s","gateway":"g","issued_at":1,"expires_at":2,'
    tail = b',"target":"zone-2","action":"irrigate","signature":"' + b"A" * 86 + b'=="}'
    payload = head + b'"params":' + b"[" * 300 + b"]" * 300 + tail
    assert len(payload) == 922
    assert reason(payload) == "too_deep"


def test_deeper_than_orjson_allows_is_too_deep_too():
    assert reason(b'{"a":' + b"[" * 5000 + b"]" * 5000 + b"}", limits.CONFIG) == "too_deep"


def test_size_is_checked_before_parsing():
    assert reason(b"{" * (8192 + 1)) == "too_large"  # not JSON either: size wins
    assert reason(b" " * 100, max_bytes=50) == "too_large"
    assert limits.parse(b'{"a": 1}' + b" " * 9000, limits.COMMAND, max_bytes=16384) == {"a": 1}


def test_not_json_and_not_object():
    assert reason(b"{nope") == "not_json"
    assert reason(b"\xff\xfe") == "not_json"
    assert reason(b"[1, 2]") == "not_object"
    assert reason(b'"text"') == "not_object"


def test_field_counts():
    assert reason(orjson.dumps({f"k{i}": i for i in range(33)})) == "too_many_fields"
    assert reason(orjson.dumps({"params": {"list": list(range(65))}})) == "too_many_fields"
    assert reason(orjson.dumps({"params": {f"k{i}": [1] * 60 for i in range(10)}})) == "too_many_fields"  # > 512 values


def test_string_lengths():
    assert reason(orjson.dumps({"params": {"note": "x" * 1025}})) == "string_too_long"
    assert reason(orjson.dumps({"params": {"x" * 1025: 1}})) == "string_too_long"
    assert limits.parse(orjson.dumps({"params": {"note": "字" * 1024}}), limits.COMMAND)


def test_within_limits_is_returned_as_is():
    obj = {"a": {"b": [1, 2, {"c": "d"}]}, "e": None}
    assert limits.parse(orjson.dumps(obj), limits.COMMAND) == obj
    assert limits.parse(orjson.dumps(obj).decode(), limits.COMMAND) == obj


def test_every_reason_is_a_documented_code():
    for code in ("too_large", "not_json", "not_object", "too_deep", "too_many_fields", "string_too_long"):
        assert code in limits.REASONS


def test_config_is_the_largest_and_sets_the_packet_size():
    to_gateway = [limits.COMMAND, limits.ACK, limits.REPLAY, limits.CONFIG]
    assert max(lim.max_bytes for lim in to_gateway) == limits.CONFIG.max_bytes == 256 * 1024
    assert limits.MAX_PACKET_SIZE > limits.CONFIG.max_bytes
