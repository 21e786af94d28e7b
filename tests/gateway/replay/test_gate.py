"""The checks on …/replay: junk is recognised cheaply and counted, authentic requests pass, stale ones are told apart."""

from __future__ import annotations

import time
from types import SimpleNamespace

import orjson
import pytest

from core.clock import Clock
from core.protocol.envelope import Envelope
from gateway.commands.gate import VERIFY_BURST, Junk
from gateway.replay.gate import ReplayGate, issuer_keys, may_replay
from tests.gateway.replay.site import GATEWAY, OTHER_KEY, SITE, issuer, records, request, site_cfg

EPOCH = "0123456789abcdef"


def gate_for(cfg=None) -> ReplayGate:
    cfg = cfg or site_cfg()
    cc = cfg.site.commands
    return ReplayGate(SITE, GATEWAY, cc, issuer_keys(cc, "."), Clock())


def test_an_authentic_request_of_an_allowed_issuer_passes_once():
    gate = gate_for()
    payload = records("telemetry", EPOCH, 1, 10)
    env = gate.admit(payload)
    assert isinstance(env, Envelope) and env.kind == "replay" and env.params["to_seq"] == 10
    again = gate.admit(payload)
    assert isinstance(again, Junk) and again.kind == "replayed", "the same id twice: no second signature check"


@pytest.mark.parametrize("payload, kind, reason", [
    (b"\xff" * 10, "unparseable", "not_json"),
    (b"x" * 3000, "unparseable", "too_large"),
    (orjson.dumps({"v": 2, "kind": "replay", "issuer": "centre"}), "unsigned", "unsigned"),
    (records("telemetry", EPOCH, 1, 2, issuer_name="mallory"), "unknown_issuer", "unknown"),
    (records("telemetry", EPOCH, 1, 2, key=OTHER_KEY), "bad_signature", "bad_signature"),
    (request("records", lane="alarm") .replace(b'"kind":"replay"', b'"kind":"command"'), "unparseable", "wrong_kind"),
])
def test_junk_is_recognised_and_named(payload, kind, reason):
    verdict = gate_for().admit(payload)
    assert isinstance(verdict, Junk) and (verdict.kind, verdict.reason) == (kind, reason), verdict


def test_issuers_that_may_not_replay_or_are_disabled_are_junk():
    cfg = site_cfg(centre=issuer(enabled=False), farmer=issuer(OTHER_KEY))
    gate = gate_for(cfg)
    assert gate.admit(records("alarm", EPOCH, 1, 2)).reason == "disabled"
    # IssuerConfig.replay, once the model has it (the report's patch): an issuer without it may not
    farmer = SimpleNamespace(enabled=True, replay=False, public_key=issuer(OTHER_KEY).public_key, public_key_file=None)
    assert not may_replay(farmer) and may_replay(issuer()), "no `replay` field yet: any enabled issuer may"
    cfg = site_cfg(farmer=farmer)
    gate = gate_for(cfg)
    verdict = gate.admit(records("alarm", EPOCH, 1, 2, key=OTHER_KEY, issuer_name="farmer"))
    assert (verdict.kind, verdict.reason) == ("unknown_issuer", "not_allowed")


def test_a_flood_naming_a_real_issuer_costs_at_most_its_verification_budget():
    gate = gate_for()
    verdicts = [gate.admit(records("alarm", EPOCH, 1, 2, key=OTHER_KEY)) for _ in range(int(VERIFY_BURST) + 30)]
    kinds = [v.kind for v in verdicts]
    assert kinds.count("bad_signature") <= VERIFY_BURST + 1 and kinds.count("rate_limited") >= 29


@pytest.mark.parametrize("kw, reason", [
    ({"site": "elsewhere"}, "wrong_gateway"),
    ({"now": time.time() - 1000, "valid_for": 300}, "expired"),
    ({"now": time.time() + 600}, "future_dated"),
    ({"valid_for": 7200}, "validity_too_long"),
])
def test_stale_envelopes_are_authentic_but_not_for_here_and_now(kw, reason):
    gate = gate_for()
    env = gate.admit(records("alarm", EPOCH, 1, 2, **kw))
    assert isinstance(env, Envelope)
    assert gate.stale(env, time.time())[0] == reason
