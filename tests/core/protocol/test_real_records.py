"""Records built by the gateway's own code validate against docs/schemas/ (a test may import the gateway; core may not).

Alerts and commands run in their harnesses on a FakeClock; readings, device status,
store.corrupt and the state come from the runtime, the outbox and the uplink's own
composition functions.  Every record is wrapped the way the uplink wraps it and checked
on each topic it travels on.
"""

from __future__ import annotations

import asyncio

import orjson
import pytest

from core.protocol.schemas import validate
from core.protocol.topics import Topics
from core.records import Reading, reading_body
from gateway.runtime import Gateway
from gateway.uplink.batch import compose
from gateway.uplink.state import state_payload
from tests.gateway.alerts.support import GROUPS, ack, chain, load_site
from tests.gateway.alerts.support import Harness as AlertHarness
from tests.gateway.commands.support import DUTY, STRANGER
from tests.gateway.commands.support import Harness as CommandHarness

EPOCH = "51fb60d06184c4c9"
SMOKE = {"id": "smoke-alarm", "type": "state", "devices": ["smoke-shed", "smoke-hall"], "point": "alarm", "to": True,
         "severity": "critical", "class": "fire"}


def problems(topics: Topics, lane: str, record: dict, leaf: str) -> list[str]:
    body = orjson.dumps(record)
    payload = compose(topics, EPOCH, lane, [(7, body, None)])
    return validate(f"{topics.base}/{leaf}", payload)


def leaves(record: dict) -> list[str]:
    """Where a record travels: cmd.result on …/cmd/result; lifecycle copies on …/event and the group topics."""
    if record["type"] == "cmd.result":
        return ["cmd/result"]
    if record["type"] in ("alert.raised", "alert.escalated", "alert.acknowledged", "alert.resolved", "alert.updated"):
        return ["event", "alert/volunteers"]
    return ["event"]


def check_all(topics: Topics, records: list[tuple[str, dict]]) -> None:
    failures = {}
    for lane, record in records:
        for leaf in leaves(record):
            if found := problems(topics, lane, record, leaf):
                failures[f"{record['type']} on {leaf}"] = found
    assert failures == {}


async def test_alert_lifecycle_records(tmp_path):
    h = AlertHarness(load_site(tmp_path, {"groups": GROUPS, "classes": {"fire": chain(0, 120, 300)}, "rules": [SMOKE]}))
    h.feed("smoke-shed", "alarm", False)
    h.feed("smoke-shed", "alarm", True)
    await h.settle()
    await h.advance(121, step=1)
    alert_id = h.of("alert.raised")[0]["alert"]
    for target, by, kw in ((alert_id, "vol-wang", {"note": "on my way"}), ("99-zzzz", "li", {}),
                           (alert_id, "vol-wang", {"resolve": True})):
        ack(h, target, by=by, **kw)  # signed v2 acks: the third is refused (unknown alert) and answered
        await h.settle()
    types = {r["type"] for _, r in h.records}
    assert types >= {"alert.raised", "alert.escalated", "alert.acknowledged", "alert.ack_rejected", "alert.resolved"}
    check_all(Topics("sunny-court", "gw-3"), h.records)


@pytest.fixture
async def cmds(tmp_path):
    h = CommandHarness(tmp_path)
    await h.start()
    yield h
    await h.stop()


async def test_command_results_audit_and_actuator_events(cmds):
    h = cmds
    await h.send(h.env("irrigate", "zone-2", {"duration_s": 60}))
    await h.advance(61)
    await h.send(h.env("irrigate", "zone-1", {"duration_s": 60}))
    await h.send(h.env("close", "zone-1"))
    await h.send(h.env("irrigate", "zone-3", {"duration_s": 99999}))  # duration_exceeds_max
    await h.send(h.env("irrigate", "zone-2", {"duration_s": 60}, key=STRANGER))  # bad_signature
    await h.send(b'{"id": "x", "params": ' + b"[" * 300 + b"]" * 300 + b"}")  # malformed (too deep)
    await h.send(h.env("unlock", "door-101", key=DUTY, issuer="duty"))
    await h.advance(11, step=1)
    types = {r["type"] for _, r in h.records}
    assert types >= {"cmd.result", "cmd.audit", "valve.opened", "valve.closed", "lock.unlocked"}
    check_all(Topics("green-valley", "gw-1"), h.records)


def test_telemetry_records():
    topics = Topics("green-valley", "farm-gw-01")
    rows = [(n, reading_body(r), None) for n, r in enumerate([
        Reading(1795348920.681, "soil-1", "moisture", 29.8, "%"), Reading(1795348920.681, "weather", "rain_detected", False),
        Reading(1795348920.681, "weather", "model", "WS-100"), Reading(1795348920.681, "soil-1", "ec", 887, "uS/cm"),
        Reading(1795348920.681, "soil-1", "temperature", float("nan"), "degC")], start=1)]
    assert validate(topics.telemetry, compose(topics, EPOCH, "telemetry", rows)) == []


async def test_device_status_store_corrupt_and_the_state(tmp_path):
    cfg = load_site(tmp_path, {"groups": GROUPS, "classes": {"fire": chain(0, 120)}, "rules": [SMOKE]})
    (tmp_path / "outbox.sqlite").write_bytes(b"this is not a database" * 100)
    gw = Gateway(cfg)
    await gw.outbox.open()
    try:
        gw.health.register("smoke-shed", "block-3")
        gw.health.failed("smoke-shed", "timeout", "no reply from unit 1 within 0.3s")
        gw.health.ok("smoke-shed", gw.clock.time(), 1.5)
        await asyncio.sleep(0.05)
        await gw.outbox.flush()
        rows = {lane: await gw.outbox.fetch(lane, 0, 100) for lane in ("alarm", "event")}
        types = [orjson.loads(body)["type"] for lane_rows in rows.values() for _, body, _ in lane_rows]
        assert types == ["store.corrupt", "device.status", "device.status"]
        for lane, lane_rows in rows.items():
            assert validate(gw.topics.event, compose(gw.topics, gw.outbox.epoch, lane, lane_rows)) == []
        online = state_payload(gw.topics, "online", boot=gw.outbox.boot, health=gw.state)
        assert validate(gw.topics.state, online) == []
        will = state_payload(gw.topics, "offline", boot=gw.outbox.boot, health=gw.state, reason="connection lost")
        assert validate(gw.topics.state, will) == []
    finally:
        await gw.outbox.close()
