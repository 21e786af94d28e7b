"""``flow``: continuous flow from a rate point or an advancing counter."""

from __future__ import annotations

from gateway.alerts import config as c
from gateway.alerts import rules as r
from tests.gateway.alerts.rules.helpers import changes, rd, spec


def test_continuous_flow_rate_mode():
    rule = r.FlowRule(spec(c.FlowRule, id="tap", type="flow", device="m", point="flow_rate", above=0.01, **{"for": 1800}))
    rule.observe(rd(0, "m", "flow_rate", 0.0))
    t = 0
    for t in range(60, 1800, 60):  # a shower: 29 min of flow, then a stop
        rule.observe(rd(t, "m", "flow_rate", 0.4))
        assert changes(rule, t) == []
    rule.observe(rd(1800, "m", "flow_rate", 0.0))
    assert changes(rule, 1800) == []
    for t in range(1860, 1860 + 1800, 60):  # the tap left running
        rule.observe(rd(t, "m", "flow_rate", 0.45))
        assert changes(rule, t) == []
    assert rule.deadline() == 1860 + 1800
    assert changes(rule, 1860 + 1800) == [("m", True, 1860 + 1800)]
    assert changes(rule, 5000) == []  # one alert for the whole run
    rule.observe(rd(5000, "m", "flow_rate", 0.0))
    assert changes(rule, 5000) == [("m", False, 3600)]  # over since the last reading that saw flow


def test_continuous_flow_counter_mode_with_max_pause():
    rule = r.FlowRule(spec(c.FlowRule, id="leak", type="flow", device="m", point="total_volume", on="increase",
                           max_pause=30, **{"for": 300}))
    vol = 100.0
    rule.observe(rd(0, "m", "total_volume", vol))
    for t in range(10, 400, 10):
        if t % 30:  # the counter's resolution: it advances on two polls out of three
            vol += 0.001
        rule.observe(rd(t, "m", "total_volume", vol))
    assert changes(rule, 399) == [("m", True, 300)]  # the run began at t=0 (it advanced since then)
    # the last advance was at t=380 (390 is a "no change" poll)
    rule.observe(rd(400, "m", "total_volume", vol))
    rule.observe(rd(405, "m", "total_volume", vol))
    assert changes(rule, 405) == []  # pauses shorter than 30 s do not end the run
    rule.observe(rd(410, "m", "total_volume", vol))
    assert changes(rule, 410) == [("m", False, 380)]

