"""Login, sessions, throttling and CSRF against the real app on SQLite and PostgreSQL."""

from __future__ import annotations

import sqlalchemy as sa

from centre.people.config import PeopleConfig, Throttle
from centre.people.sessions import token_hash
from centre.store import schema
from tests.centre.web.support import PASSWORD, audit_rows, login, make_user

PUBLIC = {("GET", "/health"), ("GET", "/metrics"), ("POST", "/api/login")}


async def test_no_endpoint_answers_without_login_except_health_and_metrics(app, clients, engine):
    c = clients()
    routes = [(m.upper(), path) for path, ops in app.openapi()["paths"].items() for m in ops]
    routes.append(("GET", "/api/openapi.json"))
    assert len(routes) > 12
    for method, path in routes:
        url = path.format(site="s", gateway="g", alert="a", command_id="x", household="h", username="u")
        r = await c.request(method, url, json={} if method == "POST" else None)
        if (method, path) in PUBLIC:
            assert r.status_code != 401, (method, path)
            continue
        assert r.status_code == 401, (method, path, r.status_code)
        assert r.json() == {"error": "not_logged_in", "detail": "not logged in"}
    refusals = await audit_rows(engine, actor="anonymous", outcome="denied")
    assert len(refusals) == len(routes) - len(PUBLIC)
    assert (await c.get("/health")).json()["status"] == "ok"


async def test_login_sets_httponly_strict_cookie_and_stores_only_the_token_hash(clients, engine):
    await make_user(engine, "duty", "duty_desk", "sunny-court")
    c = clients()
    r = await c.post("/api/login", json={"username": "duty", "password": PASSWORD})
    assert r.status_code == 200
    session_cookie = next(h for h in r.headers.get_list("set-cookie") if h.startswith("canopy_session="))
    assert "HttpOnly" in session_cookie and "SameSite=strict" in session_cookie and "Secure" not in session_cookie
    token = c.cookies["canopy_session"]
    async with engine.connect() as conn:
        ids = [row.id for row in await conn.execute(sa.select(schema.sessions.c.id))]
    assert ids == [token_hash(token)] and token not in ids
    me = (await c.get("/api/me")).json()
    assert me["username"] == "duty" and me["grants"] == [{"role": "duty_desk", "site": "sunny-court",
                                                          "scope_kind": "site", "scope": None}]
    assert "alerts.ack" in me["permissions"] and me["csrf"] == r.json()["csrf"]
    assert [a["outcome"] for a in await audit_rows(engine, action="login")] == ["ok"]


async def test_session_cookie_is_secure_over_https(clients, engine):
    await make_user(engine, "duty", "duty_desk")
    r = await clients(base_url="https://testserver").post("/api/login", json={"username": "duty", "password": PASSWORD})
    assert all("Secure" in h for h in r.headers.get_list("set-cookie"))


async def test_wrong_password_and_unknown_user_get_the_same_answer_and_are_audited(clients, engine):
    await make_user(engine, "duty", "duty_desk")
    c = clients()
    a = await c.post("/api/login", json={"username": "duty", "password": "not it at all"})
    b = await c.post("/api/login", json={"username": "nobody", "password": "not it at all"})
    assert a.status_code == b.status_code == 401 and a.json() == b.json()
    assert a.json()["detail"] == "wrong user name or password"
    rows = await audit_rows(engine, action="login")
    assert [(x["actor"], x["outcome"], x["detail"]["reason"]) for x in rows] == [
        ("duty", "failed", "wrong password"), ("nobody", "failed", "unknown user")]


def slow_throttle(web) -> None:
    """Delays long enough that a loaded test machine cannot outlive them between two requests."""
    web.people = PeopleConfig(per_user=Throttle(free_failures=3, base_delay=60), per_ip=Throttle(free_failures=10, base_delay=60))


async def test_login_is_throttled_per_user_exponentially_with_a_clear_message(clients, engine, web):
    await make_user(engine, "duty", "duty_desk")
    slow_throttle(web)
    c = clients()
    codes = [(await c.post("/api/login", json={"username": "duty", "password": "wrong password"})).status_code
             for _ in range(4)]
    assert codes == [401, 401, 401, 401]  # the 4th failure is the first over the 3 free ones: blocked from now on
    r = await c.post("/api/login", json={"username": "duty", "password": PASSWORD})
    assert r.status_code == 429 and r.json()["error"] == "throttled"
    assert r.json()["detail"] in ("too many failed logins for this user: try again in 60 s",
                                  "too many failed logins for this user: try again in 59 s")
    assert 58 <= int(r.headers["Retry-After"]) <= 60
    # another address is blocked too: the throttle is per user name
    assert (await clients(ip="10.9.9.9").post("/api/login", json={"username": "duty", "password": PASSWORD})).status_code == 429
    denied = await audit_rows(engine, action="login", outcome="denied")
    assert len(denied) == 2 and all(d["detail"]["reason"] == "throttled" for d in denied)


async def test_delay_doubles_with_each_failure(engine):
    from centre.people import throttle

    policy = Throttle(free_failures=2, base_delay=1.0, max_delay=8.0)
    assert [throttle.delay(n, policy) for n in range(1, 8)] == [0, 0, 1, 2, 4, 8, 8]
    keys = {"user:x": policy}
    for n in range(4):
        await throttle.failed(engine, keys, 1000.0 + n)
    block = await throttle.blocked(engine, ["user:x"], 1003.5)
    assert block is not None and block.retry_after == 1.5 and block.message.endswith("try again in 2 s")
    assert await throttle.blocked(engine, ["user:x"], 1005.0) is None
    # a quiet forget_after starts the count again
    await throttle.failed(engine, keys, 1003.0 + policy.forget_after + 1)
    assert await throttle.blocked(engine, ["user:x"], 1003.0 + policy.forget_after + 1.5) is None


async def test_login_is_throttled_per_address(clients, engine, web):
    slow_throttle(web)
    for i in range(12):
        await make_user(engine, f"u{i}", "volunteer")
    c = clients(ip="10.6.6.6")
    codes = [(await c.post("/api/login", json={"username": f"u{i}", "password": "wrong password"})).status_code
             for i in range(11)]
    assert codes == [401] * 11
    r = await c.post("/api/login", json={"username": "u11", "password": PASSWORD})
    assert r.status_code == 429 and "for this address" in r.json()["detail"]
    assert (await clients(ip="10.7.7.7").post("/api/login", json={"username": "u11", "password": PASSWORD})).status_code == 200


async def test_state_changing_requests_need_the_csrf_token(clients, engine):
    await make_user(engine, "duty", "duty_desk")
    c = clients()
    csrf = await login(c, "duty")
    del c.headers["X-CSRF-Token"]
    r = await c.post("/api/logout")
    assert r.status_code == 403 and r.json()["error"] == "csrf" and "X-CSRF-Token" in r.json()["detail"]
    r = await c.post("/api/logout", headers={"X-CSRF-Token": "forged"})
    assert r.status_code == 403 and r.json()["error"] == "csrf"
    assert (await c.get("/api/me")).status_code == 200  # still logged in
    denied = await audit_rows(engine, actor="duty", outcome="denied")
    assert [d["detail"]["status"] for d in denied] == [403, 403]
    r = await c.post("/api/logout", headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200
    assert (await c.get("/api/me")).status_code == 401


async def test_a_form_post_is_refused(clients, engine):
    await make_user(engine, "duty", "duty_desk")
    c = clients()
    r = await c.post("/api/login", data={"username": "duty", "password": PASSWORD})
    assert r.status_code == 415 and r.json()["error"] == "unsupported_media_type"


async def test_one_time_password_must_be_changed_first(clients, engine):
    await make_user(engine, "farmer-li", "farmer", "green-valley", must_change=True)
    c = clients()
    await login(c, "farmer-li")
    assert (await c.get("/api/me")).json()["must_change_password"] is True
    r = await c.get("/api/alerts")
    assert r.status_code == 403 and r.json()["error"] == "password_change_required"
    r = await c.post("/api/password", json={"current": PASSWORD, "new": "short"})
    assert r.status_code == 400 and "at least 10 characters" in r.json()["detail"]
    r = await c.post("/api/password", json={"current": "wrong one!", "new": "a much better one"})
    assert r.status_code == 401
    assert (await c.post("/api/password", json={"current": PASSWORD, "new": "a much better one"})).status_code == 200
    assert (await c.get("/api/alerts")).status_code == 200
    outcomes = [a["outcome"] for a in await audit_rows(engine, action="password.change")]
    assert outcomes == ["denied", "failed", "ok"]


async def test_password_change_ends_the_other_sessions(clients, engine):
    await make_user(engine, "duty", "duty_desk")
    desk, phone = clients(), clients()
    await login(desk, "duty")
    await login(phone, "duty")
    assert (await desk.post("/api/password", json={"current": PASSWORD, "new": "night shift 2026"})).status_code == 200
    assert (await desk.get("/api/me")).status_code == 200
    r = await phone.get("/api/me")
    assert r.status_code == 401 and "log in again" in r.json()["detail"]


async def test_disabled_user_cannot_log_in_and_loses_sessions(clients, engine):
    from centre.people import sessions, users
    from centre.store.engine import write_transaction

    await make_user(engine, "wang", "volunteer")
    c = clients()
    await login(c, "wang")
    await users.set_active(engine, "wang", False)
    async with write_transaction(engine) as conn:
        await sessions.end_all(conn, 1)
    assert (await c.get("/api/me")).status_code == 401
    r = await clients().post("/api/login", json={"username": "wang", "password": PASSWORD})
    assert r.status_code == 403 and "disabled" in r.json()["detail"]
