"""A person's language is kept in their account: PATCH /api/me changes it (audited), it outlives the session,
and it is what the next login, /api/me and the pages start in; anything but en / zh-CN is a 422 with why."""

from __future__ import annotations

from tests.centre.web.support import audit_rows, login, make_people


async def test_the_language_is_stored_and_outlives_the_session(engine, clients):
    await make_people(engine)
    duty = clients()
    await login(duty, "duty")
    assert (await duty.get("/api/me")).json()["language"] == "en"
    r = await duty.patch("/api/me", json={"language": "zh-CN"})
    assert r.status_code == 200, r.text
    assert r.json()["language"] == "zh-CN" and r.json()["csrf"]
    assert (await duty.get("/api/me")).json()["language"] == "zh-CN"  # the same session sees it at once
    assert (await duty.post("/api/logout")).status_code == 200

    again = clients("10.0.0.6")  # another browser, a new login
    r = await again.post("/api/login", json={"username": "duty", "password": "correct horse battery"})
    assert r.json()["language"] == "zh-CN"
    page = await again.get("/desk")  # the page itself is written in it, before any script runs
    assert page.status_code == 200 and '<html lang="zh-CN">' in page.text
    rows = await audit_rows(engine, actor="duty", action="me.language")
    assert [(x["outcome"], x["detail"]) for x in rows] == [("ok", {"from": "en", "to": "zh-CN"})]


async def test_a_bad_language_or_another_field_is_a_422_and_csrf_is_required(engine, clients):
    await make_people(engine)
    duty = clients()
    await login(duty, "duty")
    r = await duty.patch("/api/me", json={"language": "fr"})
    assert r.status_code == 422 and "language" in r.json()["detail"] and "zh-CN" in r.json()["detail"]
    r = await duty.patch("/api/me", json={"language": "en", "username": "root"})
    assert r.status_code == 422 and "username" in r.json()["detail"]
    r = await duty.patch("/api/me", json={"language": "zh-CN"}, headers={"X-CSRF-Token": "nope"})
    assert r.status_code == 403 and r.json()["error"] == "csrf"
    assert (await duty.get("/api/me")).json()["language"] == "en"
    anonymous = clients("10.0.0.7")
    assert (await anonymous.patch("/api/me", json={"language": "en"})).status_code == 401
