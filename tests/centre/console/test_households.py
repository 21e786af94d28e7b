"""The households panel's API on SQLite and PostgreSQL: each household of a site with its last door, water and
power activity (from the readings the centre stores), quiet ones and those with an open welfare alert first,
blind ones said to be blind; scoped by the caller's grants (a household grant sees its household, a volunteer's
group grant and a farmer elsewhere get a 403, audited); a door-unlock reason needs doors.control there."""

from __future__ import annotations

import copy
import time

import pytest
import sqlalchemy as sa

from centre.people import passwords, users
from centre.people.roles import Grant
from centre.store import schema
from centre.store.engine import write_transaction
from tests.centre.console.support import CGW, COMMUNITY, COMMUNITY_META, EPOCH, PASSWORD, labels, make_people, seed_places
from tests.centre.web.support import audit_rows, signed_in

HOMES_META = copy.deepcopy(COMMUNITY_META)
HOMES_META["devices"].update({
    "power-103": {"location": {"building": "3", "unit": "2", "household": "103"},
                  "labels": labels("power meter of 103", "103室电表")},
    "meter-104": {"location": {"building": "3", "unit": "2", "household": "104"},
                  "labels": labels("water meter of 104", "104室水表")}})
HOMES_META["households"]["102"] = {"labels": labels("Mr Zhao", "赵大爷"), "devices": ["door-102"]}
HOMES_META["locks"] = {"door-102": {"device": "door-102", "relock_after_s": 10, "actions": ["unlock", "lock"]}}


async def seed_homes(engine, now: float | None = None) -> None:
    """101: water last used 14 h ago and an open welfare alert; 102: door opened 40 min ago, with a lock;
    103: an appliance switched on 2 h ago (standby noise before it); 104: its meter has sent nothing (blind)."""
    now = time.time() if now is None else now
    rows, seq = [], 50000

    def add(device: str, point: str, ts: float, value: float, unit: str | None = None) -> None:
        nonlocal seq
        seq += 1
        rows.append({"site": COMMUNITY, "gateway": CGW, "epoch": EPOCH, "seq": seq, "ts": ts, "device": device,
                     "point": point, "value": value, "text": None, "invalid": None, "unit": unit, "received_at": ts + 1})

    for k in range(20):  # every half hour for 10 h: the 101 meter, still; one use 14 h ago
        add("meter-101", "flow_rate", now - 36000 + k * 1800 + 60, 0.0, "m3/h")
    add("meter-101", "flow_rate", now - 14 * 3600, 0.35, "m3/h")
    add("door-102", "door_open", now - 2400, 1.0)
    add("door-102", "door_open", now - 2340, 0.0)
    add("door-102", "open_count", now - 7200, 41.0)
    add("door-102", "open_count", now - 2400, 42.0)
    add("door-102", "door_open", now - 30, 0.0)
    for k, watts in enumerate((80.0, 86.0, 79.0, 1900.0, 95.0, 82.0, 88.0)):  # noise, a kettle, noise
        add("power-103", "power", now - 4 * 3600 + k * 1200, watts, "W")
    async with write_transaction(engine) as conn:
        await conn.execute(sa.update(schema.gateways).where(schema.gateways.c.gateway == CGW).values(meta=HOMES_META))
        await conn.execute(sa.insert(schema.telemetry), rows)


async def add_people(engine) -> None:
    pw = await passwords.hash_password(PASSWORD)
    for name, grant in (("leader", Grant("grid_leader", COMMUNITY, "household", "102")), ("root", Grant("admin"))):
        await users.add_user(engine, name, pw, [grant], must_change_password=False)


@pytest.fixture
async def people(engine):
    await make_people(engine)
    await add_people(engine)
    await seed_places(engine)
    await seed_homes(engine)
    async with signed_in(engine) as as_:
        yield as_


async def test_the_desk_sees_every_household_quiet_and_welfare_first(people):
    duty = await people("duty")
    r = await duty.get("/api/households", params={"site": COMMUNITY})
    assert r.status_code == 200, r.text
    homes = {h["household"]: h for h in r.json()}
    assert [h["household"] for h in r.json()] == ["101", "104", "102", "103"]
    li = homes["101"]
    assert li["attention"] and li["quiet"] and not li["blind"]
    assert [w["alert"] for w in li["welfare_alerts"]] == ["7-4a1c"]
    assert li["activity"]["water"]["device"] == "meter-101" and 13.9 * 3600 < li["quiet_for_s"] < 14.1 * 3600
    assert li["labels"]["en"] == "the Li household" and li["location"] == {"building": "3", "unit": "1", "grid": "G7"}
    zhao = homes["102"]
    assert not zhao["attention"] and zhao["sensors"] == ["door"]
    assert zhao["activity"]["door"]["point"] in ("door_open", "open_count") and 2350 < zhao["quiet_for_s"] < 2500
    assert zhao["locks"] == [{"gateway": CGW, "lock": "door-102", "device": "door-102",
                              "labels": {"en": "door of 102", "zh-CN": "102室门锁"}, "relock_after_s": 10}]
    power = homes["103"]["activity"]["power"]
    assert power is not None and abs(power["ts"] - (time.time() - 4 * 3600 + 3 * 1200)) < 5  # the kettle, not the noise
    assert homes["104"]["blind"] and homes["104"]["quiet"] and homes["104"]["last_activity"] is None
    shorter = (await duty.get("/api/households", params={"quiet_hours": 1})).json()
    assert {h["household"] for h in shorter if h["quiet"]} == {"101", "103", "104"}  # 102's door: 40 min ago


async def test_households_follow_the_grants(people, engine):
    leader = await people("leader")
    assert [h["household"] for h in (await leader.get("/api/households")).json()] == ["102"]
    root = await people("root")
    assert len((await root.get("/api/households")).json()) == 4
    for name in ("wang", "zhang"):  # a volunteer's group grant, a farmer at another site
        client = await people(name)
        r = await client.get("/api/households", params={"site": COMMUNITY})
        assert r.status_code == 403 and "households panel" in r.json()["detail"]
        denied = await audit_rows(engine, actor=name, outcome="denied")
        assert denied[-1]["action"] == "alerts.view" and denied[-1]["target"] == f"households of {COMMUNITY}"
    assert (await (await people("wang")).get("/api/households")).status_code == 403
    assert (await (await people("zhang")).get("/api/households")).json() == []  # the farm has no households


async def test_an_unlock_reason_needs_doors_control_for_that_household_and_words(people, engine):
    duty = await people("duty")
    path = f"/api/households/{COMMUNITY}/102/unlock-reason"
    r = await duty.post(path, json={"gateway": CGW, "lock": "door-102", "reason": "  no answer,   ambulance here "})
    assert r.status_code == 200, r.text
    ok = await audit_rows(engine, actor="duty", action="door.unlock_reason")
    assert [(x["outcome"], x["target"], x["detail"]) for x in ok] == [
        ("ok", f"{CGW}/door-102", {"household": "102", "reason": "no answer, ambulance here"})]
    assert (await duty.post(path, json={"gateway": CGW, "lock": "door-102", "reason": "  "})).status_code == 422
    assert (await duty.post(path, json={"gateway": CGW, "lock": "door-102"})).status_code == 422
    r = await duty.post(f"/api/households/{COMMUNITY}/101/unlock-reason",
                        json={"gateway": CGW, "lock": "door-102", "reason": "wrong household"})
    assert r.status_code == 404 and "no lock door-102 in household 101" in r.json()["detail"]
    for name in ("zhang", "wang", "leader"):  # farmer, volunteer, and a grid leader (no doors.control)
        r = await (await people(name)).post(path, json={"gateway": CGW, "lock": "door-102", "reason": "let me in"})
        assert r.status_code == 403 and "doors.control" in r.json()["detail"], name
    denied = await audit_rows(engine, action="doors.control", outcome="denied")
    assert {x["actor"] for x in denied} == {"zhang", "wang", "leader"}


async def test_a_home_heard_only_for_minutes_is_watched_not_called_quiet(people, engine):
    """No sign of life *yet* is not 12 h of nobody moving: until its devices have been heard for longer than the
    limit the home is "watching since", then quiet."""
    now = time.time()
    async with write_transaction(engine) as conn:
        await conn.execute(sa.insert(schema.telemetry), [
            {"site": COMMUNITY, "gateway": CGW, "epoch": EPOCH, "seq": 60000 + k, "ts": now - 600 + k * 60,
             "device": "meter-104", "point": "flow_rate", "value": 0.0, "text": None, "invalid": None, "unit": "m3/h",
             "received_at": now} for k in range(10)])  # heard for 10 minutes, never used
    duty = await people("duty")
    homes = {h["household"]: h for h in (await duty.get("/api/households", params={"site": COMMUNITY})).json()}
    newcomer = homes["104"]
    assert not newcomer["quiet"] and not newcomer["blind"] and newcomer["last_activity"] is None
    assert abs(newcomer["watching_since"] - (now - 600)) < 1
    later = {h["household"]: h for h in (await duty.get("/api/households", params={"quiet_hours": 0.1})).json()}
    assert later["104"]["quiet"] and later["104"]["watching_since"] is None  # heard 10 min > 6 min: now it is quiet
