"""``state``: edges, with and without ``from``."""

from __future__ import annotations

from gateway.alerts import config as c
from gateway.alerts import rules as r
from tests.gateway.alerts.rules.helpers import changes, rd, spec


def test_state_edge_with_from_needs_the_transition():
    rule = r.StateRule(spec(c.StateRule, id="opened", type="state", device="door", point="door_open", to=True, **{"from": False}))
    rule.observe(rd(0, "door", "door_open", True))  # already open when first seen: no edge
    assert changes(rule, 0) == []
    rule.observe(rd(1, "door", "door_open", False))
    rule.observe(rd(2, "door", "door_open", True))
    assert changes(rule, 2) == [("door", True, 2)]
    rule.observe(rd(3, "door", "door_open", True))
    assert changes(rule, 3) == []
    rule.observe(rd(4, "door", "door_open", False))
    assert changes(rule, 4) == [("door", False, 4)]


def test_state_without_from_and_delay_on_is_door_left_open():
    rule = r.StateRule(spec(c.StateRule, id="left-open", type="state", device="door", point="door_open", to=True, delay_on=600))
    rule.observe(rd(0, "door", "door_open", True))
    assert changes(rule, 599) == []
    assert changes(rule, 600) == [("door", True, 600)]


def test_state_does_not_confuse_one_with_true():
    rule = r.StateRule(spec(c.StateRule, id="s", type="state", device="d", point="p", to=True))
    rule.observe(rd(0, "d", "p", 1))
    assert changes(rule, 0) == []

