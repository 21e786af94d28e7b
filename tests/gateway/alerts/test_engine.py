"""The engine on a FakeClock: lifecycle, escalation, acks, outputs, persistence across restarts."""

from __future__ import annotations

import asyncio
import json

import orjson
import pytest

from gateway.alerts import state as statefile
from gateway.alerts.engine import AlertEngine
from tests.gateway.alerts.support import GROUPS, Harness, chain, load_site

SMOKE = {"id": "smoke-alarm", "type": "state", "devices": ["smoke-shed", "smoke-hall"], "point": "alarm", "to": True,
         "severity": "critical", "class": "fire", "outputs": [{"device": "sounder", "point": "sounder"}]}


def rules(*rule_list, classes=None, **extra) -> dict:
    return {"groups": GROUPS, "classes": classes or {"fire": chain(0, 120, 300)}, "rules": list(rule_list), **extra}


def ack(h: Harness, alert_id: str, by: str = "li", **kw) -> None:
    h.engine.on_ack("canopy/v1/sunny-court/gw-3/alert/ack", orjson.dumps({"alert": alert_id, "by": by, **kw}))


async def smoke_on(h: Harness, device: str = "smoke-shed") -> dict | None:
    h.feed(device, "alarm", False)
    h.feed(device, "alarm", True)
    await h.settle()
    raised = h.of("alert.raised", device=device)
    return raised[-1] if raised else None


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


async def flap(h: Harness, times: int, gap: float) -> None:
    for _ in range(times):
        h.feed("smoke-shed", "alarm", True)
        await h.settle()
        h.feed("smoke-shed", "alarm", False)
        await h.advance(gap)


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


# --------------------------------------------------------------------------- restarts


async def test_restart_mid_episode_no_duplicate_and_escalation_resumes(tmp_path):
    cfg = load_site(tmp_path, rules(SMOKE))
    h = Harness(cfg, state_dir=str(tmp_path))
    raised = await smoke_on(h)
    await h.advance(150, step=10)
    assert [r["step"] for r in h.of("alert.escalated")] == [1]
    h.engine.save_now()  # what run() does when cancelled
    # the gateway restarts 30 s later
    await h.clock.advance(30)
    h2 = Harness(cfg, state_dir=str(tmp_path), clock=h.clock)
    await h2.settle()
    assert h2.writes == [("sounder", "sounder", True)]  # the sounder is driven again
    for _ in range(10):
        h2.feed("smoke-shed", "alarm", True)
        await h2.advance(1)
    assert h2.of("alert.raised") == [], "raised twice after a restart"
    await h2.advance(300 - 190 - 1, step=1)
    assert h2.of("alert.escalated") == []
    await h2.advance(1)
    assert [(r["step"], r["ts"] - raised["raised_at"]) for r in h2.of("alert.escalated")] == [(2, 300)]
    assert h2.engine.snapshot()["open"][0]["id"] == raised["alert"]
    ack(h2, raised["alert"])
    await h2.settle()
    assert h2.writes[-1] == ("sounder", "sounder", False)


async def test_restart_after_ack_resolve_while_the_condition_holds(tmp_path):
    cfg = load_site(tmp_path, rules(SMOKE))
    h = Harness(cfg, state_dir=str(tmp_path))
    raised = await smoke_on(h)
    ack(h, raised["alert"], resolve=True)
    await h.settle()
    h2 = Harness(cfg, state_dir=str(tmp_path), clock=h.clock)
    h2.feed("smoke-shed", "alarm", True)
    await h2.settle()
    assert h2.records == [] and h2.writes == []  # no new alert, and the released sounder stays off


async def test_a_record_not_committed_before_a_crash_is_sent_after_the_restart(tmp_path):
    cfg = load_site(tmp_path, rules(SMOKE))
    h = Harness(cfg, state_dir=str(tmp_path), fail_emits=100)  # the outbox refuses everything
    await smoke_on(h)
    assert h.records == [] and h.engine.counters["emit_errors"] >= 1
    saved = json.loads(open(statefile.file_in(str(tmp_path), "sunny-court", "gw-3")).read())
    assert saved["alerts"][0]["pending"] == ["raised"]
    h2 = Harness(cfg, state_dir=str(tmp_path), clock=h.clock)
    await h2.settle()
    assert [r["type"] for _, r in h2.records] == ["alert.raised"]
    assert h2.records[0][1]["alert"] == saved["alerts"][0]["id"]


async def test_emit_failure_is_retried(tmp_path):
    h = Harness(load_site(tmp_path, rules(SMOKE)), fail_emits=1)
    await smoke_on(h)
    assert h.records == [] and h.engine.counters["emit_errors"] == 1
    await h.advance(1)
    assert [r["type"] for _, r in h.records] == ["alert.raised"]


async def test_rule_removed_from_the_config_resolves_its_open_alert(tmp_path):
    h = Harness(load_site(tmp_path, rules(SMOKE)), state_dir=str(tmp_path))
    raised = await smoke_on(h)
    other = {"id": "gas", "type": "threshold", "device": "smoke-hall", "point": "gas_lel", "above": 10}
    h2 = Harness(load_site(tmp_path, rules(other), name="site2.yaml"), state_dir=str(tmp_path), clock=h.clock)
    await h2.settle()
    res = h2.of("alert.resolved")
    assert [(r["alert"], r["resolved_by"]) for r in res] == [(raised["alert"], "rule removed")]
    assert h2.writes == [("sounder", "sounder", False)]


async def test_state_file_stays_small(tmp_path):
    cfg = load_site(tmp_path, rules({**SMOKE, "outputs": []}, history=3))
    h = Harness(cfg, state_dir=str(tmp_path))
    h.feed("smoke-shed", "alarm", False)
    await flap(h, 10, 5)
    data = json.loads(open(statefile.file_in(str(tmp_path), "sunny-court", "gw-3")).read())
    assert len(data["alerts"]) == 3 and data["counter"] == 10


# --------------------------------------------------------------------------- bad input, outputs, delivery


@pytest.mark.parametrize("payload,counter", [
    (b"\xff\xfe not json", "ack_malformed"),
    (b"[1, 2]", "ack_malformed"),
    (b'{"alert": "1-abcd"}', "ack_malformed"),
    (b'{"alert": 5, "by": "li"}', "ack_malformed"),
    (b'{"alert": "1-abcd", "by": "li", "resolve": "yes"}', "ack_malformed"),
    (b'{"alert": "1-abcd", "by": "li", "v": 2}', "ack_malformed"),
    (orjson.dumps({"alert": "1-abcd", "by": "li", "note": "x" * 600}), "ack_malformed"),
    (b'{"alert": "999-none", "by": "li"}', "ack_unknown"),
    (b"", "ack_malformed"),
])
async def test_bad_acks_are_counted_never_raised(tmp_path, payload, counter):
    h = Harness(load_site(tmp_path, rules(SMOKE)))
    await smoke_on(h)
    h.engine.on_ack("t", payload)
    await h.settle()
    assert h.engine.counters[counter] == 1
    assert len(h.engine.open_alerts()) == 1 and h.engine.open_alerts()[0].acked_at is None
    if counter == "ack_unknown":
        assert [(r["alert"], r["reason"]) for r in h.of("alert.ack_rejected")] == [("999-none", "unknown alert")]


async def test_ack_rejections_are_rate_limited_and_duplicates_answered(tmp_path):
    h = Harness(load_site(tmp_path, rules(SMOKE)))
    raised = await smoke_on(h)
    for i in range(50):
        h.engine.on_ack("t", orjson.dumps({"alert": f"no-{i}", "by": "x"}))
    await h.settle()
    assert h.engine.counters["ack_unknown"] == 50 and len(h.of("alert.ack_rejected")) == 10
    await h.advance(61)
    ack(h, raised["alert"])
    ack(h, raised["alert"])
    await h.settle()
    assert h.engine.counters["ack_ok"] == 1 and h.engine.counters["ack_duplicate"] == 1
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


async def test_delivered_once_the_broker_acknowledged_the_record(tmp_path):
    h = Harness(load_site(tmp_path, rules(SMOKE)))
    await smoke_on(h)
    seq = len(h.records)  # the harness's emit returns the record's seq
    h.engine.on_delivered("event", seq, seq)
    assert h.engine.snapshot()["open"][0]["status"] == "raised"
    h.engine.on_delivered("alarm", seq, seq)
    assert h.engine.snapshot()["open"][0]["status"] == "delivered"


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


async def test_inactivity_clock_survives_a_restart(tmp_path):
    welfare = {"id": "welfare", "type": "inactivity", "sources": [{"device": "door-101", "point": "door_open"}],
               "for": "1h", "severity": "warning"}
    cfg = load_site(tmp_path, rules(welfare, timezone="UTC"))
    h = Harness(cfg, state_dir=str(tmp_path))
    h.feed("door-101", "door_open", False)
    await h.advance(600)
    h.feed("door-101", "door_open", True)  # activity at +600 s
    h.feed("door-101", "door_open", False)
    await h.settle()
    h.engine.save_now()
    await h.clock.advance(1800)  # down for half an hour
    h2 = Harness(cfg, state_dir=str(tmp_path), clock=h.clock)
    await h2.advance(1799, step=60)
    assert h2.of("alert.raised") == []
    await h2.advance(1)
    rec = h2.of("alert.raised")
    assert len(rec) == 1 and rec[0]["subject"] == "101"
    assert rec[0]["location"] == {"site": "sunny-court", "building": "3", "unit": "1", "household": "101", "grid": "G7"}
    assert rec[0]["message"] == "[WARNING] Welfare check: no activity for 1 h; please call or visit at building 3, unit 1, household 101, grid G7"


# --------------------------------------------------------------------------- routing, other services


async def test_alert_records_name_their_group_topic_lifecycle_notes_do_not(tmp_path):
    h = Harness(load_site(tmp_path, rules(SMOKE, {**SMOKE, "id": "no-class", "class": None, "outputs": []})))
    await smoke_on(h)
    await h.advance(120)
    assert {r["topic"] for r in h.of("alert.raised", rule="smoke-alarm")} == {"alert/property-office"}
    assert {r["topic"] for r in h.of("alert.escalated")} == {"alert/volunteers"}
    assert "topic" not in h.of("alert.raised", rule="no-class")[0]  # no class, no group: …/event
    ack(h, h.of("alert.raised", rule="smoke-alarm")[0]["alert"])
    await h.settle()
    assert "topic" not in h.of("alert.acknowledged")[0]


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
    assert rec["topic"] == "alert/property-office" and rec["device"] == "cam-hall"
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


async def test_a_stuck_event_lane_does_not_hold_back_alarms_or_outputs(tmp_path):
    cfg = load_site(tmp_path, rules(SMOKE))
    h = Harness(cfg)
    committed = []

    async def emit(lane, body, topic=None):
        if lane == "event":
            raise RuntimeError("event queue full: the store is not committing")
        committed.append(orjson.loads(body))

    h.engine.emit = emit
    raised = await smoke_on(h)
    assert raised is None and [r["type"] for r in committed] == ["alert.raised"]
    ack(h, committed[0]["alert"], resolve=True)  # acknowledged + resolved: event lane, stuck
    h.feed("smoke-hall", "alarm", False)
    h.feed("smoke-hall", "alarm", True)
    await h.settle()
    assert [r["type"] for r in committed] == ["alert.raised", "alert.raised"]
    assert h.engine.counters["emit_errors"] >= 1


async def test_outputs_are_driven_while_a_commit_hangs(tmp_path):
    gas = {"id": "gas", "type": "threshold", "device": "smoke-hall", "point": "gas_lel", "above": 10}
    h = Harness(load_site(tmp_path, rules(SMOKE, gas)))
    gate = asyncio.Event()
    emitted = []

    async def emit(lane, body, topic=None):
        emitted.append(orjson.loads(body)["rule"])
        await gate.wait()  # the outbox is stuck (disk full, slow SD card)

    h.engine.emit = emit
    h.feed("smoke-hall", "gas_lel", 30.0)
    drain = asyncio.create_task(h.engine.drain())
    for _ in range(5):
        await asyncio.sleep(0)
    assert emitted == ["gas"]  # the drain is stuck in this commit
    h.feed("smoke-shed", "alarm", False)
    h.feed("smoke-shed", "alarm", True)
    for _ in range(5):
        await asyncio.sleep(0)
    assert h.writes == [("sounder", "sounder", True)]
    gate.set()
    await drain
    await h.engine.drain()
    assert emitted == ["gas", "smoke-alarm"]


async def test_an_unwritable_state_file_never_holds_back_an_alarm(tmp_path):
    blocked = tmp_path / "ro"
    blocked.mkdir()
    h = Harness(load_site(tmp_path, rules(SMOKE)), state_dir=str(blocked / "missing-folder"))
    raised = await smoke_on(h)
    assert raised is not None and h.writes == [("sounder", "sounder", True)]
    assert h.engine.counters["state_errors"] >= 1
    n = h.engine.counters["state_errors"]
    for _ in range(10):
        h.feed("smoke-shed", "alarm", True)
        await h.settle()
    assert h.engine.counters["state_errors"] == n, "retried with backoff, not on every poll"
    await h.advance(2)
    assert h.engine.counters["state_errors"] > n
