"""An alert's words in each language: the gateway's ready lines (``texts``) reach the API and the live view."""

from __future__ import annotations

from centre.ingest.alerts import fold
from tests.centre.web.support import COMMUNITY, CGW, alert_view, login, make_people, put_alerts, seed

TEXTS = {"en": "[CRITICAL] Smoke in the e-bike shed, building 3", "zh-CN": "[严重] 3号楼电动车棚有烟雾"}


def test_the_fold_keeps_the_raise_texts_and_a_rise_replaces_them():
    raised = {"type": "alert.raised", "ts": 10.0, "alert": "1-a", "status": "raised", "texts": TEXTS}
    esc = {"type": "alert.escalated", "ts": 20.0, "alert": "1-a", "status": "escalated", "step": 1,
           "texts": {"en": "Escalated to the volunteers"}}
    assert fold("s", "g", "1-a", [esc, raised])["texts"] == TEXTS  # an escalation's line is not what happened
    rise = {"type": "alert.updated", "ts": 30.0, "alert": "1-a", "texts": {"en": "Smoke and heat", "zh-CN": "烟雾和高温"}}
    assert fold("s", "g", "1-a", [raised, esc, rise])["texts"]["zh-CN"] == "烟雾和高温"
    junk = {"type": "alert.raised", "ts": 10.0, "alert": "1-a", "texts": {"en": 5, "zh-CN": ["x"]}}
    assert fold("s", "g", "1-a", [junk])["texts"] is None  # only strings are words


async def test_the_alerts_api_gives_each_language_line(engine, clients):
    await seed(engine)
    await make_people(engine)
    await put_alerts(engine, alert_view(COMMUNITY, CGW, "9-texts", severity="critical", texts=TEXTS))
    c = clients()
    await login(c, "root")
    alerts = {a["alert"]: a for a in (await c.get("/api/alerts", params={"status": "open"})).json()}
    assert alerts["9-texts"]["texts"] == TEXTS
    detail = (await c.get(f"/api/alerts/{COMMUNITY}/{CGW}/9-texts")).json()
    assert detail["alert"]["texts"]["zh-CN"] == TEXTS["zh-CN"]
