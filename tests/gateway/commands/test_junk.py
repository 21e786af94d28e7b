"""Junk never reaches the expensive path (issue 12): no queue slot, no verify beyond a budget, no record, no lock-out.

Unit level, on the harness's FakeClock: bounds are generous and nothing is timed.
"""

from __future__ import annotations

import logging

import orjson
import pytest

from core.protocol import envelope
from gateway.commands.gate import VERIFY_BURST, VERIFY_PER_S
from gateway.commands.intake import STALE_ANSWERS_BURST
from gateway.commands.junk import ANSWER_HOLD, SUMMARY_EVERY
from tests.gateway.commands.support import CENTRE, DUTY, FARMER, GATEWAY, SITE, STRANGER, Harness


@pytest.fixture
async def h(tmp_path):
    h = Harness(tmp_path)
    await h.start()
    for d in h.devices.values():
        d.writes.clear()
    yield h
    await h.stop()


def junk_unlock(h: Harness, kind: str, n: int) -> bytes:
    """One unlock of door-101 of a kind of junk (each with its own id)."""
    if kind == "unsigned":
        return orjson.dumps(h.env("unlock", "door-101", key=None, issuer="duty", id=f"u{n}"))
    if kind == "unknown_issuer":
        return orjson.dumps(h.env("unlock", "door-101", key=STRANGER, issuer="mallory", id=f"m{n}"))
    if kind == "bad_signature":  # names the duty desk, signed with another key
        return orjson.dumps(h.env("unlock", "door-101", key=STRANGER, issuer="duty", id=f"f{n}"))
    if kind == "unparseable":
        return b'{"action": "unlock", "target": "door-101", "id": "p%d"' % n
    raise ValueError(kind)


def flood(h: Harness, payloads) -> None:
    """Straight into on_command, as fast as the broker delivers: nothing runs in between."""
    for p in payloads:
        h.svc.on_command("canopy/v1/green-valley/gw-1/cmd", p)


@pytest.mark.parametrize("n", [5, 5000])
@pytest.mark.parametrize("kind", ["unsigned", "unknown_issuer", "bad_signature"])
async def test_junk_unlocks_never_lock_a_door_out(h, kind, n):
    flood(h, (junk_unlock(h, kind, i) for i in range(n)))
    await h.svc.drain()
    await h.advance(ANSWER_HOLD)
    assert not h.of("lock.lockout", lane="alarm")
    assert h.answers() == [] and h.device_writes() == []
    assert sum(sum(r.values()) for r in h.svc.counters["junk"].values()) == n
    await h.advance(2)  # a forged flood naming the duty desk used up its verification budget: it refills
    res = await h.send(h.env("unlock", "door-101", key=DUTY, issuer="duty"))
    assert res["status"] == "executed"
    assert "lockouts" not in h.svc.snapshot()["locks"]["door-101"]


async def test_junk_costs_no_durable_record_only_a_summary_a_minute(h, caplog):
    caplog.set_level(logging.INFO, logger="canopy.commands")
    valid = h.env("close", "zone-1")
    assert (await h.send(valid))["status"] == "executed"
    h.records.clear()
    h.valves.writes.clear()
    kinds = ["unsigned", "unknown_issuer", "bad_signature", "unparseable"]
    for minute in range(3):
        flood(h, (junk_unlock(h, kinds[i % 4], i) for i in range(2000)))
        flood(h, [orjson.dumps(valid)] * 500)  # a captured valid command, sent again
        await h.svc.drain()
        await h.advance(SUMMARY_EVERY)
        assert h.answers() == [], f"minute {minute}: junk cost records: {h.answers()[:2]}"
        assert len(h.of("cmd.junk")) == minute + 1
    summary = h.of("cmd.junk")[0]
    assert summary["total"] == 2500 and summary["counts"]["replayed"] == {"replayed": 500}
    assert summary["counts"]["unparseable"] == {"not_json": 500} and summary["counts"]["unsigned"] == {"unsigned": 500}
    assert summary["issuers"]["farmer"] == 500 and "mallory" not in summary["issuers"]
    counters = h.svc.snapshot()["counters"]
    assert counters["junk"]["replayed"]["replayed"] == 1500 and counters["junk"]["unknown_issuer"]["unknown"] == 1500
    assert h.device_writes() == []
    lines = [r for r in caplog.records if "junk" in r.getMessage()]
    assert 1 <= len(lines) <= 4, [r.getMessage() for r in lines]  # one when it starts, one a minute with the count
    assert any("2500 junk message(s)" in r.getMessage() for r in lines)
    await h.advance(2 * SUMMARY_EVERY)  # the flood is over: no more summaries
    assert len(h.of("cmd.junk")) == 3


async def test_a_valid_command_gets_through_a_junk_burst(h):
    """Junk never takes a queue slot: 5,000 of each kind, then a valid command, all before the worker runs."""
    for kind in ("unsigned", "unknown_issuer", "bad_signature", "unparseable"):
        flood(h, (junk_unlock(h, kind, i) for i in range(5000)))
    assert len(h.svc.intake.inbox) == 0
    env = h.env("irrigate", "zone-2", {"duration_s": 60})
    h.svc.on_command("t", orjson.dumps(env))
    assert len(h.svc.intake.inbox) == 1
    await h.svc.drain()
    assert h.final(env["id"])["status"] == "executed"


async def test_replays_of_a_captured_command_cost_no_signature_check(h):
    env = h.env("close", "zone-1")
    assert (await h.send(env))["status"] == "executed"
    bucket = h.svc.intake.gate.buckets["farmer"]
    before = bucket.tokens
    flood(h, [orjson.dumps(env)] * 1000)
    assert bucket.tokens == before and h.junk("replayed") == 1000
    assert (await h.send(h.env("close", "zone-1")))["status"] == "executed"  # the farmer's new commands still pass


async def test_signature_checks_are_rate_limited_per_issuer(h):
    flood(h, (junk_unlock(h, "bad_signature", i) for i in range(200)))  # naming the duty desk
    assert h.junk("bad_signature") == VERIFY_BURST and h.junk("rate_limited") == 200 - VERIFY_BURST
    assert h.svc.counters["junk_issuers"] == {"duty": 200}
    # another issuer's budget is its own: the farmer is not slowed down by a flood naming the duty desk
    assert (await h.send(h.env("close", "zone-1")))["status"] == "executed"
    await h.advance(1)
    flood(h, (junk_unlock(h, "bad_signature", 1000 + i) for i in range(100)))
    assert h.junk("bad_signature") == VERIFY_BURST + VERIFY_PER_S


async def test_stale_envelopes_are_answered_within_a_budget(h):
    """Authentic but expired (perhaps captured long ago): a few answers, then counted only."""
    for i in range(20):
        await h.send(h.env("close", "zone-1", now=h.clock.time() - 1000, id=f"old-{i}"))
    assert [r["reason"] for r in h.of("cmd.result")] == ["expired"] * int(STALE_ANSWERS_BURST)
    assert h.junk("stale", "expired") == 20 - STALE_ANSWERS_BURST
    assert h.device_writes() == []


async def test_unparseable_junk_alone_is_answered_a_burst_is_not(h):
    await h.send(b"not json")
    await h.send(b"[1]")
    await h.advance(ANSWER_HOLD)
    assert h.answers() == [] and h.junk("unparseable") == 2
    await h.advance(60)
    await h.send(b"not json either")
    await h.advance(ANSWER_HOLD)
    (res,) = h.of("cmd.result")
    assert res["status"] == "rejected" and res["reason"] == "malformed" and res["problem"] == "not_json"


async def test_params_nested_300_deep_are_rejected_malformed_with_audit(h):
    fields = {"v": 2, "kind": "command", "id": "deep-1", "issuer": "farmer", "site": SITE, "gateway": GATEWAY,
              "issued_at": h.clock.time(), "expires_at": h.clock.time() + 60, "target": "zone-1", "action": "close",
              "signature": "A" * 88}
    payload = orjson.dumps(fields)[:-1] + b',"params":' + b"[" * 300 + b"]" * 300 + b"}"
    assert len(payload) < 1000  # small: only its depth is wrong
    await h.send(payload)
    await h.advance(ANSWER_HOLD)
    (res,) = h.results("deep-1")
    assert res["status"] == "rejected" and res["reason"] == "malformed" and res["problem"] == "too_deep"
    (audit,) = h.audits("deep-1")
    assert audit["outcome"] == "rejected" and audit["problem"] == "too_deep" and audit["issuer"] == "farmer"
    assert h.device_writes() == []


async def test_v2_commands_carry_the_person_into_results_and_audit(h):
    env = h.env("unlock", "door-101", key=CENTRE, issuer="centre", on_behalf_of="vol-wang")
    assert env["v"] == 2 and env["kind"] == "command"
    res = await h.send(env)
    assert res["status"] == "executed" and res["on_behalf_of"] == "vol-wang"
    assert all(r["on_behalf_of"] == "vol-wang" for r in h.results(env["id"]) + h.audits(env["id"]))
    v1 = h.env("close", "zone-1")
    assert "on_behalf_of" not in await h.send(v1)  # a v1 command's records are as they were


async def test_v2_envelope_of_another_kind_on_cmd_is_malformed(h):
    env = envelope.sign(envelope.make(v=2, kind="ack", issuer="farmer", site=SITE, gateway=GATEWAY, target="1-ab",
                                      action="acknowledge", now=h.clock.time()), FARMER)
    await h.send(env)
    await h.advance(ANSWER_HOLD)
    assert h.results(env["id"])[0]["problem"] == "wrong_kind"
