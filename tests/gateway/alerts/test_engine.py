"""The engine on a FakeClock: lifecycle, escalation, acks, re-raise policies, outputs, other services.

Restarts and the state file are in test_persistence.py; records on their way
to the outbox in test_emission.py.
"""

from __future__ import annotations

import asyncio

import orjson
import pytest

from gateway.alerts.engine import AlertEngine
from tests.gateway.alerts.support import SMOKE, T0, Harness, ack, chain, flap, load_site, rules, signed_ack, smoke_on

# --------------------------------------------------------------------------- raising


async def test_smoke_raises_one_critical_alarm_with_context_and_sounds_the_sounder(tmp_path):
    h = Harness(load_site(tmp_path, rules(SMOKE)))
    rec = await smoke_on(h)
    lane = [lane for lane, r in h.records if r["type"] == "alert.raised"]
    assert lane == ["alarm"]
    assert rec["severity"] == "critical" and rec["rule"] == "smoke-alarm" and rec["class"] == "fire"
    assert rec["device"] == "smoke-shed"
    assert rec["location"] == {"site": "sunny-court", "building": "3", "zone": "e-bike-shed"}
    assert rec["readings"][0] | {"ts": 0} == {"device": "smoke-shed", "point": "alarm", "value": True, "ts": 0}
    assert rec["group"] == "property-office" and rec["recipients"] == ["duty-desk"] and rec["step"] == 0
    assert rec["next_escalation_at"] == rec["raised_at"] + 120
    assert rec["message"].startswith("[CRITICAL] smoke-shed alarm is now on at building 3, e-bike-shed")
    assert h.writes == [("sounder", "sounder", True)]
    # the condition persists for many polls: still one alert
    for _ in range(20):
        h.feed("smoke-shed", "alarm", True)
        await h.advance(1)
    assert len(h.of("alert.raised")) == 1
    assert h.engine.snapshot()["open"][0]["status"] == "raised"


async def test_chinese_site_gets_chinese_messages(tmp_path):
    h = Harness(load_site(tmp_path, rules(SMOKE), language="zh"))
    rec = await smoke_on(h, "smoke-hall")
    assert rec["message"] == "【紧急】3栋 hall smoke-hall alarm 变为 是"
    assert rec["lang"] == "zh"


# --------------------------------------------------------------------------- escalation and acks


async def test_escalation_to_second_and_third_group_at_their_delays(tmp_path):
    h = Harness(load_site(tmp_path, rules(SMOKE)))
    raised = await smoke_on(h)
    await h.advance(119, step=1)
    assert h.of("alert.escalated") == []
    await h.advance(1)
    step1 = h.of("alert.escalated")
    assert [(r["step"], r["group"], r["recipients"]) for r in step1] == [(1, "volunteers", ["vol-wang", "vol-li"])]
    assert step1[0]["ts"] == raised["raised_at"] + 120 and step1[0]["alert"] == raised["alert"]
    assert h.lanes("alert.escalated") == {"alarm"}
    await h.advance(180, step=10)
    assert [(r["step"], r["group"], r["ts"] - raised["raised_at"]) for r in h.of("alert.escalated")] == \
        [(1, "volunteers", 120), (2, "grid-leader", 300)]
    assert h.of("alert.escalated")[-1]["next_escalation_at"] is None
    await h.advance(3600, step=60)
    assert len(h.of("alert.escalated")) == 2


async def test_ack_stops_escalation_and_releases_the_sounder(tmp_path):
    h = Harness(load_site(tmp_path, rules(SMOKE)))
    raised = await smoke_on(h)
    await h.advance(130, step=10)
    ack(h, raised["alert"], by="wang", note="on my way")
    await h.settle()
    acked = h.of("alert.acknowledged")
    assert len(acked) == 1 and acked[0]["by"] == "wang" and acked[0]["note"] == "on my way"
    assert h.lanes("alert.acknowledged") == {"event"}
    assert h.writes == [("sounder", "sounder", True), ("sounder", "sounder", False)]
    await h.advance(600, step=30)
    assert [r["step"] for r in h.of("alert.escalated")] == [1]  # no grid leader
    assert h.engine.snapshot()["open"][0]["status"] == "acknowledged"
    # the smoke clears: resolved by the condition
    h.feed("smoke-shed", "alarm", False)
    await h.settle()
    res = h.of("alert.resolved")
    assert len(res) == 1 and res[0]["resolved_by"] == "condition" and res[0]["acked_by"] == "wang"
    assert res[0]["message"].startswith("Resolved: ")
    assert h.engine.snapshot()["open"] == []


async def test_ack_with_resolve_closes_but_the_episode_raises_nothing_new(tmp_path):
    h = Harness(load_site(tmp_path, rules(SMOKE)))
    raised = await smoke_on(h)
    ack(h, raised["alert"], by="li", resolve=True)
    await h.settle()
    assert [r["type"] for _, r in h.records] == ["alert.raised", "alert.acknowledged", "alert.resolved"]
    assert h.of("alert.resolved")[0]["resolved_by"] == "ack:li"
    for _ in range(5):
        h.feed("smoke-shed", "alarm", True)  # still smoking: the same episode
        await h.advance(1)
    assert len(h.of("alert.raised")) == 1
    h.feed("smoke-shed", "alarm", False)
    h.feed("smoke-shed", "alarm", True)  # a new episode
    await h.settle()
    assert len(h.of("alert.raised")) == 2


async def test_resolve_ack_keeps_the_alert_until_closed_by_an_ack(tmp_path):
    h = Harness(load_site(tmp_path, rules({**SMOKE, "resolve": "ack"})))
    raised = await smoke_on(h)
    h.feed("smoke-shed", "alarm", False)
    await h.settle()
    assert h.of("alert.resolved") == [] and h.engine.snapshot()["open"][0]["condition"] is False
    ack(h, raised["alert"])
    await h.settle()
    assert h.of("alert.resolved") == []
    ack(h, raised["alert"], resolve=True)
    await h.settle()
    assert len(h.of("alert.resolved")) == 1


# --------------------------------------------------------------------------- re-raise policies


async def test_reraise_each_episode(tmp_path):
    h = Harness(load_site(tmp_path, rules({**SMOKE, "outputs": []})))
    h.feed("smoke-shed", "alarm", False)
    await flap(h, 3, 10)
    assert len(h.of("alert.raised")) == 3 and len(h.of("alert.resolved")) == 3


async def test_reraise_once_until_acknowledged(tmp_path):
    h = Harness(load_site(tmp_path, rules({**SMOKE, "outputs": [], "reraise": "once"})))
    h.feed("smoke-shed", "alarm", False)
    await flap(h, 3, 10)
    raised = h.of("alert.raised")
    assert len(raised) == 1
    assert h.engine.counters["folded"] == 2
    ack(h, raised[0]["alert"])
    await h.settle()
    await flap(h, 2, 10)
    assert len(h.of("alert.raised")) == 2


async def test_reraise_after_dead_time(tmp_path):
    h = Harness(load_site(tmp_path, rules({**SMOKE, "outputs": [], "reraise": "dead_time", "dead_time": "5m"})))
    h.feed("smoke-shed", "alarm", False)
    await flap(h, 4, 60)  # at 0, 60, 120, 180 s: one alert
    assert len(h.of("alert.raised")) == 1
    await h.advance(120)  # now 360 s after the first
    await flap(h, 1, 10)
    assert len(h.of("alert.raised")) == 2


# --------------------------------------------------------------------------- bad input, outputs, timers


@pytest.mark.parametrize("payload,counter", [
    (b"\xff\xfe not json", "malformed"),
    (b"[1, 2]", "malformed"),
    (b'{"alert": "1-abcd"}', "unsigned"),
    (b'{"alert": 5, "by": "li"}', "unsigned_ack"),
    (b'{"alert": "1-abcd", "by": "li", "resolve": "yes"}', "unsigned_ack"),
    (b'{"alert": "1-abcd", "by": "li", "v": 2}', "unsigned"),
    (orjson.dumps({"alert": "1-abcd", "by": "li", "note": "x" * 600}), "unsigned_ack"),
    (signed_ack("999-none", by="li", now=T0), "unknown alert"),
    (b"", "malformed"),
])
async def test_bad_acks_are_counted_never_raised(tmp_path, payload, counter):
    h = Harness(load_site(tmp_path, rules(SMOKE)))
    await smoke_on(h)
    h.engine.on_ack("t", payload)
    await h.settle()
    assert h.engine.snapshot()["ack_rejections"] == {counter: 1} and h.engine.counters["ack_rejected"] == 1
    assert len(h.engine.open_alerts()) == 1 and h.engine.open_alerts()[0].acked_at is None
    if counter == "unknown alert":
        assert [(r["alert"], r["reason"]) for r in h.of("alert.ack_rejected")] == [("999-none", "unknown alert")]


async def test_ack_rejections_are_rate_limited_and_duplicates_answered(tmp_path):
    h = Harness(load_site(tmp_path, rules(SMOKE)))
    raised = await smoke_on(h)
    for i in range(50):  # unsigned junk: counted, answered at most 10 times a minute
        h.engine.on_ack("t", orjson.dumps({"alert": f"no-{i}", "by": "x"}))
    await h.settle()
    assert h.engine.snapshot()["ack_rejections"]["unsigned_ack"] == 50 and len(h.of("alert.ack_rejected")) == 10
    await h.advance(61)
    ack(h, raised["alert"])
    ack(h, raised["alert"])
    await h.settle()
    assert h.engine.counters["ack_ok"] == 1 and h.engine.snapshot()["ack_rejections"]["already acknowledged"] == 1
    assert h.of("alert.ack_rejected", alert=raised["alert"])[0]["reason"] == "already acknowledged"


async def test_failing_output_is_retried_with_backoff_and_counted(tmp_path):
    h = Harness(load_site(tmp_path, rules(SMOKE)), fail_writes=3)
    await smoke_on(h)
    assert h.records and h.writes == []  # the alarm went out although the relay failed
    assert h.engine.outputs.write_errors == 1
    await h.advance(1)  # retry 1 after 1 s
    await h.advance(2)  # retry 2 after 2 s
    assert h.engine.outputs.write_errors == 3 and h.writes == []
    await h.advance(4)
    assert h.writes == [("sounder", "sounder", True)]
    assert h.engine.snapshot()["outputs"]["sounder/sounder"]["written"] is True


async def test_no_output_writer_is_not_a_crash(tmp_path):
    cfg = load_site(tmp_path, rules(SMOKE))
    out = []

    async def emit(lane, body, topic=None):
        out.append(body)

    from core.clock import FakeClock
    from core.records import Reading

    e = AlertEngine(cfg, FakeClock(), emit, None, None)
    e.observe([Reading(e.clock.time(), "smoke-shed", "alarm", True)])
    await e.drain()
    await asyncio.sleep(0)
    assert len(out) == 1


async def test_timers_run_in_the_engine_task(tmp_path):
    """run(): escalation happens on time with no reading arriving."""
    h = Harness(load_site(tmp_path, rules(SMOKE, classes={"fire": chain(0, 5, 9)})))
    task = asyncio.create_task(h.engine.run())
    try:
        await h.clock.advance(0.1)
        h.feed("smoke-shed", "alarm", False)
        h.feed("smoke-shed", "alarm", True)
        await h.clock.advance(0.1)
        assert len(h.of("alert.raised")) == 1
        await h.clock.advance(4.7)
        assert h.of("alert.escalated") == []
        await h.clock.advance(0.2)
        assert [r["step"] for r in h.of("alert.escalated")] == [1]
        await h.clock.advance(4)
        assert [r["step"] for r in h.of("alert.escalated")] == [1, 2]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


# --------------------------------------------------------------------------- other services


async def test_other_services_raise_alerts_with_the_same_lifecycle(tmp_path):
    cfg = load_site(tmp_path, rules(classes={"fire": chain(0, 120, 300), "welfare": chain(0, 60)},
                                    external={"camera.fall": {"class": "welfare", "severity": "critical",
                                                              "outputs": [{"device": "sounder", "point": "beacon"}]}}))
    h = Harness(cfg, state_dir=str(tmp_path))
    args = dict(rule="camera.fall", subject="cam-hall", severity="warning", device="cam-hall",
                location={"site": "x", "building": "3", "zone": "hall", "grid": None},
                facts={"confidence": 0.91, "fall_id": "f-1", "keypoints": [1, 2]}, readings=[], ts=h.clock.time())
    aid = h.engine.raise_alert(**args)
    await h.settle()
    rec = h.of("alert.raised")[0]
    assert rec["alert"] == aid and rec["severity"] == "critical" and rec["class"] == "welfare"
    assert rec["topic"] == "event alert/property-office" and rec["device"] == "cam-hall"
    assert rec["location"] == {"site": "sunny-court", "building": "3", "zone": "hall"}
    assert rec["message"] == "[CRITICAL] Possible fall (cam-hall): please check at once at building 3, hall"
    assert h.writes == [("sounder", "beacon", True)]
    assert h.engine.raise_alert(**args) == aid  # the same fall again while open: folded
    await h.advance(60)
    assert [r["group"] for r in h.of("alert.escalated")] == ["volunteers"]
    # a restart keeps it (it is not a rule of the config that went away)
    h2 = Harness(cfg, state_dir=str(tmp_path), clock=h.clock)
    await h2.settle()
    assert h2.of("alert.resolved") == [] and h2.engine.open_alerts()[0].id == aid
    assert h2.engine.resolve_alert("camera.fall", "cam-hall")
    await h2.settle()
    assert h2.of("alert.resolved")[0]["message"].startswith("Resolved: Possible fall")
    assert h2.writes[-1] == ("sounder", "beacon", False)
    assert not h2.engine.resolve_alert("camera.fall", "cam-hall")
    assert h2.engine.raise_alert(**args) != aid  # a new fall: a new alert


