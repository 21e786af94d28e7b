"""Acting through the API: an ack or a command is recorded for the logged-in person (202, in words), refused
with a 403 (and audited) outside their roles, and followed with GET /api/intents."""

from __future__ import annotations

import pytest

from tests.centre.web.support import CGW, COMMUNITY, FARM, FGW, audit_rows, cheap_argon2, make_people, seed, signed_in


@pytest.fixture(autouse=True)
def _cheap_argon2(monkeypatch):
    cheap_argon2(monkeypatch)


@pytest.fixture
async def people(engine):
    await seed(engine)
    await make_people(engine)
    async with signed_in(engine) as as_:
        yield as_


async def test_a_farmer_irrigates_and_sees_why_it_waits(people):
    zhang = await people("zhang")
    r = await zhang.post("/api/commands", json={"site": FARM, "gateway": FGW, "action": "irrigate", "target": "zone-2",
                                                "params": {"duration_s": 1200}, "valid_for": 900})
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["status"] == "pending" and body["on_behalf_of"] == "zhang"
    assert body["intent"].startswith("irrigate zone-2 for 20 min, if it can start before ")
    assert body["status_text"].startswith(f"waiting: gateway {FGW} offline since ") and "(connection lost)" in body["status_text"]
    mine = (await zhang.get("/api/intents", params={"site": FARM})).json()
    assert body["id"] in {i["id"] for i in mine}
    assert (await zhang.get(f"/api/intents/{body['id']}")).json()["status_text"] == body["status_text"]


async def test_a_farmer_may_not_unlock_a_door_refused_and_audited(people, engine):
    zhang = await people("zhang")
    r = await zhang.post("/api/commands", json={"site": COMMUNITY, "gateway": CGW, "action": "unlock", "target": "door-101"})
    assert r.status_code == 403 and "doors.control" in r.json()["detail"]
    denied = await audit_rows(engine, actor="zhang", outcome="denied")
    assert denied and denied[-1]["action"] == "doors.control"


async def test_a_farmer_overrides_a_local_control_the_duty_desk_may_not(people, engine):
    """``override`` (gateway/controls/: hold a fan on or off by hand) is a command like the others: it needs
    controls.override (farmer, admin), and the refusal is a 403 with an audit row."""
    zhang = await people("zhang")
    r = await zhang.post("/api/commands", json={"site": FARM, "gateway": FGW, "action": "override", "target": "gh-fan",
                                                "params": {"state": "on", "duration_s": 1800}, "valid_for": 300})
    assert r.status_code == 202, r.text
    body = r.json()
    assert (body["action"], body["target"], body["status"], body["on_behalf_of"]) == ("override", "gh-fan", "pending", "zhang")
    assert body["intent"].startswith("hold gh-fan on for 30 min, if it can start before ")
    r = await zhang.post("/api/commands", json={"site": FARM, "gateway": FGW, "action": "override", "target": "gh-fan",
                                                "params": {"state": "auto"}})
    assert r.status_code == 202 and r.json()["intent"].startswith("return gh-fan to automatic")
    ok = await audit_rows(engine, actor="zhang", action="command", outcome="ok")
    assert [row["detail"]["action"] for row in ok] == ["override", "override"]
    duty = await people("duty")
    r = await duty.post("/api/commands", json={"site": COMMUNITY, "gateway": CGW, "action": "override", "target": "fan-1",
                                               "params": {"state": "off", "duration_s": 60}})
    assert r.status_code == 403 and "controls.override" in r.json()["detail"]
    denied = await audit_rows(engine, actor="duty", outcome="denied")
    assert denied and denied[-1]["action"] == "controls.override"


async def test_a_volunteer_acks_only_alerts_that_reached_their_group(people, engine):
    wang = await people("wang")
    r = await wang.post(f"/api/alerts/{COMMUNITY}/{CGW}/1-smoke/ack", json={"note": "on my way"})
    assert r.status_code == 202, r.text
    assert r.json()["intent"].startswith('acknowledge alert 1-smoke ("on my way"), if it reaches the gateway before ')
    r = await wang.post(f"/api/alerts/{COMMUNITY}/{CGW}/2-water/ack", json={})
    assert r.status_code == 403
    r = await wang.post(f"/api/alerts/{COMMUNITY}/{CGW}/1-smoke/ack", json={"resolve": True})
    assert r.status_code == 403 and "alerts.resolve" in r.json()["detail"]
    r = await wang.post(f"/api/alerts/{COMMUNITY}/{CGW}/9-none/ack", json={})
    assert r.status_code == 404
    ok = await audit_rows(engine, actor="wang", action="ack", outcome="ok")
    assert len(ok) == 1 and ok[0]["detail"]["intent"].startswith("acknowledge alert 1-smoke")


async def test_what_no_gateway_could_take_is_a_422_with_the_reason(people):
    zhang = await people("zhang")
    r = await zhang.post("/api/commands", json={"site": FARM, "gateway": FGW, "action": "irrigate", "target": "zone-2",
                                                "params": {"duration_s": 60, "blob": "x" * 9000}})
    assert r.status_code in (413, 422)
    r = await zhang.post("/api/commands", json={"site": FARM, "gateway": FGW, "action": "irrigate", "target": "zone-2",
                                                "valid_for": 30 * 86400})
    assert r.status_code == 422 and "validity must be between" in r.json()["detail"]
