"""``stale``: no valid reading for N poll intervals."""

from __future__ import annotations

from gateway.alerts import config as c
from gateway.alerts import rules as r
from tests.gateway.alerts.rules.helpers import changes, rd, spec


def test_stale_device_after_n_poll_intervals():
    rule = r.StaleRule(spec(c.StaleRule, id="silent", type="stale", devices=["a", "b"], intervals=3), {"a": 5.0, "b": 60.0})
    rule.start(1000)
    rule.observe(rd(1000, "a", "x", 1))
    rule.observe(rd(1010, "a", "x", 1))
    assert changes(rule, 1024.9) == []
    assert rule.deadline() == 1025
    assert changes(rule, 1025) == [("a", True, 1025)]
    assert changes(rule, 1179) == []
    assert changes(rule, 1180) == [("b", True, 1180)]  # never heard of: counted from the start
    rule.observe(rd(1200, "a", "x", 1))
    assert changes(rule, 1200) == [("a", False, 1200)]

