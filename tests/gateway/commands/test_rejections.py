"""Every rejection reason: a result on cmd/result, an audit record, and the device untouched.

Junk -- unsigned, forged, unknown issuer, replayed -- is the exception: counted, never
answered nor stored (issue 12; tests/gateway/commands/test_junk.py has the rest).  A
message that cannot be parsed is answered when it comes alone (after ANSWER_HOLD).
"""

from __future__ import annotations

import base64

import orjson
import pytest

from core.protocol import envelope
from core.protocol.reasons import PROBLEMS
from gateway.commands.junk import ANSWER_EVERY, ANSWER_HOLD
from tests.gateway.commands.support import DUTY, STRANGER, Harness


@pytest.fixture
async def h(tmp_path):
    h = Harness(tmp_path)
    await h.start()
    for d in h.devices.values():
        d.writes.clear()  # start-up drove everything safe; from here on nothing may be written
    yield h
    await h.stop()


def assert_rejected(h: Harness, cmd_id, reason: str) -> dict:
    results = h.results(cmd_id)
    assert [r["status"] for r in results] == ["rejected"], results
    res = results[0]
    assert res["reason"] == reason, res
    assert res["topic"] == "cmd/result" and res["detail"]
    audits = h.audits(cmd_id)
    assert len(audits) == 1 and audits[0]["outcome"] == "rejected" and audits[0]["reason"] == reason
    assert "topic" not in audits[0]  # audit records go to …/event, like any event
    assert h.device_writes() == [], f"a rejected command touched a device: {h.device_writes()}"
    assert h.svc.counters["rejected"].get(reason, 0) >= 1
    return res


def assert_junk(h: Harness, kind: str, reason: str) -> None:
    """Refused without a word: no result, no audit, no device touched -- only the counter."""
    assert h.answers() == [], f"junk cost durable records: {h.answers()}"
    assert h.device_writes() == [], f"junk touched a device: {h.device_writes()}"
    assert h.junk(kind, reason) >= 1, h.svc.counters["junk"]


async def send_alone(h: Harness, payload) -> None:
    """A malformed message with no other junk around it: answered after ANSWER_HOLD."""
    await h.send(payload)
    await h.advance(ANSWER_HOLD)


async def test_expired(h):
    env = h.env("irrigate", "zone-1", {"duration_s": 60}, now=h.clock.time() - 400, valid_for=300)
    await h.send(env)
    assert "expired" in assert_rejected(h, env["id"], "expired")["detail"]


async def test_future_dated_beyond_clock_skew(h):
    env = h.env("irrigate", "zone-1", {"duration_s": 60}, now=h.clock.time() + 120)
    await h.send(env)
    assert_rejected(h, env["id"], "future_dated")


async def test_future_dated_within_skew_is_fine(h):
    env = h.env("irrigate", "zone-1", {"duration_s": 60}, now=h.clock.time() + 20)
    assert (await h.send(env))["status"] == "executed"


async def test_validity_window_longer_than_allowed(h):
    env = h.env("irrigate", "zone-1", {"duration_s": 60}, valid_for=2 * 86400)
    await h.send(env)
    assert_rejected(h, env["id"], "validity_too_long")


async def test_replayed(h):
    env = h.env("close", "zone-1")
    assert (await h.send(env))["status"] == "executed"
    h.records.clear()
    h.valves.writes.clear()
    await h.send(env)
    assert_junk(h, "replayed", "replayed")


async def test_replay_is_refused_after_a_restart(tmp_path):
    h = Harness(tmp_path)
    await h.start()
    env = h.env("close", "zone-1")
    assert (await h.send(env))["status"] == "executed"
    await h.stop(clean=False)
    h2 = Harness(tmp_path)
    h2.clock = h.clock
    await h2.start()
    for d in h2.devices.values():
        d.writes.clear()
    await h2.send(env)
    assert_junk(h2, "replayed", "replayed")  # the durable check: the gate's memory did not survive
    await h2.stop()


async def test_same_id_from_another_issuer_is_not_a_replay(h):
    a = h.env("close", "zone-1", id="same-id")
    b = h.env("lock", "door-101", key=DUTY, issuer="duty", id="same-id")
    assert (await h.send(a))["status"] == "executed"
    assert (await h.send(b))["status"] == "executed"


async def test_unsigned(h):
    env = h.env("irrigate", "zone-1", {"duration_s": 60}, key=None)
    await h.send(env)
    await h.advance(ANSWER_HOLD)
    assert_junk(h, "unsigned", "unsigned")


async def test_bad_signature_tampered_duration(h):
    env = h.env("irrigate", "zone-1", {"duration_s": 60})
    env["params"]["duration_s"] = 1200  # changed after signing
    await h.send(env)
    assert_junk(h, "bad_signature", "bad_signature")


async def test_bad_signature_wrong_key(h):
    env = h.env("irrigate", "zone-1", {"duration_s": 60}, key=STRANGER)
    await h.send(env)
    assert_junk(h, "bad_signature", "bad_signature")
    assert h.svc.counters["junk_issuers"] == {"farmer": 1}


async def test_unknown_issuer_is_unauthorised(h):
    env = h.env("irrigate", "zone-1", {"duration_s": 60}, key=STRANGER, issuer="mallory")
    await h.send(env)
    assert_junk(h, "unknown_issuer", "unknown")
    assert h.svc.counters["junk_issuers"] == {}  # an unknown name is never a key of a counter


async def test_malformed_json(h):
    await send_alone(h, b'{"id": "x1", "action": "irrigate", ')
    res = assert_rejected(h, None, "malformed")
    assert "not JSON" in res["detail"] and res["problem"] == "not_json"
    assert h.audits(None)[0]["problem"] == "not_json"


async def test_malformed_json_keeps_the_id_when_it_can(h):
    env = h.env("irrigate", "zone-1", {"duration_s": 60})
    env["issued_at"] = "yesterday"
    await send_alone(h, orjson.dumps(env))
    assert assert_rejected(h, env["id"], "malformed")["problem"] == "bad_field"


@pytest.mark.parametrize("mutate", [
    lambda e: e.pop("expires_at"),
    lambda e: e.update(extra=1),
    lambda e: e.update(v=2),
    lambda e: e.update(params=[1, 2]),
    lambda e: e.update(signature="not base64!"),
    lambda e: e.update(signature=base64.b64encode(b"short").decode()),
    lambda e: e.update(target="../etc"),
])
async def test_malformed_schema(h, mutate):
    env = h.env("irrigate", "zone-1", {"duration_s": 60})
    mutate(env)
    await send_alone(h, orjson.dumps(env))
    res = assert_rejected(h, env["id"], "malformed")
    assert res["problem"] in PROBLEMS and h.audits(env["id"])[0]["problem"] == res["problem"]


async def test_not_an_object_and_too_large(h):
    await send_alone(h, b"[1, 2, 3]")
    await h.advance(ANSWER_EVERY)  # answers to unparseable messages: one every ANSWER_EVERY at most
    await send_alone(h, b"{" + b" " * 9000 + b"}")
    assert [r["reason"] for r in h.of("cmd.result")] == ["malformed", "malformed"]
    assert [r["problem"] for r in h.of("cmd.result")] == ["not_object", "too_large"]
    assert h.device_writes() == []


async def test_wrong_gateway(h):
    env = h.env("irrigate", "zone-1", {"duration_s": 60}, gateway="other-gw")
    await h.send(env)
    assert_rejected(h, env["id"], "wrong_gateway")


async def test_unknown_target(h):
    env = h.env("irrigate", "zone-9", {"duration_s": 60})
    await h.send(env)
    assert_rejected(h, env["id"], "unknown_target")


async def test_unknown_action(h):
    env = h.env("flood", "zone-1")
    await h.send(env)
    assert_rejected(h, env["id"], "unknown_action")


async def test_unsupported_action_for_the_target_kind(h):
    env = h.env("irrigate", "door-101", {"duration_s": 60})
    await h.send(env)
    assert_rejected(h, env["id"], "unsupported_action")


async def test_unauthorised_action(h):
    env = h.env("unlock", "door-101")  # the farmer key may not unlock doors
    await h.send(env)
    assert_rejected(h, env["id"], "unauthorised_action")


async def test_unauthorised_target(h):
    env = h.env("unlock", "door-201", key=DUTY, issuer="duty")  # duty may unlock building 3 only
    await h.send(env)
    assert_rejected(h, env["id"], "unauthorised_target")


async def test_missing_duration(h):
    env = h.env("irrigate", "zone-1")
    await h.send(env)
    assert_rejected(h, env["id"], "missing_duration")


@pytest.mark.parametrize("duration", [0, -5, "15m", True, None])
async def test_invalid_duration(h, duration):
    env = h.env("irrigate", "zone-1", {"duration_s": duration})
    await h.send(env)
    assert_rejected(h, env["id"], "missing_duration" if duration is None else "invalid_duration")


async def test_duration_beyond_max_run(h):
    env = h.env("irrigate", "zone-4", {"duration_s": 601})  # zone-4: max_run 10m
    await h.send(env)
    assert assert_rejected(h, env["id"], "duration_exceeds_max")["max_run_s"] == 600


async def test_unknown_parameter(h):
    env = h.env("irrigate", "zone-1", {"duration_s": 60, "flow": 3})
    await h.send(env)
    assert_rejected(h, env["id"], "invalid_params")


@pytest.mark.parametrize("conditions, interlock", [
    ({"rain": True}, "rain"),
    ({"moisture": 45.0}, "moisture"),
    ({"level": 0.3}, "tank"),
])
async def test_interlock_active(h, conditions, interlock):
    h.observe_farm(**conditions)
    env = h.env("irrigate", "zone-2", {"duration_s": 60})
    await h.send(env)
    res = assert_rejected(h, env["id"], "interlock")
    assert res["interlock"] == interlock


async def test_interlock_with_no_fresh_reading_blocks(h):
    await h.clock.advance(301)  # every reading is now stale
    env = h.env("irrigate", "zone-2", {"duration_s": 60})
    await h.send(env)
    res = assert_rejected(h, env["id"], "interlock")
    assert "no reading" in res["detail"]


async def test_lockout(h):
    for i in range(5):  # refusals of duty's own signed unlocks (a parameter unlock does not take)
        await h.send(h.env("unlock", "door-101", {"force": True}, key=DUTY, issuer="duty"))
    h.records.clear()
    env = h.env("unlock", "door-101", key=DUTY, issuer="duty")
    await h.send(env)
    assert_rejected(h, env["id"], "lockout")


async def test_results_and_audits_carry_no_secrets_and_parse_as_json(h):
    env = h.env("irrigate", "zone-1", {"duration_s": 60}, key=DUTY, issuer="duty")  # signed, not allowed
    await h.send(env)
    for _lane, rec in h.records:
        text = orjson.dumps(rec).decode()
        assert env["signature"] not in text
    assert envelope.REJECT_REASONS.keys() >= set(h.svc.counters["rejected"])
