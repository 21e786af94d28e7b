"""``all`` / ``any``: composition per device and site-wide, with debounce and restore."""

from __future__ import annotations

from gateway.alerts import config as c
from gateway.alerts import rules as r
from tests.gateway.alerts.rules.helpers import rd, spec


def smoke_and_heat(kind="all", same_device=True):
    smoke = r.StateRule(spec(c.StateRule, id="smoke", type="state", devices=["s1", "s2"], point="alarm", to=True))
    heat = r.RateRule(spec(c.RateRule, id="heat", type="rate", devices=["s1", "s2"], point="temp", rise=2, window=60))
    comp = r.CompositeRule(spec(c.AllRule if kind == "all" else c.AnyRule, id="fire", type=kind, of=["smoke", "heat"],
                                same_device=same_device), [smoke, heat])
    return r.RuleSet([smoke, heat, comp]), comp


def test_all_of_smoke_and_rising_temperature_on_the_same_device():
    rs, comp = smoke_and_heat()
    for dev in ("s1", "s2"):
        rs.observe(rd(0, dev, "alarm", False))
        rs.observe(rd(0, dev, "temp", 20.0))
    rs.observe(rd(1, "s1", "alarm", True))  # smoke alone
    rs.observe(rd(1, "s2", "temp", 23.0))  # heat alone, on another detector
    got = [(ch.rule, ch.subject, ch.active) for ch in rs.evaluate(1)]
    assert ("fire", "s1", True) not in got and ("fire", "s2", True) not in got
    assert ("smoke", "s1", True) in got and ("heat", "s2", True) in got
    rs.observe(rd(2, "s1", "temp", 23.0))
    got = [(ch.rule, ch.subject, ch.active) for ch in rs.evaluate(2)]
    assert ("fire", "s1", True) in got
    fire = [ch for ch in rs.evaluate(2)]
    assert fire == []
    ev = comp.evidence["s1"]
    assert {e["point"] for e in ev} == {"alarm", "temp"}
    assert comp.facts["s1"]["components"] == "smoke, heat"
    rs.observe(rd(3, "s1", "alarm", False))
    assert [(ch.rule, ch.subject, ch.active) for ch in rs.evaluate(3) if ch.rule == "fire"] == [("fire", "s1", False)]


def test_site_wide_all_and_any():
    rs, comp = smoke_and_heat("all", same_device=False)
    for dev in ("s1", "s2"):
        rs.observe(rd(0, dev, "alarm", False))
        rs.observe(rd(0, dev, "temp", 20.0))
    rs.observe(rd(1, "s1", "alarm", True))
    rs.observe(rd(1, "s2", "temp", 23.0))
    assert ("fire", "*", True) in [(ch.rule, ch.subject, ch.active) for ch in rs.evaluate(1)]
    rs2, _ = smoke_and_heat("any", same_device=False)
    rs2.observe(rd(0, "s2", "alarm", False))
    rs2.observe(rd(1, "s2", "alarm", True))
    assert ("fire", "*", True) in [(ch.rule, ch.subject, ch.active) for ch in rs2.evaluate(1)]


def test_composition_debounce_and_restore():
    smoke = r.StateRule(spec(c.StateRule, id="smoke", type="state", device="s1", point="alarm", to=True))
    comp = r.CompositeRule(spec(c.AnyRule, id="any-smoke", type="any", of=["smoke"], delay_on=5), [smoke])
    rs = r.RuleSet([smoke, comp])
    rs.observe(rd(0, "s1", "alarm", True))
    assert [ch.rule for ch in rs.evaluate(0)] == ["smoke"]
    assert rs.deadline() == 5
    assert [(ch.rule, ch.ts) for ch in rs.evaluate(5)] == [("any-smoke", 5)]
    # after a restart the open episode is restored: no new "active" change
    smoke2 = r.StateRule(smoke.spec)
    comp2 = r.CompositeRule(comp.spec, [smoke2])
    smoke2.restore("s1", True)
    comp2.restore("*", True)
    rs2 = r.RuleSet([smoke2, comp2])
    rs2.observe(rd(10, "s1", "alarm", True))
    assert rs2.evaluate(10) == []

