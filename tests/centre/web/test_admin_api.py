"""The installer/admin API (``/api/admin/…``) on both engines: gateway health, people (the CLI's functions, audited),
routing without secrets, issuer keys with the gateways' YAML -- and a 403 with an audit row for every other role."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa
import yaml

from centre.acting.keys import gateway_snippet
from centre.acting.service import build
from centre.fullconfig import FullConfig
from centre.service import Centre
from centre.store import schema
from centre.store.engine import write_transaction
from tests.centre.web.support import (
    CGW, COMMUNITY, FARM, FGW, PASSWORD, audit_rows, login, make_people, make_user, same_keys,
)

SECRET = "s3cret-hmac-key-for-the-sms-gateway"
HEALTHY = {"v": 2, "status": "online", "ts": 0, "version": "0.2.0", "boot": 4, "protocol": 2,
           "devices": {"soil-1": {"bus": "b", "status": "ok", "polls": 9, "failures": 0, "last_ok": 1.0},
                       "ghost": {"bus": "b", "status": "exception", "polls": 3, "failures": 3, "last_ok": None,
                                 "detail": "exception 4 (device failure) on input 0+2 of unit 99"}},
           "outbox": {"alarm": {"pending": 0, "expired": 0, "dropped": {}},
                      "event": {"pending": 2, "expired": 0, "dropped": {}},
                      "telemetry": {"pending": 40, "expired": 3, "dropped": {"store_full": 5}},
                      "degraded": False, "last_error": None},
           "uplink": {"connected": True, "last_error": None}}
ENDPOINTS = [("GET", "/api/admin/gateways", None), ("GET", "/api/admin/users", None),
             ("POST", "/api/admin/users", {"username": "eve", "grants": [{"role": "admin"}]}),
             ("PUT", "/api/admin/users/zhang/grants", {"grants": [{"role": "admin"}]}),
             ("POST", "/api/admin/users/zhang/disable", None), ("POST", "/api/admin/users/zhang/enable", None),
             ("POST", "/api/admin/users/zhang/reset-password", None), ("GET", "/api/admin/routing", None),
             ("GET", "/api/admin/keys", None)]


@pytest.fixture
async def admin_web(engine, db_url, web, tmp_path):
    """The store seeded, the people made, and the centre's real acting component (routing config, key store)."""
    now = time.time()
    async with write_transaction(engine) as conn:
        await conn.execute(sa.insert(schema.gateways), same_keys([
            {"site": COMMUNITY, "gateway": CGW, "status": "online", "status_since": now - 3600, "version": "0.2.0",
             "protocol": 2, "boot": 4, "state": HEALTHY | {"ts": now - 5}, "state_ts": now - 5,
             "first_seen": now - 86400, "last_seen": now - 5},
            {"site": FARM, "gateway": FGW, "status": "offline", "reason": "connection lost", "status_since": now - 120,
             "version": "0.1.9", "protocol": 2, "state": {"status": "offline", "reason": "connection lost"},
             "state_ts": now - 130, "first_seen": now - 86400, "last_seen": now - 120},
            {"site": FARM, "gateway": "farm-gw-02", "status": "online", "status_since": now - 7200,
             "state": {"status": "online"}, "first_seen": now - 86400, "last_seen": now - 900}]))
        await conn.execute(sa.insert(schema.gaps), [
            {"site": COMMUNITY, "gateway": CGW, "epoch": "e", "lane": "event", "first_seq": 10, "last_seq": 14, "size": 5,
             "state": "repair_requested", "opened_at": now - 60, "updated_at": now - 30},
            {"site": COMMUNITY, "gateway": CGW, "epoch": "e", "lane": "telemetry", "first_seq": 1, "last_seq": 7, "size": 7,
             "state": "unrepairable", "opened_at": now - 9000, "updated_at": now - 60},
            {"site": COMMUNITY, "gateway": CGW, "epoch": "e", "lane": "alarm", "first_seq": 3, "last_seq": 3, "size": 1,
             "state": "repaired", "opened_at": now - 60, "updated_at": now - 50}])
    await make_people(engine)
    await make_user(engine, "site-admin", "admin", COMMUNITY)
    cfg = FullConfig.model_validate({
        "instance": "c1", "database": {"url": db_url}, "broker": {"host": "127.0.0.1"}, "keys_dir": str(tmp_path / "keys"),
        "routing": {"groups": {"property-office": {"users": ["duty"], "channels": ["console", "webhook:sms", "email"]},
                               f"{COMMUNITY}/volunteers": {"channels": ["console"]}, f"{FARM}/farmer": {},
                               "*": {"channels": ["console"]}},
                    "webhooks": {"sms": {"url": "https://user:pw@sms.example.net/canopy?token=abc", "secret": SECRET}},
                    "email": {"host": "smtp.example.net", "from_address": "canopy@example.net"},
                    "blind": {"after": 120, "groups": ["property-office"]}}})
    centre = Centre(cfg, engine)
    acting = build(centre)
    acting.keys.generate(COMMUNITY)
    web.components.update(centre.components)
    return web


@pytest.fixture
def as_(clients, admin_web):
    async def make(name: str):
        c = clients()
        await login(c, name)
        return c
    return make


async def changes(engine, actor: str = "root") -> list[str]:
    return [a["action"] for a in await audit_rows(engine, actor=actor, outcome="ok") if a["action"].startswith("users.")]


async def call(c, method: str, path: str, body):
    return await c.request(method, path, json=body) if body is not None else await c.request(method, path)


@pytest.mark.parametrize("who", ["duty", "wang", "leader", "zhang"])
async def test_every_admin_endpoint_refuses_other_roles_with_a_403_and_an_audit_row(as_, engine, who):
    c = await as_(who)
    for method, path, body in ENDPOINTS:
        r = await call(c, method, path, body)
        assert r.status_code == 403, (path, r.text)
        assert r.json()["error"] == "forbidden" and "may not" in r.json()["detail"], r.text
    denied = await audit_rows(engine, actor=who, outcome="denied")
    assert len(denied) == len(ENDPOINTS)
    assert {d["action"] for d in denied} == {"gaps.view", "users.manage", "routing.manage", "keys.manage"}
    async with engine.connect() as conn:
        zhang = (await conn.execute(sa.select(schema.users).where(schema.users.c.username == "zhang"))).first()
    assert zhang.active and not zhang.must_change_password


async def test_an_installer_sees_the_health_of_their_sites_gateways_and_nothing_else(as_, engine):
    c = await as_("fixer")  # installer at the farm
    gws = (await c.get("/api/admin/gateways")).json()
    assert [(g["gateway"], g["trouble"]) for g in gws] == [(FGW, "offline"), ("farm-gw-02", "silent")]
    off = gws[0]
    assert (off["reason"], off["version"], off["health"]) == ("connection lost", "0.1.9", None)
    assert off["silent_after"] == 120  # routing.blind.after of this centre
    for method, path, body in ENDPOINTS[1:]:
        assert (await call(c, method, path, body)).status_code == 403, path
    assert len(await audit_rows(engine, actor="fixer", outcome="denied")) == len(ENDPOINTS) - 1


async def test_gateway_health_reads_the_state_document_and_the_gaps(as_):
    gws = (await (await as_("root")).get("/api/admin/gateways")).json()
    assert [g["gateway"] for g in gws] == [FGW, "farm-gw-02", CGW]  # offline, silent, then healthy
    h = gws[2]
    assert h["trouble"] is None and h["boot"] == 4 and "state" not in h and "meta" not in h
    assert h["health"] | {"failing": None} == {
        "backlog": 42, "lanes": {"alarm": 0, "event": 2, "telemetry": 40}, "lost": 8, "degraded": False,
        "store_error": None, "uplink_error": None, "devices": 2, "devices_ok": 1, "failing": None}
    assert [(d["device"], d["status"]) for d in h["health"]["failing"]] == [("ghost", "exception")]
    assert h["gaps"] == {"open": 1, "missing": 5, "unrepairable": 1, "lost": 7}


async def test_an_admin_adds_a_person_whose_one_time_password_works_once_and_must_be_changed(as_, clients, engine):
    root = await as_("root")
    r = await root.post("/api/admin/users", json={"username": "li", "display_name": "Li Na", "language": "zh-CN",
                                                   "grants": [{"role": "volunteer", "site": COMMUNITY,
                                                               "scope_kind": "group", "scope": "volunteers"}]})
    assert r.status_code == 201, r.text
    body = r.json()
    otp = body["one_time_password"]
    assert len(otp) >= 16 and body["user"]["must_change_password"] and body["user"]["grants"] == [
        {"role": "volunteer", "site": COMMUNITY, "scope_kind": "group", "scope": "volunteers"}]
    li = clients()
    me = (await li.post("/api/login", json={"username": "li", "password": otp})).json()
    assert me["must_change_password"] and me["language"] == "zh-CN"
    assert otp not in str(await audit_rows(engine))  # the password is never on record
    [added] = await audit_rows(engine, action="users.add")
    assert (added["actor"], added["target"], added["outcome"]) == ("root", "li", "ok")
    again = await root.post("/api/admin/users", json={"username": "li", "grants": [{"role": "farmer"}]})
    assert again.status_code == 409 and "exists already" in again.json()["detail"]
    for bad, words in (({"role": "boss"}, "unknown role 'boss'"), ({"role": "farmer", "scope_kind": "zone", "scope": "a b"},
                                                                  "is not an id"),
                       ({"role": "farmer", "scope_kind": "room", "scope": "1"}, "write group:NAME")):
        r = await root.post("/api/admin/users", json={"username": "li2", "grants": [bad]})
        assert r.status_code == 422 and words in r.json()["detail"], r.text
    r = await root.post("/api/admin/users", json={"username": "bad name", "grants": [{"role": "farmer"}]})
    assert r.status_code == 422 and "letters, digits" in r.json()["detail"]
    assert (await root.post("/api/admin/users", json={"username": "x", "grants": []})).status_code == 422


async def test_roles_change_disable_ends_sessions_enable_and_reset(as_, clients, engine):
    root, zhang = await as_("root"), await as_("zhang")
    r = await root.put("/api/admin/users/zhang/grants", json={"grants": [
        {"role": "farmer", "site": FARM}, {"role": "volunteer", "site": COMMUNITY, "scope_kind": "group", "scope": "v"}]})
    assert (r.status_code, r.json()["added"], r.json()["revoked"]) == (200, 1, 0)
    r = await root.put("/api/admin/users/zhang/grants", json={"grants": [{"role": "farmer", "site": FARM}]})
    assert (r.json()["added"], r.json()["revoked"]) == (0, 1)
    assert await changes(engine) == ["users.grant", "users.revoke"]
    assert (await zhang.get("/api/me")).status_code == 200
    r = await root.post("/api/admin/users/zhang/disable")
    assert (r.status_code, r.json()["sessions_ended"], r.json()["user"]["active"]) == (200, 1, False)
    assert (await zhang.get("/api/me")).status_code == 401
    again = clients()
    assert (await again.post("/api/login", json={"username": "zhang", "password": PASSWORD})).status_code == 403
    assert (await root.post("/api/admin/users/zhang/enable")).json()["user"]["active"]
    await login(again, "zhang")
    r = await root.post("/api/admin/users/zhang/reset-password")
    assert r.json()["sessions_ended"] == 1 and r.json()["user"]["must_change_password"]
    assert (await again.get("/api/me")).status_code == 401
    assert (await changes(engine))[2:] == [
        "users.disable", "users.enable", "users.reset_password"]
    for path in ("/api/admin/users/root/disable", "/api/admin/users/root/reset-password"):
        r = await root.post(path)
        assert r.status_code == 409 and "your own account" in r.json()["detail"]
    assert (await root.put("/api/admin/users/root/grants", json={"grants": []})).status_code == 409
    assert (await root.post("/api/admin/users/nobody/disable")).status_code == 404


async def test_an_admin_of_one_site_manages_only_that_site(as_, engine):
    c = await as_("site-admin")
    names = {u["username"] for u in (await c.get("/api/admin/users")).json()}
    assert names == {"duty", "wang", "leader", "site-admin"}
    r = await c.post("/api/admin/users", json={"username": "eve", "grants": [{"role": "farmer", "site": FARM}]})
    assert r.status_code == 403 and f"at site {FARM}" in r.json()["detail"]
    r = await c.post("/api/admin/users", json={"username": "eve", "grants": [{"role": "admin"}]})
    assert r.status_code == 403 and "every site" in r.json()["detail"]
    assert (await c.post("/api/admin/users/zhang/disable")).status_code == 403
    assert (await c.post("/api/admin/users/root/disable")).status_code == 403
    r = await c.post("/api/admin/users", json={"username": "eve", "grants": [{"role": "duty_desk", "site": COMMUNITY}]})
    assert r.status_code == 201
    assert len(await audit_rows(engine, actor="site-admin", outcome="denied")) == 4
    assert [g["site"] for g in (await c.get("/api/admin/gateways")).json()] == [COMMUNITY]
    assert {s["site"] for s in (await c.get("/api/admin/keys")).json()} == {COMMUNITY}


async def test_routing_is_shown_without_secrets_with_the_people_of_each_group(as_):
    c = await as_("root")
    r = await c.get("/api/admin/routing")
    assert SECRET not in r.text and "token=abc" not in r.text and "pw@" not in r.text
    body = r.json()
    groups = {g["group"]: g for g in body["groups"]}
    assert groups["property-office"]["channels"] == ["console", "webhook:sms", "email"]
    assert groups["property-office"]["users"] == ["duty"]
    assert groups[f"{COMMUNITY}/volunteers"]["granted"] == ["wang"]
    assert body["webhooks"] == [{"name": "sms", "url": "https://sms.example.net/canopy", "max_attempts": 8}]
    assert body["email"]["host"] == "smtp.example.net" and body["blind"]["after"] == 120
    site_admin = {g["group"] for g in (await (await as_("site-admin")).get("/api/admin/routing")).json()["groups"]}
    assert f"{FARM}/farmer" not in site_admin and f"{COMMUNITY}/volunteers" in site_admin


async def test_keys_per_site_with_the_same_snippet_as_the_cli(as_, admin_web):
    sites = {s["site"]: s for s in (await (await as_("root")).get("/api/admin/keys")).json()}
    assert set(sites) == {COMMUNITY, FARM}
    store = admin_web.components["acting"].keys
    [key] = sites[COMMUNITY]["keys"]
    assert (key["issuer"], key["active"], key["has_private"]) == ("centre-1", True, True)
    assert sites[COMMUNITY]["snippet"] == gateway_snippet(COMMUNITY, store.keys(COMMUNITY))
    issuers = yaml.safe_load(sites[COMMUNITY]["snippet"])["commands"]["issuers"]
    assert issuers["centre-1"]["public_key"] == key["public_key"]
    assert "PRIVATE" not in str(sites)
    assert sites[FARM]["keys"] == [] and sites[FARM]["command"] == f"canopy-centre keys gen --site {FARM} -c centre.yaml"


async def test_without_the_acting_component_routing_and_keys_say_why(clients, engine, web):
    await make_people(engine)
    c = clients()
    await login(c, "root")
    for path in ("/api/admin/routing", "/api/admin/keys"):
        r = await c.get(path)
        assert r.status_code == 503 and "acting component" in r.json()["detail"]
    assert (await c.get("/api/admin/gateways")).status_code == 200
