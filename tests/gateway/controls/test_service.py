"""The control service on a FakeClock: a greenhouse fan switching, confirmed, failing safe, overridden, restarted."""

from __future__ import annotations

import orjson
import pytest

from core.protocol.schemas import validate
from core.protocol.topics import Topics
from gateway.uplink.batch import compose
from tests.gateway.alerts.support import GROUPS, chain
from tests.gateway.controls.support import FAN, T0, Harness, load_site

RULES = {"groups": GROUPS, "classes": {"facility": chain(0, 600)},
         "external": {"control.failed": {"class": "facility"}, "control.sensor_stale": {"class": "facility"}}}


@pytest.fixture
def house(tmp_path):
    return Harness(load_site(tmp_path, [FAN], rules=RULES))


async def test_the_fan_switches_on_above_the_setpoint_and_off_below_it_minus_hysteresis_without_any_alert(house):
    h = house
    await h.advance(2)
    h.house.temperature = 30.6
    await h.advance(2)
    assert h.fan_writes() == [False, True] and h.house.running["fan"]
    h.house.temperature = 28.5  # inside the band
    await h.advance(200)
    assert h.fan_writes() == [False, True]
    h.house.temperature = 27.8
    await h.advance(2)
    assert h.fan_writes() == [False, True, False]
    switched = h.of("control.switched")
    assert [(r["state"], r["reason"], r["mode"]) for r in switched] == [
        ("off", "start", "auto"), ("on", "setpoint", "auto"), ("off", "hysteresis", "auto")]
    on = switched[1]
    assert on["reading"]["value"] == 30.6 and on["setpoint"] == 30.0 and on["previous"] == "off"
    assert on["location"] == {"site": "green-valley", "zone": "greenhouse 1"}
    assert on["texts"] == {"en": "Greenhouse 1 fan switched on: temperature 30.6 degC is above 30 degC",
                           "zh-CN": "1号温室风机已开启：temperature 30.6 degC，高于设定值 30 degC"}
    assert on["message_key"] == "control.switched.setpoint" and on["params"]["value"] == 30.6
    assert {lane for lane, r in h.records if r["type"].startswith("control.")} == {"event"}
    assert not [r for _, r in h.records if r["type"].startswith("alert.")], "normal cycling raises no alert"
    assert h.engine.alerts == {}, "nothing an ack could act on"
    snap = h.service.snapshot()["gh-fan"]
    assert (snap["mode"], snap["output"], snap["faults"], snap["confirming"]) == ("auto", "off", 0, False)


async def test_a_noisy_sensor_never_switches_sooner_than_the_minimum_times(house):
    h = house
    await h.advance(2)
    for i in range(900):  # 15 min of 29.8 / 30.4 / 27.9 noise every second
        h.house.temperature = (29.8, 30.4, 27.9)[i % 3]
        await h.advance(1)
    times = [r["ts"] for r in h.of("control.switched")][1:]
    states = [r["state"] for r in h.of("control.switched")][1:]
    gaps = [(b - a, s) for a, b, s in zip(times, times[1:], states)]
    assert len(times) >= 4
    assert all(g >= (60 if s == "on" else 120) - 1e-6 for g, s in gaps), gaps


async def test_a_stale_sensor_puts_the_fan_in_its_safe_state_and_raises_one_alert(house):
    h = house
    h.house.temperature = 33.0
    await h.advance(5)
    assert h.house.coils["fan"] is True
    h.house.temperature = None  # the air sensor stops answering
    await h.advance(4)  # default: 3 polls of 1 s
    assert h.house.coils["fan"] is False, "safe state: off, at once (min_on does not hold it)"
    raised = h.of("alert.raised", rule="control.sensor_stale")
    assert len(raised) == 1 and raised[0]["subject"] == "gh-fan" and raised[0]["class"] == "facility"
    assert "no reading from its sensor" in raised[0]["texts"]["en"] and raised[0]["texts"]["en"].startswith("[WARNING] Greenhouse 1 fan")
    assert h.of("control.switched")[-1]["reason"] == "sensor_stale" and h.of("control.switched")[-1]["mode"] == "safe"
    await h.advance(30)
    assert len(h.of("alert.raised")) == 1
    h.house.temperature = 33.0
    await h.advance(2)
    assert h.of("alert.resolved", rule="control.sensor_stale")[0]["resolved_by"] == "sensor back"
    assert h.house.coils["fan"] is False, "auto again, but min_off (120 s) since the safe switch holds it"
    await h.advance(100)
    assert h.house.coils["fan"] is True and h.of("control.switched")[-1]["reason"] == "setpoint"


async def test_an_output_whose_feedback_never_agrees_fails_within_confirm_within_raises_an_alert_and_goes_safe(house):
    h = house
    await h.advance(3)
    h.house.stuck.add("fan")  # the contactor does not pull in
    h.house.temperature = 32.0
    await h.advance(1)
    assert h.house.coils["fan"] is True
    switched_at = h.of("control.switched")[-1]["ts"]
    await h.advance(2)
    assert not h.of("alert.raised")
    await h.advance(1)  # confirm_within: 3 polls of the relay (3 s) after the switch
    failed = h.of("alert.raised", rule="control.failed")
    assert len(failed) == 1 and failed[0]["device"] == "gh-relay" and failed[0]["raised_at"] == switched_at + 3
    assert failed[0]["texts"]["en"].startswith("[WARNING] Greenhouse 1 fan did not switch on (feedback: off)")
    assert h.house.coils["fan"] is False and h.service.snapshot()["gh-fan"]["mode"] == "fault"
    assert h.of("control.switched")[-1]["reason"] == "output_fault"
    h.house.stuck.clear()
    await h.advance(300)  # retry_after
    assert h.house.coils["fan"] is True and h.of("control.switched")[-1]["reason"] == "fault_retry"
    await h.advance(2)
    assert h.of("alert.resolved", rule="control.failed")[0]["resolved_by"] == "confirmed"


async def test_an_output_found_off_is_written_again(house):
    h = house
    h.house.temperature = 32.0
    await h.advance(3)
    h.house.write("fan", False)  # somebody flipped the relay by hand
    await h.advance(2)
    assert h.house.coils["fan"] is True
    restore = h.of("control.switched", reason="restore")
    assert len(restore) == 1 and restore[0]["texts"]["en"] == "Greenhouse 1 fan switched on again: its feedback showed False"
    assert not h.of("alert.raised")


async def test_an_override_holds_for_its_time_then_returns_to_auto(house):
    h = house
    h.house.temperature = 34.0
    await h.advance(3)
    until = h.clock.time() + 600
    res = h.service.override("gh-fan", "off", until, by="farmer-li")
    assert res.ok and res.until == until
    await h.advance(1)
    assert h.house.coils["fan"] is False
    await h.advance(590, step=10)
    assert h.house.coils["fan"] is False, "held although it is hot"
    await h.advance(20)
    assert h.house.coils["fan"] is True
    overrides = h.of("control.override")
    assert [(r["state"], r["ended"], r["by"]) for r in overrides] == [("off", None, "farmer-li"), ("off", "expired", "farmer-li")]
    assert overrides[0]["texts"]["en"].startswith("Greenhouse 1 fan: manual off by farmer-li until 2023-11-14 22:23:23 UTC+00:00")
    reasons = [(r["reason"], r["mode"]) for r in h.of("control.switched")]
    assert reasons[-2:] == [("override", "override"), ("override_ended", "auto")]
    assert not h.of("alert.raised")


async def test_override_refusals_and_cancel(house):
    h = house
    await h.advance(2)
    now = h.clock.time()
    assert h.service.override("gh-pump", "on", now + 60).reason == "unknown_control"
    assert h.service.override("gh-fan", "half", now + 60).reason == "bad_state"
    assert h.service.override("gh-fan", "on", now - 1).reason == "bad_until"
    assert h.service.override("gh-fan", "on", now + 5 * 3600).reason == "bad_until"
    assert h.service.counters["overrides_refused"] == 4 and h.of("control.override") == []
    assert h.service.override("gh-fan", True, now + 3600, by="li").ok
    await h.advance(1)
    assert h.house.coils["fan"] is True
    assert h.service.override("gh-fan", "auto", by="li").ok
    await h.advance(1)
    assert h.house.coils["fan"] is True, "auto again, held by min_on (60 s) since the override switched it on"
    await h.advance(60)
    assert h.house.coils["fan"] is False and h.of("control.switched")[-1]["reason"] == "hysteresis"
    assert [r["ended"] for r in h.of("control.override")] == [None, "cancelled"]


async def test_an_override_survives_a_restart(tmp_path):
    cfg = load_site(tmp_path, [FAN], rules=RULES)
    h = Harness(cfg, state_dir=str(tmp_path))
    h.house.temperature = 34.0
    await h.advance(2)
    assert h.service.override("gh-fan", "off", h.clock.time() + 3600, by="li").ok
    await h.advance(2)
    h2 = Harness(cfg, state_dir=str(tmp_path), clock=h.clock)
    h2.house.temperature = 34.0
    await h2.advance(5)
    assert h2.house.coils["fan"] is False and h2.service.snapshot()["gh-fan"]["override"]["by"] == "li"


async def test_failed_writes_are_retried_and_counted(tmp_path):
    h = Harness(load_site(tmp_path, [{**FAN, "confirm_within": 10}]), fail_writes=3)
    h.house.temperature = 33.0
    await h.advance(9)
    assert h.house.coils["fan"] is True  # after 1, 2 and 4 s
    snap = h.service.snapshot()["gh-fan"]
    assert (snap["write_errors"], snap["faults"], snap["mode"]) == (3, 0, "auto")


async def test_stop_writes_the_safe_state(house):
    h = house
    h.house.temperature = 33.0
    await h.advance(3)
    await h.service.stop()
    assert h.house.coils["fan"] is False


async def test_control_records_validate_against_the_schema(house):
    h = house
    h.house.temperature = 33.0
    await h.advance(3)
    assert h.service.override("gh-fan", "off", h.clock.time() + 60, by="li").ok
    await h.advance(70)
    topics = Topics("green-valley", "gh-gw")
    for lane, r in h.records:
        assert validate(f"{topics.base}/event", compose(topics, "51fb60d06184c4c9", lane, [(1, orjson.dumps(r), None)])) == []
    assert {r["type"] for _, r in h.records} >= {"control.switched", "control.override"}
    assert h.records[0][1]["ts"] >= T0


async def test_the_loop_runs_while_records_cannot_be_committed_and_they_go_out_later_in_order(house):
    h = house
    emit = h.service.emit
    refused = []

    async def closed(lane, body, topic=None):  # the outbox refuses (a full disk); the link is no part of it at all
        refused.append(body)
        raise OSError("disk full")

    h.service.emit = closed
    h.house.temperature = 33.0
    await h.advance(3)
    h.house.temperature = 25.0
    await h.advance(125)
    assert h.fan_writes() == [True, False], "switching never waits for the outbox"
    assert h.of("control.switched") == [] and refused and h.service.counters["emit_errors"] >= 1
    h.service.emit = emit
    await h.advance(2)
    assert [(r["state"], r["reason"]) for r in h.of("control.switched")] == [("on", "start"), ("off", "hysteresis")]
