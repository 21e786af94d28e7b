"""Alert texts in English and Simplified Chinese."""

from __future__ import annotations

from gateway.alerts import config as c
from gateway.alerts.messages import render, where

LOC = {"site": "sunny-court", "building": "3", "unit": "1", "household": "101", "grid": "G7"}


def test_where_reads_naturally_in_both_languages():
    assert where(LOC, "en") == "building 3, unit 1, household 101, grid G7"
    assert where(LOC, "zh") == "3栋1单元101室 网格G7"
    assert where({"zone": "e-bike-shed"}, "zh") == "e-bike-shed"
    assert where({}, "en") == ""


def test_default_templates_per_rule_type():
    dry = c.ThresholdRule.model_validate({"id": "dry", "type": "threshold", "device": "soil-1", "point": "moisture", "below": 20})
    facts = {"device": "soil-1", "point": "moisture", "value": 18.5, "unit": "%", "threshold": 20}
    assert render(dry, facts, {"zone": "zone-1"}, "warning", "en") == "[WARNING] soil-1 moisture is 18.5 %, below 20 % at zone-1"
    assert render(dry, facts, {"zone": "zone-1"}, "warning", "zh") == "【警告】zone-1 soil-1 moisture 为 18.5 %，低于 20 %"
    assert render(dry, facts, {}, "info", "en", resolved=True) == "Resolved: soil-1 moisture is 18.5 %, below 20 %"
    tap = c.FlowRule.model_validate({"id": "tap", "type": "flow", "device": "m", "point": "flow_rate", "for": "30m"})
    assert render(tap, {"device": "m", "duration": 1800}, LOC, "warning", "zh") == \
        "【警告】3栋1单元101室 网格G7用水已连续 30分钟 未停（m），可能未关水龙头或漏水"
    welfare = c.InactivityRule.model_validate({"id": "w", "type": "inactivity", "for": "12h",
                                               "sources": [{"device": "d", "point": "p"}]})
    assert render(welfare, {"duration": 43200}, LOC, "warning", "en") == \
        "[WARNING] Welfare check: no activity for 12 h; please call or visit at building 3, unit 1, household 101, grid G7"
    assert "已 12小时 无活动" in render(welfare, {"duration": 43200}, LOC, "warning", "zh")


def test_custom_templates_and_their_fallback():
    smoke = c.StateRule.model_validate({"id": "s", "type": "state", "device": "d", "point": "alarm", "to": True,
                                        "message": {"zh": "{where}（{device}）烟雾报警"}})
    assert render(smoke, {"device": "d", "value": True}, LOC, "critical", "zh") == "【紧急】3栋1单元101室 网格G7（d）烟雾报警"
    assert render(smoke, {"device": "d", "point": "alarm", "value": True}, {}, "critical", "en") == "[CRITICAL] d alarm is now on"
    broken = c.StateRule.model_construct(**{**smoke.__dict__, "message": c.Messages(en="{value:d}")})
    assert render(broken, {"device": "d", "point": "alarm", "value": True}, {}, "info", "en") == "[INFO] d alarm is now on"
