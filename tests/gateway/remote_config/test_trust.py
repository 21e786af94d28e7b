"""Who may configure a gateway, and the envelope checks in the protocol's order."""

from __future__ import annotations

import time

import orjson

from core.protocol import envelope
from gateway.remote_config.trust import Trust, may_configure


def verdict(board, payload: bytes, now: float | None = None, **kw):
    return Trust.of(board.loaded()).check(payload, time.time() if now is None else now, **kw)


def test_only_enabled_issuers_with_configure_are_trusted(board):
    trust = Trust.of(board.loaded())
    assert list(trust.keys) == ["admin"]
    assert (trust.site, trust.gateway, trust.skew, trust.max_validity) == ("farm-a", "gw-1", 30.0, 3600.0)

    class Issuer:
        enabled, configure = False, True

    assert not may_configure(Issuer()) and not may_configure(object())


def test_a_fresh_authentic_bundle_passes(board):
    v = verdict(board, board.payload(on_behalf_of="ops-li"))
    assert v.reason is None and v.verified and v.bundle.document == board.document
    assert v.info["issuer"] == "admin" and v.info["on_behalf_of"] == "ops-li"


def test_refusals_name_their_reason_in_the_protocols_order(board):
    env = board.envelope()
    cases = {
        "malformed": orjson.dumps({**env, "extra": 1}),
        "unsigned": orjson.dumps({k: v for k, v in env.items() if k != "signature"}),
        "unauthorised_issuer": board.payload(issuer="farmer"),
        "bad_signature": orjson.dumps({**env, "params": {**env["params"], "sha256": "0" * 64}}),
        "wrong_gateway": board.payload(gateway="gw-2"),
        "validity_too_long": board.payload(valid_for=7200),
        "expired": board.payload(now=time.time() - 700),
        "future_dated": board.payload(now=time.time() + 600),
        "unknown_action": board.payload(action="replace"),
        "invalid_params": board.payload(params={"config": {"site": "farm-a"}, "sha256": "0" * 64}),
    }
    for reason, payload in cases.items():
        v = verdict(board, payload)
        assert v.reason == reason, (reason, v)
    assert verdict(board, cases["malformed"]).problem == "unknown_field"
    assert not verdict(board, cases["bad_signature"]).verified and verdict(board, cases["expired"]).verified
    assert verdict(board, cases["expired"]).budgeted and not verdict(board, cases["invalid_params"]).budgeted


def test_oversized_or_deep_messages_are_refused_before_anything_else(board):
    v = verdict(board, b"{" + b" " * (256 * 1024) + b"}")
    assert (v.reason, v.problem) == ("malformed", "too_large")
    deep = {"config": {"a": {}}, "sha256": "0" * 64}
    node = deep["config"]["a"]
    for _ in range(20):
        node["a"] = {}
        node = node["a"]
    v = verdict(board, board.payload(params=deep))
    assert (v.reason, v.problem) == ("malformed", "too_deep")


def test_the_applier_allows_a_grace_for_the_handover(board):
    payload = board.payload(now=time.time() - 700, valid_for=600)  # expired 100 s ago
    assert verdict(board, payload).reason == "expired"
    assert verdict(board, payload, grace=600).reason is None


def test_a_command_key_without_configure_cannot_sign_configs_even_with_a_valid_signature(board):
    env = envelope.make(issuer="admin", site="farm-a", gateway="gw-1", target="*", action="apply", v=2, kind="config",
                        params=board.envelope()["params"])
    signed = envelope.sign({**env, "issuer": "farmer"}, board.keys["farmer"])
    assert verdict(board, orjson.dumps(signed)).reason == "unauthorised_issuer"
