"""Test parts for the API: users with known passwords, logged-in httpx clients, and a small community + farm in the store.

The store is filled through the same tables ingest writes (``centre.store.schema``), so the
API is tested against what it will really read.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import httpx
import orjson
import sqlalchemy as sa

from centre.people import passwords, users
from centre.people.roles import Grant, parse_scope
from centre.store import schema
from centre.store.engine import write_transaction
from tests.support import free_port

PASSWORD = "correct horse battery"
EPOCH = "0123456789abcdef"
COMMUNITY, FARM = "sunny-court", "green-valley"
CGW, FGW = "community-gw-01", "farm-gw-01"
_hash: dict[str, str] = {}


async def password_hash(pw: str = PASSWORD) -> str:
    if pw not in _hash:  # argon2 takes ~50 ms: hash each test password once per session
        _hash[pw] = await passwords.hash_password(pw)
    return _hash[pw]


async def make_user(engine, name: str, role: str, site: str | None = None, scopes: tuple[str, ...] = (), *,
                    password: str = PASSWORD, must_change: bool = False) -> None:
    grants = [Grant(role, site, *parse_scope(s)) for s in scopes] or [Grant(role, site)]
    await users.add_user(engine, name, await password_hash(password), grants, must_change_password=must_change)


PEOPLE = {  # name: (role, site, scopes)
    "duty": ("duty_desk", COMMUNITY, ()),
    "wang": ("volunteer", COMMUNITY, ("group:volunteers",)),
    "leader": ("grid_leader", COMMUNITY, ("household:102",)),
    "zhang": ("farmer", FARM, ()),
    "fixer": ("installer", FARM, ()),
    "root": ("admin", None, ()),
}


async def make_people(engine) -> None:
    for name, (role, site, scopes) in PEOPLE.items():
        await make_user(engine, name, role, site, scopes)


async def login(client: httpx.AsyncClient, name: str, password: str = PASSWORD) -> str:
    """Log the client in; returns the CSRF token (and sets it as the client's default header)."""
    r = await client.post("/api/login", json={"username": name, "password": password})
    assert r.status_code == 200, r.text
    client.headers["X-CSRF-Token"] = r.json()["csrf"]
    return r.json()["csrf"]


def client_for(app, ip: str = "10.0.0.5", base_url: str = "http://testserver") -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(ip, 40000)), base_url=base_url)


async def audit_rows(engine, **where) -> list[dict]:
    a = schema.audit
    q = sa.select(a).order_by(a.c.id)
    for k, v in where.items():
        q = q.where(a.c[k] == v)
    async with engine.connect() as conn:
        return [dict(r._mapping) for r in await conn.execute(q)]


def alert_view(site, gateway, alert, *, status="raised", severity="warning", cls="fire", groups=(), location=None,
               raised_at=None, resolved_at=None, **extra) -> dict:
    now = time.time()
    return {"site": site, "gateway": gateway, "alert": alert, "status": status, "rule": f"rule-{alert}", "class": cls,
            "severity": severity, "subject": f"subject-{alert}", "device": "dev-1", "location": location or {},
            "groups": list(groups), "step": 0, "raised_at": raised_at or now - 600, "resolved_at": resolved_at,
            "message": f"message of {alert}", "lang": "en", "updated_at": resolved_at or raised_at or now - 600, **extra}


SMOKE = alert_view(COMMUNITY, CGW, "1-smoke", status="escalated", severity="critical",
                   groups=("property-office", "volunteers"), location={"building": "3", "unit": "1", "household": "101"})
WATER = alert_view(COMMUNITY, CGW, "2-water", cls="welfare", groups=("property-office",), location={"household": "102"})
VALVE = alert_view(FARM, FGW, "3-valve", cls="field", groups=("farmer",), location={"zone": "2"})
OLD = alert_view(COMMUNITY, CGW, "4-old", status="resolved", groups=("property-office",), resolved_at=time.time() - 3600)


async def put_alerts(engine, *views: dict) -> None:
    async with write_transaction(engine) as conn:
        await conn.execute(sa.insert(schema.alerts), list(views))


def same_keys(rows: list[dict]) -> list[dict]:
    """executemany wants every row to name the same columns."""
    keys = {k for r in rows for k in r}
    return [{k: r.get(k) for k in keys} for r in rows]


async def seed(engine) -> None:
    """Two gateways, four alerts (one with a timeline), readings, an hourly rollup and two commands."""
    now = time.time()
    async with write_transaction(engine) as conn:
        await conn.execute(sa.insert(schema.gateways), same_keys([
            {"site": COMMUNITY, "gateway": CGW, "status": "online", "status_since": now - 3600, "version": "0.2.0",
             "protocol": 2, "capabilities": ["replay"], "state": {"status": "online"}, "meta": {"devices": []},
             "first_seen": now - 86400, "last_seen": now - 5, "last_record_ts": now - 6},
            {"site": FARM, "gateway": FGW, "status": "offline", "reason": "connection lost", "status_since": now - 120,
             "first_seen": now - 86400, "last_seen": now - 120}]))
        await conn.execute(sa.insert(schema.alerts), [SMOKE, WATER, VALVE, OLD])
        steps = [(1, "alert.raised", "raised", "property-office", ["duty"], now - 600),
                 (2, "alert.escalated", "escalated", "volunteers", ["volunteer-wang"], now - 300)]
        await conn.execute(sa.insert(schema.records), [
            {"site": COMMUNITY, "gateway": CGW, "epoch": EPOCH, "lane": "alarm", "seq": seq, "ts": ts, "type": t,
             "topic": f"alert/{g}", "received_at": ts,
             "body": {"seq": seq, "type": t, "alert": "1-smoke", "group": g, "recipients": rcp, "status": st}}
            for seq, t, st, g, rcp, ts in steps])
        await conn.execute(sa.insert(schema.alert_events), [
            {"site": COMMUNITY, "gateway": CGW, "epoch": EPOCH, "lane": "alarm", "seq": seq, "alert": "1-smoke",
             "type": t, "ts": ts, "status": st, "step": i, "groups": ["property-office", "volunteers"][:i + 1]}
            for i, (seq, t, st, g, rcp, ts) in enumerate(steps)])
        await conn.execute(sa.insert(schema.telemetry), same_keys([
            {"site": FARM, "gateway": FGW, "epoch": EPOCH, "seq": i, "ts": now - 300 + i * 60, "device": "soil-1",
             "point": "moisture", "value": 20.0 + i, "unit": "%", "received_at": now - 300 + i * 60 + 0.5}
            for i in range(1, 5)] + [
            {"site": COMMUNITY, "gateway": CGW, "epoch": EPOCH, "seq": 1, "ts": now - 30, "device": "door-101",
             "point": "locked", "value": 1.0, "text": "true", "received_at": now - 29}]))
        hour = int(now // 3600 * 3600)
        await conn.execute(sa.insert(schema.telemetry_hourly), [
            {"site": FARM, "gateway": FGW, "device": "soil-1", "point": "moisture", "hour": hour - 3600 * k,
             "count": 4, "total": 80.0 + k, "min": 19.0, "max": 21.0 + k, "unit": "%"} for k in range(3)])
        await conn.execute(sa.insert(schema.commands), same_keys([
            {"id": "cmd-1", "kind": "command", "site": FARM, "gateway": FGW, "issuer": "centre", "on_behalf_of": "zhang",
             "action": "irrigate", "target": "zone-2", "params": {"minutes": 20}, "intent": "irrigate zone 2 for 20 min",
             "created_at": now - 60, "valid_until": now + 600, "status": "pending", "rank": 0, "sends": 0},
            {"id": "ack-1", "kind": "ack", "site": COMMUNITY, "gateway": CGW, "issuer": "centre",
             "on_behalf_of": "wang", "action": "ack", "target": "1-smoke", "created_at": now - 30, "status": "sent",
             "rank": 1, "sends": 1, "sent_at": now - 29}]))


def cheap_argon2(monkeypatch) -> None:
    """argon2 with tiny costs: the tests check the flows, not the hash's strength (test_passwords checks that)."""
    from argon2 import PasswordHasher

    fast = PasswordHasher(time_cost=1, memory_cost=64, parallelism=1)
    monkeypatch.setattr(passwords, "_hasher", fast)
    monkeypatch.setattr(passwords, "_DUMMY", fast.hash("dummy"))
    monkeypatch.setattr("tests.centre.web.support._hash", {})


@contextlib.asynccontextmanager
async def running_web(db_url: str, instance: str = "c1", centre=None, **http):
    """``centre.web.service.run`` on a free loopback port (a real uvicorn), in this test's loop; on ``centre``
    (e.g. one whose ingest runs) with its http section replaced, or on a new one."""
    from centre.config import CentreConfig, Http
    from centre.service import Centre
    from centre.store.engine import create_engine
    from centre.web import service

    http_cfg = Http.model_validate({"host": "127.0.0.1", "port": free_port(), **http})
    engine = None
    if centre is None:
        cfg = CentreConfig.model_validate({"instance": instance, "broker": {"host": "127.0.0.1"},
                                           "database": {"url": db_url}})
        engine = create_engine(db_url)
        centre = Centre(cfg, engine)
    centre.cfg = centre.cfg.model_copy(update={"http": http_cfg})
    task = asyncio.create_task(service.run(centre))
    try:
        deadline = time.monotonic() + 10
        while "web.url" not in centre.components:
            if task.done():
                task.result()
            assert time.monotonic() < deadline, "the web component did not start"
            await asyncio.sleep(0.02)
        yield centre
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        if engine is not None:
            await engine.dispose()


class Sse:
    """Reads a live stream's events: ``await sse.next()`` -> (event, data)."""

    def __init__(self, response: httpx.Response):
        self.response = response
        self._lines = response.aiter_lines()

    async def next(self, timeout: float = 5.0) -> tuple[str, object]:
        return await asyncio.wait_for(self._next(), timeout)

    async def _next(self) -> tuple[str, object]:
        event, data = "message", []
        async for line in self._lines:
            if line == "":
                if data:
                    return event, orjson.loads("\n".join(data))
                event = "message"
                continue
            if line.startswith(":"):
                continue
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                event = value
            elif field == "data":
                data.append(value)
        raise EOFError("the stream ended")

    async def until(self, event: str, timeout: float = 5.0) -> object:
        deadline = time.monotonic() + timeout
        while True:
            got, data = await self.next(max(0.01, deadline - time.monotonic()))
            if got == event:
                return data


@contextlib.asynccontextmanager
async def signed_in(engine):
    """``as_(name)``: an HTTP client of a fresh app on ``engine``, logged in as ``name`` (closed at the end)."""
    from centre.hub import Hub
    from centre.web.app import create_app
    from centre.web.context import Web

    app = create_app(Web(engine, Hub()))
    made: list[httpx.AsyncClient] = []

    async def as_(name: str) -> httpx.AsyncClient:
        made.append(client_for(app))
        await login(made[-1], name)
        return made[-1]

    try:
        yield as_
    finally:
        for c in made:
            await c.aclose()

