"""Signed acks (issue 12): only a correctly signed, new, in-scope ack acts; every refusal changes nothing.

A live critical smoke alert holds the sounder and escalates (0 s, 120 s, 300 s).  Each bad
ack must leave it open, the sounder wanted on, and the next escalation on time; it is
counted under its reason, and answered (``alert.ack_rejected``) -- always when it was
correctly signed and new (the audit), at most ten a minute otherwise.
"""

from __future__ import annotations

import orjson
import pytest

from core.protocol import envelope
from core.protocol.reasons import UNSIGNED_ACK_DETAIL
from gateway.alerts.ack_ids import MAX_IDS, SeenAcks
from tests.gateway.alerts.support import (
    ACK_TOPIC,
    DESK,
    ISSUERS,
    SMOKE,
    STRANGER,
    VOLUNTEERS,
    Harness,
    load_site,
    public,
    rules,
    signed_ack,
    smoke_on,
)

LOCKSMITH = envelope.generate()
EXTRA_ISSUERS = {
    "locksmith": {"public_key": public(LOCKSMITH), "actions": ["unlock"], "targets": ["*"]},  # commands, no ack
    "old-desk": {"public_key": public(DESK), "ack": "all", "enabled": False},
}


async def live_alarm(tmp_path) -> tuple[Harness, str]:
    h = Harness(load_site(tmp_path, rules(SMOKE), issuers={**ISSUERS, **EXTRA_ISSUERS}))
    raised = await smoke_on(h)
    assert h.writes == [("sounder", "sounder", True)]
    return h, raised["alert"]


async def send(h: Harness, payload: bytes) -> None:
    h.engine.on_ack(ACK_TOPIC, payload)
    await h.settle()


async def assert_changed_nothing(h: Harness, aid: str) -> None:
    a = h.engine.alerts[aid]
    assert a.open and a.acked_at is None and a.acked_by is None
    assert h.engine.outputs.snapshot()["sounder/sounder"]["wanted"] is True
    assert ("sounder", "sounder", False) not in h.writes
    assert h.of("alert.acknowledged") == [] and h.of("alert.resolved") == []
    steps = len(h.of("alert.escalated", alert=aid))
    await h.advance(120 if steps == 0 else 180)
    assert len(h.of("alert.escalated", alert=aid)) == steps + 1, "escalation goes on"


def cases(aid: str, now: float) -> dict[str, tuple[bytes, str, bool]]:
    """name -> (payload, reason, audited)."""
    unsigned = {k: v for k, v in orjson.loads(signed_ack(aid, now=now)).items() if k != "signature"}
    deep = orjson.loads(signed_ack(aid, now=now))
    deep["params"] = {"note": [[[["x"]]]]}
    return {
        "forged": (signed_ack(aid, key=STRANGER, now=now), "bad_signature", False),
        "tampered": (signed_ack(aid, by="li", now=now, on_behalf_of="director"), "bad_signature", False),
        "resolve_slipped_in": (orjson.dumps({**orjson.loads(signed_ack(aid, now=now)), "action": "resolve"}), "bad_signature", False),
        "unknown_issuer": (signed_ack(aid, key=STRANGER, issuer="mallory", now=now), "unauthorised_issuer", False),
        "issuer_without_ack": (signed_ack(aid, key=LOCKSMITH, issuer="locksmith", now=now), "unauthorised_issuer", False),
        "disabled_issuer": (signed_ack(aid, key=DESK, issuer="old-desk", now=now), "unauthorised_issuer", False),
        "expired": (signed_ack(aid, now=now - 400, valid_for=300), "expired", False),
        "future": (signed_ack(aid, now=now + 600), "future_dated", False),
        "too_long": (signed_ack(aid, now=now, valid_for=7200), "validity_too_long", False),
        "other_gateway": (signed_ack(aid, now=now, gateway="gw-9"), "wrong_gateway", False),
        "unsigned_v2": (orjson.dumps(unsigned), "unsigned", False),
        "unsigned_v1": (orjson.dumps({"alert": aid, "by": "duty-desk", "resolve": True}), "unsigned_ack", False),
        "too_deep": (orjson.dumps(deep), "malformed", False),
        "a_command": (signed_ack(aid, now=now, kind="command"), "malformed", False),
        "wrongly_scoped": (signed_ack(aid, key=VOLUNTEERS, issuer="vol-app", by="vol-wang", now=now), "unauthorised_alert", True),
        "unknown_action": (signed_ack(aid, now=now, action="silence"), "unknown_action", True),
        "extra_params": (signed_ack(aid, now=now, params={"outputs": "off"}), "invalid_params", True),
    }


@pytest.mark.parametrize("case", list(cases("1-abcd", 0)))
async def test_a_bad_ack_changes_nothing_and_is_counted_and_answered(tmp_path, case):
    h, aid = await live_alarm(tmp_path)
    payload, reason, audited = cases(aid, h.clock.time())[case]
    await send(h, payload)
    assert h.engine.snapshot()["ack_rejections"] == {reason: 1}
    assert h.engine.snapshot()["counters"]["ack_ok"] == 0
    answers = h.of("alert.ack_rejected")
    assert [(r["alert"], r["reason"]) for r in answers] == [(aid, reason)]
    if reason == "unsigned_ack":
        assert answers[0]["detail"] == UNSIGNED_ACK_DETAIL and answers[0]["by"] == "duty-desk"
    if audited:
        assert answers[0]["by"] == orjson.loads(payload).get("on_behalf_of", "centre-1")
        assert answers[0]["id"] == orjson.loads(payload)["id"]
    await assert_changed_nothing(h, aid)


async def test_a_replayed_ack_changes_nothing_even_when_it_would_now_be_allowed(tmp_path):
    h, aid = await live_alarm(tmp_path)
    early = signed_ack(aid, key=VOLUNTEERS, issuer="vol-app", by="vol-wang", now=h.clock.time(), valid_for=600)
    await send(h, early)  # the volunteers have not been paged yet: outside vol-app's scope
    await h.advance(120)  # escalated to the volunteers: now in scope
    await send(h, early)
    assert h.engine.snapshot()["ack_rejections"] == {"unauthorised_alert": 1, "replayed": 1}
    await assert_changed_nothing(h, aid)
    await send(h, signed_ack(aid, key=VOLUNTEERS, issuer="vol-app", by="vol-wang", now=h.clock.time()))
    acked = h.of("alert.acknowledged", alert=aid)
    assert [(r["by"], r["issuer"]) for r in acked] == [("vol-wang", "vol-app")]


async def test_junk_answers_are_rate_limited_the_audit_of_signed_acks_is_not(tmp_path):
    h, aid = await live_alarm(tmp_path)
    for _ in range(30):
        await send(h, signed_ack(aid, key=STRANGER, now=h.clock.time()))
    for _ in range(15):
        await send(h, signed_ack(aid, key=VOLUNTEERS, issuer="vol-app", by="vol-wang", now=h.clock.time()))
    assert h.engine.snapshot()["ack_rejections"] == {"bad_signature": 30, "unauthorised_alert": 15}
    reasons = [r["reason"] for r in h.of("alert.ack_rejected")]
    assert reasons.count("bad_signature") == 10 and reasons.count("unauthorised_alert") == 15
    await assert_changed_nothing(h, aid)


async def test_signature_checks_per_issuer_are_rate_limited_before_they_run(tmp_path):
    h, aid = await live_alarm(tmp_path)
    for _ in range(100):
        h.engine.on_ack(ACK_TOPIC, signed_ack(aid, key=STRANGER, now=h.clock.time()))
    rejected = h.engine.snapshot()["ack_rejections"]
    assert rejected["rate_limited"] >= 50 and rejected["rate_limited"] + rejected["bad_signature"] == 100
    await h.advance(5)  # the budget refills: a real ack from that issuer gets through
    await send(h, signed_ack(aid, by="duty-li", now=h.clock.time()))
    assert h.of("alert.acknowledged")[0]["by"] == "duty-li"


async def test_a_correct_ack_names_the_person_the_key_and_the_envelope(tmp_path):
    h, aid = await live_alarm(tmp_path)
    payload = signed_ack(aid, by="vol-wang", note="on my way", now=h.clock.time())
    await send(h, payload)
    rec = h.of("alert.acknowledged")[0]
    assert (rec["by"], rec["issuer"], rec["ack"], rec["note"]) == ("vol-wang", "centre-1", orjson.loads(payload)["id"], "on my way")
    assert h.writes[-1] == ("sounder", "sounder", False)
    await send(h, signed_ack(aid, key=DESK, issuer="duty-desk", resolve=True, now=h.clock.time()))
    assert h.of("alert.resolved")[0]["resolved_by"] == "ack:duty-desk"  # the desk signed for itself
    assert h.engine.counters["ack_ok"] == 2 and h.engine.snapshot()["ack_rejections"] == {}


async def test_replay_protection_survives_a_restart(tmp_path):
    cfg = load_site(tmp_path, rules({**SMOKE, "resolve": "ack"}))
    h = Harness(cfg, state_dir=str(tmp_path))
    aid = (await smoke_on(h))["alert"]
    first = signed_ack(aid, by="li", now=h.clock.time())
    await send(h, first)
    h2 = Harness(cfg, state_dir=str(tmp_path), clock=h.clock)
    await h2.settle()
    await send(h2, first)  # the broker's session delivers it again after the restart
    assert h2.engine.snapshot()["ack_rejections"] == {"replayed": 1}
    await h2.advance(400)  # past its validity: forgotten at the next save, refused `expired` from then on
    await h2.engine._save()
    h3 = Harness(cfg, state_dir=str(tmp_path), clock=h.clock)
    assert len(h3.engine.seen_acks) == 0
    await send(h3, first)
    assert h3.engine.snapshot()["ack_rejections"] == {"expired": 1}


def test_ack_ids_are_bounded_and_forgotten_after_their_validity():
    seen = SeenAcks()
    assert seen.fresh("a/1", 100.0, 0.0) and not seen.fresh("a/1", 100.0, 50.0)
    assert seen.fresh("a/1", 300.0, 150.0)  # past its validity: the envelope is refused expired before this
    for i in range(MAX_IDS + 5):
        seen.fresh(f"b/{i}", 1000.0 + i, 200.0)
    assert len(seen) == MAX_IDS and "b/0" not in seen.until and f"b/{MAX_IDS + 4}" in seen.until
    assert seen.dump(1000.0 + MAX_IDS) == {f"b/{i}": 1000.0 + i for i in range(MAX_IDS, MAX_IDS + 5)}


async def test_an_oversized_ack_is_refused_unread(tmp_path):
    h, aid = await live_alarm(tmp_path)
    big = orjson.loads(signed_ack(aid, by="li", now=h.clock.time()))
    big["params"] = {"note": "x" * 1000, "more": "y" * 1000, "again": "z" * 1000, "and": "w" * 1000}
    await send(h, orjson.dumps(big))
    assert h.engine.snapshot()["ack_rejections"] == {"malformed": 1}
    answer = h.of("alert.ack_rejected")[0]
    assert answer["detail"].startswith("too_large") and (answer["alert"], answer["by"]) == ("", "")  # nothing of it was parsed
    await assert_changed_nothing(h, aid)
