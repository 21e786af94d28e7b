"""Incidents: the community's three smoke rules make ONE alert per detector, its severity rising, with one ack.

The rules are the ones shipped in config/community.yaml (smoke-alarm, smoke-haze,
heat-rising, smoulder), run on a FakeClock; escalation is the community's fire
chain (property office, volunteers after 2 min, grid leader after 5 min).
"""

from __future__ import annotations

import pytest
import yaml

from gateway.alerts.texts import fmt_time
from tests.gateway.alerts.support import GROUPS, Harness, ack, chain, load_site
from tests.support import ROOT

SMOKE_RULES = ("smoke-alarm", "smoke-haze", "heat-rising", "smoulder")
SMOKE_TEXT = {"en": "Smoke in the {place}: {label}", "zh": "{place}发现烟雾：{label}"}
LABELED = {**GROUPS, "volunteers": {**GROUPS["volunteers"], "labels": {"en": "the building volunteers", "zh-CN": "楼栋志愿者"}}}


def community_smoke_rules() -> list[dict]:
    """The shipped smoke rules, each with ``incident: smoke`` (added here if the file does not have it yet)."""
    shipped = yaml.safe_load((ROOT / "config" / "community.yaml").read_text(encoding="utf-8"))["rules"]["rules"]
    out = []
    for r in shipped:
        if r["id"] in SMOKE_RULES:
            out.append(r if r["id"] == "heat-rising" or "incident" in r else {**r, "incident": "smoke"})
    assert [r["id"] for r in out] == list(SMOKE_RULES)
    return out


def site(tmp_path, on_rise: str = "restart", groups=GROUPS, timezone: str | None = None, **kw):
    devices = [  # the community's detectors, with what people call them
        {"id": "smoke-shed", "unit": 1, "profile": "smoke_gas_detector", "poll_interval": 1,
         "location": {"building": "7", "zone": "e-bike shed"}, "labels": {"en": "shed detector", "zh-CN": "车棚烟感"}},
        {"id": "smoke-hall", "unit": 2, "profile": "smoke_gas_detector", "poll_interval": 1, "location": {"building": "7", "zone": "hall"}},
        {"id": "sounder", "unit": 30, "profile": "relay_module", "poll_interval": 1, "location": {"building": "7"}},
    ]
    rules = {"groups": groups, "classes": {"fire": chain(0, 120, 300)}, "rules": community_smoke_rules(),
             "incidents": {"smoke": {"on_rise": on_rise, "message": SMOKE_TEXT}}, **({"timezone": timezone} if timezone else {})}
    return load_site(tmp_path, rules, devices=devices, **kw)


async def haze(h: Harness, device: str = "smoke-shed", seconds: float = 11) -> None:
    """Smoke density above 1.0 %obs/m for longer than smoke-haze's delay_on (10 s)."""
    for _ in range(int(seconds)):
        h.feed(device, "smoke_density", 1.4, "%obs/m")
        await h.advance(1)


async def test_one_smoke_event_is_one_alert_whose_severity_rises_as_rules_join_with_one_ack(tmp_path):
    h = Harness(site(tmp_path))
    h.feed("smoke-shed", "alarm", False)
    h.feed("smoke-shed", "temperature", 20.0, "degC")
    await haze(h)
    raised = h.of("alert.raised")
    assert len(raised) == 1 and raised[0]["severity"] == "warning" and raised[0]["rule"] == "smoke-haze"
    assert raised[0]["incident"] == "smoke" and raised[0]["rules"] == ["smoke-haze"]
    assert h.writes == []  # haze alone sounds nothing

    h.feed("smoke-shed", "alarm", True)  # the detector's own alarm: critical
    await h.settle()
    updated = h.of("alert.updated")
    assert len(updated) == 1 and len(h.of("alert.raised")) == 1
    up = updated[0]
    assert (up["alert"], up["previous_severity"], up["severity"], up["status"]) == (raised[0]["alert"], "warning", "critical", "raised")
    assert up["rules"] == ["smoke-haze", "smoke-alarm"] and up["topic"] == "event alert/property-office"
    assert h.lanes("alert.updated") == {"alarm"}
    assert up["texts"]["en"] == "Now CRITICAL (was WARNING): [CRITICAL] Smoke in the e-bike shed, building 7: shed detector"
    assert up["texts"]["zh-CN"] == "已升级为紧急（原为警告）：【紧急】7栋 e-bike shed发现烟雾：车棚烟感"
    assert "smoke-alarm" not in up["texts"]["en"] and up["message_key"] == "incident:smoke"
    assert sorted(h.writes) == [("sounder", "beacon", True), ("sounder", "sounder", True)]

    for t in range(20, 60, 5):  # the temperature rises: heat-rising, then smoulder joins (already critical)
        h.feed("smoke-shed", "temperature", float(t), "degC")
        h.feed("smoke-shed", "smoke_density", 1.6, "%obs/m")
        await h.advance(5)
    assert len(h.of("alert.raised")) == 1 and len(h.of("alert.updated")) == 1
    assert list(h.engine.alerts.values())[0].rules == ["smoke-haze", "smoke-alarm", "smoulder"]

    ack(h, raised[0]["alert"], by="duty-desk")
    await h.settle()
    assert len(h.of("alert.acknowledged")) == 1
    assert ("sounder", "sounder", False) in h.writes and ("sounder", "beacon", False) in h.writes
    await h.advance(600, step=30)
    assert h.of("alert.escalated") == [], "acknowledged within the first step"
    # everything clears; smoke-alarm latches (resolve: ack), so the incident stays open until closed by an ack
    h.feed("smoke-shed", "alarm", False)
    for _ in range(80):
        h.feed("smoke-shed", "smoke_density", 0.1, "%obs/m")
        h.feed("smoke-shed", "temperature", 59.0, "degC")
        await h.advance(1)
    assert h.of("alert.resolved") == [] and list(h.engine.alerts.values())[0].condition is False
    ack(h, raised[0]["alert"], by="duty-desk", resolve=True)
    await h.settle()
    assert h.of("alert.resolved")[0]["resolved_by"] == "ack:duty-desk"
    assert len([r for _, r in h.records if r["type"] in ("alert.raised", "alert.acknowledged")]) == 2


async def test_each_detector_is_its_own_incident(tmp_path):
    h = Harness(site(tmp_path))
    for dev in ("smoke-shed", "smoke-hall"):
        h.feed(dev, "alarm", False)
        h.feed(dev, "alarm", True)
    await h.settle()
    assert sorted(r["subject"] for r in h.of("alert.raised")) == ["smoke-hall", "smoke-shed"]
    hall = h.of("alert.raised", subject="smoke-hall")[0]
    assert hall["texts"]["en"] == "[CRITICAL] Smoke in the hall, building 7: smoke-hall"  # no label: the device id


@pytest.mark.parametrize("on_rise,volunteers_at,grid_at", [("restart", 50 + 120, 50 + 300), ("next", 50, 50 + 180),
                                                            ("keep", 120, 300)])
async def test_a_rise_restarts_or_shortens_escalation_as_configured(tmp_path, on_rise, volunteers_at, grid_at):
    h = Harness(site(tmp_path, on_rise))
    h.feed("smoke-shed", "alarm", False)
    await haze(h, seconds=10)  # raised at t0 + 10 (delay_on)
    t0 = h.of("alert.raised")[0]["raised_at"]
    await h.advance(50, step=5)
    for _ in range(2):
        h.feed("smoke-shed", "smoke_density", 1.4, "%obs/m")
        h.feed("smoke-shed", "alarm", True)
        await h.settle()
    assert h.of("alert.updated")[0]["ts"] == t0 + 50  # the rise, 50 s after the raise
    for _ in range(70):
        h.feed("smoke-shed", "smoke_density", 1.4, "%obs/m")
        await h.advance(5)
    steps = [(r["step"], round(r["ts"] - t0)) for r in h.of("alert.escalated")]
    assert steps == [(1, volunteers_at), (2, grid_at)], steps


async def test_a_rise_re_arms_an_acknowledged_alert(tmp_path):
    h = Harness(site(tmp_path))
    h.feed("smoke-shed", "alarm", False)
    await haze(h)
    alert_id = h.of("alert.raised")[0]["alert"]
    ack(h, alert_id, by="guard-zhang", note="checking the shed")
    await h.settle()
    h.feed("smoke-shed", "alarm", True)
    await h.settle()
    assert h.of("alert.updated")[0]["status"] == "raised", "re-armed: the ack no longer holds"
    assert ("sounder", "sounder", True) in h.writes
    ack(h, alert_id, by="duty-desk")
    await h.settle()
    assert [r["by"] for r in h.of("alert.acknowledged")] == ["guard-zhang", "duty-desk"]
    assert h.engine.counters["updated"] == 1


async def test_lifecycle_records_say_what_happened_in_words_with_dates_and_zones(tmp_path):
    h = Harness(site(tmp_path, groups=LABELED, language="zh", timezone="Asia/Shanghai"))
    h.feed("smoke-shed", "alarm", False)
    h.feed("smoke-shed", "alarm", True)
    await h.settle()
    await h.advance(120)
    esc = h.of("alert.escalated")[0]
    assert esc["texts"]["en"] == "Escalated to the building volunteers (not acknowledged after 2 min): [CRITICAL] Smoke in the e-bike shed, building 7: shed detector"
    assert esc["texts"]["zh-CN"].startswith("已升级至楼栋志愿者（2分钟内无人确认）：【紧急】")
    assert esc["message"] == esc["texts"]["zh-CN"].split("：", 1)[1] and esc["lang"] == "zh"
    ack(h, esc["alert"], by="vol-wang")
    await h.settle()
    acked = h.of("alert.acknowledged")[0]
    when = fmt_time(acked["ts"], h.engine.wording.tz, "en")
    assert acked["texts"]["en"].startswith(f"Acknowledged by vol-wang at {when}: ")
    assert when.endswith("UTC+08:00 (Asia/Shanghai)") and when[:4] == "2023"
    assert acked["params"]["building"] == "7" and acked["message_key"] == "incident:smoke"


def test_times_for_people_carry_date_and_zone():
    from zoneinfo import ZoneInfo

    t = 1_795_348_922.0  # 2026-11-22 12:02:02 UTC
    assert fmt_time(t, ZoneInfo("Asia/Shanghai"), "en") == "2026-11-22 20:02:02 UTC+08:00 (Asia/Shanghai)"
    assert fmt_time(t, ZoneInfo("Asia/Shanghai"), "zh") == "2026-11-22 20:02:02（Asia/Shanghai，UTC+08:00）"
    assert fmt_time(t, ZoneInfo("UTC"), "en") == "2026-11-22 12:02:02 UTC+00:00 (UTC)"
    assert fmt_time(t, ZoneInfo("America/New_York"), "en") == "2026-11-22 07:02:02 UTC-05:00 (America/New_York)"


async def test_an_incident_survives_a_restart_and_later_rules_still_join_it(tmp_path):
    cfg = site(tmp_path)
    h = Harness(cfg, state_dir=str(tmp_path))
    h.feed("smoke-shed", "alarm", False)
    h.feed("smoke-shed", "alarm", True)
    await h.settle()
    alert_id = h.of("alert.raised")[0]["alert"]
    h2 = Harness(cfg, state_dir=str(tmp_path), clock=h.clock)
    h2.feed("smoke-shed", "alarm", True)
    await haze(h2)
    assert h2.of("alert.raised") == [] and h2.of("alert.updated") == []
    restored = h2.engine.alerts[alert_id]
    assert restored.rules == ["smoke-alarm", "smoke-haze"] and restored.incident == "smoke" and restored.open
    ack(h2, alert_id, by="duty-desk", resolve=True)
    await h2.settle()
    assert h2.of("alert.resolved")[0]["rules"] == ["smoke-alarm", "smoke-haze"]
