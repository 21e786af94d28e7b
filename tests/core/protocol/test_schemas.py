"""docs/schemas/*.json: generated from the models, checked against them, and used by validate(topic, payload)."""

from __future__ import annotations

import json

import orjson
import pytest

from core.protocol import schemas
from core.protocol.messages import MESSAGES
from core.protocol.topics import CENTRE_TO_GATEWAY, GATEWAY_TO_CENTRE

BASE = "canopy/v1/test-site/gw-1"
HEAD = {"v": 1, "site": "test-site", "gateway": "gw-1", "epoch": "173543a2adb55fe5"}


def batch(lane: str, *records: dict, **head) -> dict:
    return {**HEAD, **head, "lane": lane, "seq": [records[0]["seq"], records[-1]["seq"]], "records": list(records)}


# Real records from the integration tests, as docs/protocol.md v1 shows them.
FALL = {"seq": 4, "ts": 1795352611.616, "type": "fall.detected", "camera": "hall", "alert": "1-1cbc",
        "fall_id": "hall-fall-1795352608549", "detector": "fall", "subject": "hall", "severity": "critical",
        "location": {"site": "test-site", "building": "B2", "unit": "3", "household": "302", "zone": "living-room"},
        "zone": "living-room", "confidence": 0.949, "fell_at": 1795352608.349, "lying_at": 1795352608.549,
        "still_since": 1795352608.616, "stillness_seconds": 3.0, "window_closed_at": 1795352611.616,
        "detected_at": 1795352611.616, "transition_seconds": 0.2, "drop_torso": 1.02, "axis_deg": 80.6, "aspect": 2.48,
        "height_ratio": 0.47, "score": 0.978, "keypoints": {"score": 0.962, "hip": [0.586, 0.816], "shoulder": [0.398, 0.775],
                                                              "axis_deg": 80.6, "box": [0.197, 0.595, 0.859, 0.95]}, "frame_seq": 84}
CAMERA = {"seq": 2, "ts": 1795352603.307, "type": "camera.status", "camera": "broken", "status": "model_error",
          "previous": "starting", "detail": "model file not found", "source": "file:walk_in.avi"}
RAISED = {"seq": 1, "ts": 1795352566.283, "type": "alert.raised", "topic": "alert/property-office", "alert": "1-d70e",
          "rule": "smoke-alarm", "class": "fire", "severity": "critical", "subject": "smoke-shed", "device": "smoke-shed",
          "location": {"site": "sunny-court", "building": "3", "zone": "e-bike-shed"}, "raised_at": 1795352566.283,
          "status": "raised", "step": 0, "group": "property-office", "recipients": ["duty-desk"],
          "next_escalation_at": 1795352567.783, "readings": [{"device": "smoke-shed", "point": "alarm", "value": True, "ts": 1.0}],
          "message": "[CRITICAL] Smoke alarm at building 3, e-bike-shed (smoke-shed)", "lang": "en"}
RESULT = {"seq": 5, "ts": 1795352553.129, "type": "cmd.result", "topic": "cmd/result", "id": "c748f74a64fa6443",
          "status": "executed", "issuer": "farmer", "action": "irrigate", "target": "zone-2",
          "state": {"zone_2": True, "zone_2_pulse": 3}, "duration_s": 3.0, "closes_at": 1795352556.126, "device_timer": True}
COMMAND = {"v": 1, "id": "a6d851b4f2420347", "issuer": "farmer", "site": "test-site", "gateway": "gw-1",
           "issued_at": 1795352553.078, "expires_at": 1795352853.078, "target": "zone-2", "action": "irrigate",
           "params": {"duration_s": 600},
           "signature": "ZYaJlcD973LvGefI25waWhIEyhmza0TRIvjkliAfCCvz/N6YEhfO2wdGAoZqcBqKfyi/59jTyGs/tACTD2x+Dw=="}


def test_the_committed_schemas_are_what_the_models_generate():
    assert schemas.check() == [], "run `python -m core.protocol.schemas --write`"


def test_check_notices_a_schema_that_drifted(tmp_path):
    schemas.write(tmp_path)
    assert schemas.check(tmp_path) == []
    path = tmp_path / "event.json"
    doc = json.loads(path.read_text())
    doc["$defs"]["DeviceStatus"]["properties"].pop("bus")
    path.write_text(json.dumps(doc))
    (tmp_path / "old.json").write_text("{}")
    problems = schemas.check(tmp_path)
    assert any("event.json differs" in p for p in problems) and any("old.json has no model" in p for p in problems)
    assert schemas.main(["--check"]) == 0


def test_every_topic_has_a_schema_and_a_draft_2020_12_dialect():
    assert set(MESSAGES) == set(GATEWAY_TO_CENTRE) | set(CENTRE_TO_GATEWAY)
    for name, schema in schemas.generate().items():
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert (schemas.SCHEMA_DIR / f"{name}.json").exists()


@pytest.mark.parametrize("topic, payload", [
    ("event", batch("event", FALL, CAMERA)),
    ("alert/property-office", batch("alarm", RAISED)),
    ("event", batch("alarm", {**RAISED, "groups": ["property-office"], "topic": None}, v=2)),
    ("cmd/result", batch("event", RESULT)),
    ("cmd", COMMAND),
])
def test_real_v1_messages_validate(topic, payload):
    assert schemas.validate(f"{BASE}/{topic}", orjson.dumps(payload)) == []


def test_problems_are_specific():
    bad_raise = {**RAISED, "severity": "urgent"}
    bad_raise.pop("lang")
    problems = schemas.validate(f"{BASE}/alert/office", batch("alarm", bad_raise))
    assert "records/0/severity (alert.raised): 'urgent' is not one of ['critical', 'warning', 'info']" in problems
    assert "records/0 (alert.raised): 'lang' is a required property" in problems
    assert schemas.validate(f"{BASE}/event", batch("event", {"seq": 1, "ts": 1.0, "type": "mystery"})) == \
        ["records/0: unknown type 'mystery'"]
    assert schemas.validate(f"{BASE}/cmd/result", batch("event", {**RESULT, "reason": "because"}))[0].startswith(
        "records/0/reason (cmd.result)")
    assert schemas.validate(f"{BASE}/event", batch("event", {**FALL, "keypoints": {**FALL["keypoints"], "jpeg": "…"}}))
    assert schemas.validate(f"{BASE}/nope", b"{}")[0].startswith("topic")
    assert schemas.validate(f"{BASE}/cmd", b"[1]") == ["not_object: not a JSON object (a list); a command is one object"]


def test_v2_state_must_say_its_protocol_and_capabilities():
    online = {"v": 2, "site": "s", "gateway": "g", "status": "online", "version": "0.2.0", "boot": 3, "ts": 1.0,
              "devices": {}, "buses": {}, "uplink": {"connects": 1, "connected": True, "published": {}, "last_error": None},
              "outbox": {lane: {"produced": 0, "acknowledged": 0, "pending": 0, "expired": 0, "dropped": {}, "last_seq": 0}
                         for lane in ("alarm", "event", "telemetry")}
              | {"commits": 0, "commit_errors": 0, "epoch": "0" * 16, "degraded": False, "last_error": None}}
    topic = "canopy/v1/s/g/state"
    assert schemas.validate(topic, {**online, "v": 1}) == []
    assert schemas.validate(topic, online) == ["(message) (online): 'protocol' is a required property",
                                               "(message) (online): 'capabilities' is a required property"]
    assert schemas.validate(topic, {**online, "protocol": 2, "capabilities": ["signed_acks", "meta"], "meta": "a" * 16}) == []
    assert schemas.validate(topic, {**online, "protocol": 2, "capabilities": ["teleport"]})
    offline = {"v": 2, "site": "s", "gateway": "g", "status": "offline", "reason": "connection lost", "boot": 2}
    assert schemas.validate(topic, offline) == []
