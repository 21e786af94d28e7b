"""``rate``: a rise or a fall within a window."""

from __future__ import annotations

from gateway.alerts import config as c
from gateway.alerts import rules as r
from tests.gateway.alerts.rules.helpers import changes, rd, spec


def test_rate_of_change_over_a_window():
    rule = r.RateRule(spec(c.RateRule, id="heat", type="rate", device="d", point="temp", rise=3, window=60))
    for t, v in [(0, 20.0), (20, 21.0), (40, 22.0), (80, 22.9)]:  # 2.9 within 60 s (20 -> 80 is 21 -> 22.9)
        rule.observe(rd(t, "d", "temp", v))
        assert changes(rule, t) == []
    rule.observe(rd(100, "d", "temp", 25.5))  # 22 (t=40) -> 25.5 within 60 s
    assert changes(rule, 100) == [("d", True, 100)]
    assert rule.facts["d"]["change"] == 3.5
    rule.observe(rd(200, "d", "temp", 25.6))  # old samples left the window
    assert changes(rule, 200) == [("d", False, 200)]


def test_rate_fall():
    rule = r.RateRule(spec(c.RateRule, id="drop", type="rate", device="tank", point="level", fall=0.5, window=30))
    rule.observe(rd(0, "tank", "level", 2.0))
    rule.observe(rd(10, "tank", "level", 1.4))
    assert changes(rule, 10) == [("tank", True, 10)]

