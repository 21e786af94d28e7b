"""Intents in words, their checks, and the sender's decision for each unanswered row (pure functions)."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest

from centre.acting.act import permission
from centre.acting.config import ActingConfig
from centre.acting.intents import Intent, IntentError, check, describe, status_text
from centre.acting.sender import decide, resend_delay
from centre.people import roles

TZ = ZoneInfo("Asia/Shanghai")
T0 = dt.datetime(2026, 12, 6, 10, 25, tzinfo=TZ).timestamp()
CFG = ActingConfig(resend_after=30, resend_max=300, expire_grace=30)


def intent(**kw) -> Intent:
    base = dict(id="a1b2c3", user="farmer-zhang", kind="command", site="green-valley", gateway="farm-gw-01",
                target="zone-2", action="irrigate", params={"duration_s": 1200}, created_at=T0, valid_until=T0 + 1200)
    return Intent(**{**base, **kw})


def test_describe_says_what_and_until_when():
    assert describe(intent(), TZ) == "irrigate zone-2 for 20 min, if it can start before 10:45"
    ack = intent(kind="ack", target="1-d70e", action="acknowledge", params={"note": "on my way"})
    assert describe(ack, TZ) == 'acknowledge alert 1-d70e ("on my way"), if it reaches the gateway before 10:45'
    tomorrow = intent(action="unlock", target="door-502", params={}, valid_until=T0 + 86400)
    assert describe(tomorrow, TZ) == "unlock door-502, if it can start before Dec 7 10:25"


@pytest.mark.parametrize("change, words", [
    ({"action": "open_everything"}, "action must be one of"),
    ({"kind": "config"}, "kind must be one of"),
    ({"user": "bad user"}, "cannot be named in an envelope"),
    ({"target": "zone/2"}, "is not an id"),
    ({"valid_until": T0}, "validity must be between"),
    ({"params": {f"k{i}": i for i in range(17)}}, "bad_field"),
    ({"params": {"duration_s": 60, "blob": "x" * 9000}}, "too_large"),
])
def test_check_refuses_what_no_gateway_would_take(change, words):
    with pytest.raises(IntentError, match=words):
        check(intent(**change), max_validity=3600)


def test_check_accepts_a_plain_intent():
    check(intent(), max_validity=3600)


def gw(status="offline", since=T0 - 600, reason="connection lost"):
    return {"gateway": "farm-gw-01", "status": status, "status_since": since, "reason": reason}


def row(**kw):
    base = dict(status="pending", sends=0, sent_at=None, valid_until=T0 + 1200, detail=None, reason=None, result_at=None)
    return {**base, **kw}


def test_status_text_in_words():
    assert status_text(row(), gw(), T0, TZ) == "waiting: gateway farm-gw-01 offline since 10:15 (connection lost)"
    assert status_text(row(), None, T0, TZ) == "waiting: the centre has never heard from this gateway"
    assert status_text(row(status="sent", sends=2, sent_at=T0), gw("online"), T0, TZ) == \
        "sent 10:25 (2×), waiting for the gateway's answer (valid until 10:45)"
    assert status_text(row(status="rejected", reason="interlock_rain", detail="raining"), gw(), T0, TZ) == \
        "rejected by the gateway: interlock_rain (raining)"
    assert status_text(row(status="expired", detail="never sent: gateway offline"), gw(), T0, TZ) == \
        "expired at 10:45: never sent: gateway offline"


def waiting(**kw):
    base = dict(id="c1", kind="command", gateway="farm-gw-01", status="pending", sends=0, sent_at=None,
                valid_until=T0 + 1200, gw_status="online", gw_since=T0 - 60, gw_reason=None,
                gw_capabilities=["controls", "signed_acks"])
    return SimpleNamespace(**{**base, **kw})


def test_decide_sends_only_to_a_gateway_that_is_online_and_takes_it():
    assert decide(waiting(), T0, CFG).action == "send"
    d = decide(waiting(gw_status="offline", gw_reason="shutdown"), T0, CFG, TZ)
    assert d.action == "wait" and d.detail == "gateway farm-gw-01 offline since 10:24 (shutdown)"
    d = decide(waiting(kind="ack", gw_capabilities=["controls"]), T0, CFG)
    assert d.action == "wait" and "no 'signed_acks'" in d.detail
    assert decide(waiting(gw_status=None), T0, CFG).action == "wait"


def test_decide_resends_with_backoff_and_expires_late_rows():
    sent = waiting(status="sent", sends=1, sent_at=T0)
    assert decide(sent, T0 + 29, CFG).action == "wait"
    assert decide(sent, T0 + 30, CFG).action == "send"
    assert [resend_delay(n, CFG) for n in (1, 2, 3, 5, 9)] == [30, 60, 120, 300, 300]
    d = decide(waiting(gw_status="offline"), T0 + 1200, CFG, TZ)
    assert d.action == "expire" and d.detail == "never sent: gateway farm-gw-01 offline since 10:24"
    assert decide(sent, T0 + 1200 + 29, CFG).action == "send"  # an answer may still be on its way: grace
    d = decide(waiting(status="sent", sends=3, sent_at=T0 + 1100), T0 + 1230, CFG, TZ)
    assert d.action == "expire" and d.detail == "sent 3× (last at 10:43), no answer from the gateway before it expired"
    assert decide(waiting(kind="replay", status="sent", sends=1, sent_at=T0), T0 + 100, CFG).action == "wait"


def test_each_action_needs_its_role_permission():
    assert permission("command", "irrigate") == roles.IRRIGATION
    assert permission("command", "unlock") == roles.DOORS
    assert permission("ack", "acknowledge") == roles.ACK_ALERTS
    assert permission("ack", "resolve") == roles.RESOLVE_ALERTS
    farmer = [roles.Grant("farmer", "green-valley")]
    assert roles.allowed(farmer, permission("command", "unlock"), site="green-valley") is not None
    assert roles.allowed(farmer, permission("command", "irrigate"), site="green-valley") is None
