"""``threshold``: hysteresis, debounce, non-numbers."""

from __future__ import annotations

from gateway.alerts import config as c
from gateway.alerts import rules as r
from tests.gateway.alerts.rules.helpers import changes, rd, spec


def test_threshold_hysteresis_clears_only_past_the_band():
    rule = r.ThresholdRule(spec(c.ThresholdRule, id="dry", type="threshold", device="soil-1", point="moisture",
                                below=20, hysteresis=2))
    for t, v, want in [(0, 25.0, []), (1, 19.9, [("soil-1", True, 1)]), (2, 21.0, []), (3, 21.9, []),
                       (4, 19.0, []), (5, 22.0, [("soil-1", False, 5)]), (6, 21.0, []), (7, 19.5, [("soil-1", True, 7)])]:
        rule.observe(rd(t, "soil-1", "moisture", v, "%"))
        assert changes(rule, t) == want, f"t={t} v={v}"


def test_threshold_debounce_delay_on_and_delay_off():
    rule = r.ThresholdRule(spec(c.ThresholdRule, id="hot", type="threshold", device="d", point="t",
                                above=30, delay_on=10, delay_off=5))
    rule.observe(rd(0, "d", "t", 31))
    assert changes(rule, 9.9) == []
    rule.observe(rd(5, "d", "t", 29))  # a blip shorter than delay_on: nothing
    rule.observe(rd(6, "d", "t", 31))
    assert changes(rule, 15) == []
    assert rule.deadline() == 16
    assert changes(rule, 16) == [("d", True, 16)]  # held for 10 s from t=6
    rule.observe(rd(20, "d", "t", 25))
    rule.observe(rd(22, "d", "t", 35))  # back before delay_off ran out: still one episode
    assert changes(rule, 26) == []
    rule.observe(rd(30, "d", "t", 25))
    assert changes(rule, 34) == []
    assert changes(rule, 35) == [("d", False, 35)]


def test_threshold_ignores_non_numbers_and_keeps_subjects_apart():
    rule = r.ThresholdRule(spec(c.ThresholdRule, id="hot", type="threshold", devices=["a", "b"], point="t", above=1))
    rule.observe(rd(0, "a", "t", "n/a"))
    rule.observe(rd(0, "a", "t", float("nan")))
    rule.observe(rd(0, "b", "t", 5))
    rule.observe(rd(0, "b", "other", 5))
    assert changes(rule, 0) == [("b", True, 0)]
    assert rule.active_subjects() == ["b"]
    ch = rule._change("b", True, 0)
    assert ch.evidence == [{"device": "b", "point": "t", "value": 5, "ts": 0}]
    assert ch.facts["threshold"] == 1

