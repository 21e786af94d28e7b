"""Roles and scopes through the API: each person sees their part, and every refusal is a 403 with a reason, audited."""

from __future__ import annotations

import pytest

from centre.people.roles import ACK_ALERTS, DOORS
from centre.web.auth import Caller, require
from centre.web.errors import ApiError
from tests.centre.web.support import COMMUNITY, FARM, audit_rows, login, make_people, seed


@pytest.fixture
async def people(engine, clients):
    await seed(engine)
    await make_people(engine)

    async def as_user(name: str):
        c = clients()
        await login(c, name)
        return c
    return as_user


def ids(alerts: list[dict]) -> list[str]:
    return [a["alert"] for a in alerts]


async def test_duty_desk_sees_its_sites_open_alerts_by_severity(people):
    duty = await people("duty")
    assert ids((await duty.get("/api/alerts")).json()) == ["1-smoke", "2-water"]
    assert set(ids((await duty.get("/api/alerts", params={"state": "recent"})).json())) == {"1-smoke", "2-water", "4-old"}


async def test_volunteer_sees_only_their_groups_alerts(people, engine):
    wang = await people("wang")
    assert ids((await wang.get("/api/alerts", params={"state": "all"})).json()) == ["1-smoke"]
    r = await wang.get(f"/api/alerts/{COMMUNITY}/community-gw-01/2-water")
    assert r.status_code == 403 and r.json()["error"] == "forbidden"
    assert "outside your scope (group volunteers)" in r.json()["detail"]
    assert "groups property-office" in r.json()["detail"]
    row = (await audit_rows(engine, actor="wang", outcome="denied"))[-1]
    assert row["action"] == "alerts.view" and row["site"] == COMMUNITY and row["target"].endswith("2-water")
    assert (await wang.get(f"/api/alerts/{COMMUNITY}/community-gw-01/1-smoke")).status_code == 200


async def test_household_grant_sees_that_households_alerts(people):
    leader = await people("leader")
    assert ids((await leader.get("/api/alerts")).json()) == ["2-water"]


async def test_farmer_cannot_see_the_elderly_alerts(people, engine):
    zhang = await people("zhang")
    assert ids((await zhang.get("/api/alerts", params={"state": "all"})).json()) == ["3-valve"]
    r = await zhang.get(f"/api/alerts/{COMMUNITY}/community-gw-01/1-smoke")
    assert r.status_code == 403 and f"at site {COMMUNITY}" in r.json()["detail"]
    r = await zhang.get("/api/readings/latest", params={"site": COMMUNITY})
    assert r.status_code == 403
    r = await zhang.get("/api/gateways", params={"site": COMMUNITY})
    assert r.status_code == 403
    assert [g["site"] for g in (await zhang.get("/api/gateways")).json()] == [FARM]
    denied = await audit_rows(engine, actor="zhang", outcome="denied")
    assert [d["action"] for d in denied] == ["alerts.view", "readings.view", "gateways.view"]
    assert all(d["detail"]["status"] == 403 and d["detail"]["reason"] for d in denied)


async def test_admin_sees_everything(people):
    root = await people("root")
    assert set(ids((await root.get("/api/alerts", params={"state": "all"})).json())) == {"1-smoke", "2-water", "3-valve", "4-old"}
    assert [s["site"] for s in (await root.get("/api/sites")).json()] == [FARM, COMMUNITY]


async def test_installer_sees_gateways_and_readings_but_no_alerts(people):
    fixer = await people("fixer")
    assert (await fixer.get("/api/alerts")).json() == []
    assert (await fixer.get("/api/readings/latest", params={"site": FARM})).status_code == 200
    assert [g["gateway"] for g in (await fixer.get("/api/gateways")).json()] == ["farm-gw-01"]


async def test_volunteer_sees_their_own_ack_but_not_the_farms_commands(people):
    wang = await people("wang")
    assert [c["id"] for c in (await wang.get("/api/commands")).json()] == ["ack-1"]
    assert (await wang.get("/api/commands/ack-1")).status_code == 200
    assert (await wang.get("/api/commands/cmd-1")).status_code == 403
    zhang = await people("zhang")
    assert [c["id"] for c in (await zhang.get("/api/commands")).json()] == ["cmd-1"]


async def test_require_refuses_with_403_and_audit(people, web, engine):
    """The helper action endpoints call: a farmer cannot ack an elderly alert or unlock a door."""
    zhang = await people("zhang")
    me = (await zhang.get("/api/me")).json()
    from centre.people.sessions import Session
    from centre.people.users import find

    async with engine.connect() as conn:
        user, _ = await find(conn, username=me["username"])
    caller = Caller(Session("sid", user, "csrf", 0, 0), "10.1.1.1", web)
    with pytest.raises(ApiError) as err:
        await require(caller, ACK_ALERTS, site=COMMUNITY, group=["property-office"], household="101", target="1-smoke")
    assert err.value.status == 403 and "at site sunny-court" in err.value.detail
    with pytest.raises(ApiError) as err:
        await require(caller, DOORS, site=COMMUNITY, household="101", target="lock door-101")
    assert err.value.status == 403 and "your roles (farmer) may not doors.control" == err.value.detail
    assert (await require(caller, "irrigation.control", site=FARM, zone="2")).username == "zhang"
    denied = await audit_rows(engine, actor="zhang", outcome="denied")
    assert [(d["action"], d["target"], d["ip"]) for d in denied] == [
        ("alerts.ack", "1-smoke", "10.1.1.1"), ("doors.control", "lock door-101", "10.1.1.1")]
