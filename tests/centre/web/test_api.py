"""What the API answers: sites and gateways, an alert's timeline, readings, commands, errors, OpenAPI, health, metrics."""

from __future__ import annotations

import pytest

from tests.centre.web.support import CGW, COMMUNITY, FARM, FGW, login, make_people, seed


@pytest.fixture
async def root(engine, clients):
    await seed(engine)
    await make_people(engine)
    c = clients()
    await login(c, "root")
    return c


async def test_sites_and_gateways_with_online_state_and_reason(root):
    sites = {s["site"]: s for s in (await root.get("/api/sites")).json()}
    assert (sites[COMMUNITY]["online"], sites[FARM]["offline"], sites[FARM]["unknown"]) == (1, 1, 0)
    gws = (await root.get("/api/gateways")).json()
    assert [(g["gateway"], g["online"], g["reason"]) for g in gws] == [(FGW, False, "connection lost"), (CGW, True, None)]
    assert "meta" not in gws[0]
    one = (await root.get(f"/api/gateways/{COMMUNITY}/{CGW}")).json()
    assert one["version"] == "0.2.0" and one["meta"] == {"devices": []} and one["capabilities"] == ["replay"]
    r = await root.get(f"/api/gateways/{COMMUNITY}/nope")
    assert r.status_code == 404 and r.json() == {"error": "not_found", "detail": f"no gateway nope at site {COMMUNITY} has been seen"}


async def test_alert_with_its_timeline(root):
    body = (await root.get(f"/api/alerts/{COMMUNITY}/{CGW}/1-smoke")).json()
    assert body["alert"]["class"] == "fire" and body["alert"]["location"]["household"] == "101"
    assert [(i["type"], i["group"], i["recipients"]) for i in body["timeline"]] == [
        ("alert.raised", "property-office", ["duty"]), ("alert.escalated", "volunteers", ["volunteer-wang"])]
    open_ = (await root.get("/api/alerts", params={"site": COMMUNITY})).json()
    assert [a["severity"] for a in open_] == ["critical", "warning"]


async def test_latest_readings_and_series(root):
    latest = (await root.get("/api/readings/latest", params={"site": FARM})).json()
    assert [(r["device"], r["point"], r["value"], r["unit"]) for r in latest] == [("soil-1", "moisture", 24.0, "%")]
    q = {"site": FARM, "gateway": FGW, "device": "soil-1", "point": "moisture"}
    raw = (await root.get("/api/readings/series", params=q)).json()
    assert [p["value"] for p in raw["raw"]] == [21.0, 22.0, 23.0, 24.0] and raw["unit"] == "%" and not raw["truncated"]
    two = (await root.get("/api/readings/series", params={**q, "limit": 2})).json()
    assert [p["value"] for p in two["raw"]] == [23.0, 24.0] and two["truncated"]
    hourly = (await root.get("/api/readings/series", params={**q, "resolution": "hourly"})).json()
    assert [(h["mean"], h["max"]) for h in hourly["hourly"]] == [(20.5, 23.0), (20.25, 22.0), (20.0, 21.0)]


async def test_commands_and_their_status(root):
    cmds = (await root.get("/api/commands", params={"site": FARM})).json()
    assert [(c["id"], c["status"], c["intent"]) for c in cmds] == [("cmd-1", "pending", "irrigate zone 2 for 20 min")]
    assert "envelope" not in cmds[0]
    one = (await root.get("/api/commands/ack-1")).json()
    assert one["kind"] == "ack" and one["on_behalf_of"] == "wang" and "envelope" in one
    assert (await root.get("/api/commands/none")).status_code == 404


async def test_bad_input_is_a_json_error_never_a_traceback(root):
    r = await root.get("/api/alerts", params={"state": "everything", "limit": 0})
    assert r.status_code == 422 and r.json()["error"] == "invalid"
    assert "query.state" in r.json()["detail"] and "query.limit" in r.json()["detail"]
    r = await root.get("/api/readings/series", params={"site": FARM})
    assert r.status_code == 422 and "query.gateway: Field required" in r.json()["detail"]
    r = await root.get("/api/nowhere")
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    r = await root.post("/api/password", content=b"x" * 70_000, headers={"content-type": "application/json"})
    assert r.status_code == 413


async def test_unexpected_errors_are_json_with_a_reference(root, app, monkeypatch):
    from centre.web.api import gateways

    def broken(*a, **k):
        raise RuntimeError("boom")
    monkeypatch.setattr(gateways, "at_sites", broken)
    r = await root.get("/api/gateways")
    assert r.status_code == 500 and r.json()["error"] == "internal" and "reference" in r.json()["detail"]
    assert "boom" not in r.text and "Traceback" not in r.text


async def test_openapi_is_served_to_logged_in_users(root, clients):
    spec = (await root.get("/api/openapi.json")).json()
    assert {"/api/alerts", "/api/stream", "/api/login", "/health", "/metrics"} <= set(spec["paths"])
    assert "AlertOut" in spec["components"]["schemas"]
    assert (await clients().get("/api/openapi.json")).status_code == 401


async def test_health_and_metrics_without_login(engine, clients):
    await seed(engine)
    c = clients()
    h = await c.get("/health")
    assert h.status_code == 200 and h.json()["database"] == "ok"
    m = await c.get("/metrics")
    assert m.status_code == 200 and m.headers["content-type"].startswith("text/plain")
    text = m.text
    for line in ('canopy_centre_commands_pending{status="pending"} 1.0', 'canopy_centre_commands_pending{status="sent"} 1.0',
                 'canopy_centre_alerts_open{severity="critical"} 1.0', 'canopy_centre_gateways{status="offline"} 1.0',
                 "canopy_centre_streams_open 0.0"):
        assert line in text, line
    size = next(float(x.split()[1]) for x in text.splitlines() if x.startswith("canopy_centre_database_size_bytes "))
    assert size > 10_000
    rate = next(float(x.split()[1]) for x in text.splitlines() if x.startswith("canopy_centre_records_per_second "))
    assert rate > 0  # the community's door reading is 30 s old
    assert 'canopy_centre_ingest_lag_seconds{stat="max"} 1.0' in text
    assert "alert" not in h.text and "sunny-court" not in text  # nothing about people or places
