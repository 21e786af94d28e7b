"""Rule logic is pure: readings and timestamps in, condition changes out.

No clock, no loop: every test drives time with plain numbers.
"""

from __future__ import annotations

from datetime import datetime, timezone

from core.records import Reading
from gateway.alerts import config as c
from gateway.alerts import rules as r
from gateway.alerts.timeutil import Schedule, parse_window

UTC = timezone.utc


def rd(ts, device, point, value, unit=""):
    return Reading(ts, device, point, value, unit)


def changes(rule, now):
    return [(ch.subject, ch.active, ch.ts) for ch in rule.evaluate(now)]


def spec(model, **kw):
    return model.model_validate(kw)


# --------------------------------------------------------------------------- threshold


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


# --------------------------------------------------------------------------- rate, state


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


# --------------------------------------------------------------------------- continuous flow


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


# --------------------------------------------------------------------------- stale device


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


# --------------------------------------------------------------------------- inactivity


def inactivity(quiet="pause", hours=12.0, schedules=None, per="household"):
    s = spec(c.InactivityRule, id="welfare", type="inactivity", per=per, quiet=quiet, **{"for": hours * 3600},
             sources=[{"device": "door-101", "point": "door_open"}, {"device": "meter-101", "point": "flow_rate", "above": 0.01},
                      {"device": "door-102", "point": "door_open"}])
    groups = {"101": [s.sources[0], s.sources[1]], "102": [s.sources[2]]}
    night = Schedule([parse_window("22:00-07:00")], UTC)
    return r.InactivityRule(s, groups, schedules or {"101": night, "102": night})


def utc(d, h, m=0):
    return datetime(2024, 3, d, h, m, tzinfo=UTC).timestamp()


def test_inactivity_pause_counts_only_waking_hours_across_midnight():
    rule = inactivity()
    rule.start(utc(5, 8))
    rule.observe(rd(utc(5, 19), "door-101", "door_open", False))
    rule.observe(rd(utc(5, 20), "door-101", "door_open", True))  # last activity 20:00
    rule.observe(rd(utc(5, 20), "door-102", "door_open", False))
    rule.observe(rd(utc(5, 20, 1), "door-102", "door_open", True))  # 102: last activity 20:01
    # nothing during the night, although 12 h pass at 08:00
    for h in (21, 23):
        assert changes(rule, utc(5, h)) == []
    for h in range(0, 17):
        assert changes(rule, utc(6, h)) == [], f"alert at {h}:00 (quiet hours or not yet 12 waking hours)"
    assert rule.deadline() == utc(6, 17)
    assert changes(rule, utc(6, 17)) == [("101", True, utc(6, 17))]
    assert changes(rule, utc(6, 17, 1)) == [("102", True, utc(6, 17, 1))]
    assert changes(rule, utc(6, 23)) == []  # one alert per household, no storm
    # water running in 101 ends its episode
    rule.observe(rd(utc(6, 23, 30), "meter-101", "flow_rate", 0.3))
    assert changes(rule, utc(6, 23, 30)) == [("101", False, utc(6, 23, 30))]
    assert rule.evidence["101"][0]["device"] == "meter-101"


def test_inactivity_hold_counts_the_night_but_waits_for_its_end():
    rule = inactivity(quiet="hold", hours=8)
    rule.start(utc(5, 8))
    rule.observe(rd(utc(5, 18), "door-101", "door_open", False))
    rule.observe(rd(utc(5, 19), "door-101", "door_open", True))  # 8 h later is 03:00, inside quiet hours
    assert changes(rule, utc(5, 16)) == [("102", True, utc(5, 16))]  # 102: silent since 08:00, 8 h at 16:00
    assert changes(rule, utc(6, 3)) == []
    assert changes(rule, utc(6, 6, 59)) == []
    assert rule.due("101") == utc(6, 7)
    assert changes(rule, utc(6, 7)) == [("101", True, utc(6, 7))]
    assert changes(rule, utc(6, 23)) == []  # stays on into the next night: still no activity


def test_inactivity_per_household_schedules():
    early = Schedule([parse_window("20:00-06:00")], UTC)
    night = Schedule([parse_window("22:00-07:00")], UTC)
    rule = inactivity(hours=2, schedules={"101": early, "102": night})
    rule.start(utc(5, 19))  # both households silent since 19:00
    assert changes(rule, utc(5, 21)) == [("102", True, utc(5, 21))]  # 102 was awake 19-21
    assert changes(rule, utc(6, 6, 59)) == []  # 101: 1 h before 20:00, then quiet until 06:00
    assert changes(rule, utc(6, 7)) == [("101", True, utc(6, 7))]


def test_inactivity_first_reading_is_not_activity_and_restart_keeps_the_clock():
    rule = inactivity(hours=1)
    rule.start(utc(5, 10))
    rule.observe(rd(utc(5, 10), "door-101", "door_open", True))  # first sight: a state, not a change
    assert rule.last_activity == {}
    rule.observe(rd(utc(5, 10, 30), "door-101", "door_open", False))
    saved = rule.dump()
    again = inactivity(hours=1)
    again.start(utc(5, 11))  # restarted half an hour later
    again.load(saved)
    assert again.due("101") == utc(5, 11, 30)


def test_wall_clock_going_back_counts_nothing():
    rule = inactivity(hours=1)
    rule.start(utc(5, 10))
    rule.observe(rd(utc(5, 10), "door-101", "door_open", True))
    rule.observe(rd(utc(5, 10, 1), "door-101", "door_open", False))
    assert rule.inactive_for("101", utc(5, 9)) == 0
    assert changes(rule, utc(5, 9)) == []


# --------------------------------------------------------------------------- composition


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
