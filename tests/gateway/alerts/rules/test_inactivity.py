"""``inactivity``: quiet hours (pause and hold), per-household schedules, restarts, clock jumps."""

from __future__ import annotations

from datetime import datetime, timezone

from gateway.alerts import config as c
from gateway.alerts import rules as r
from gateway.alerts.timeutil import Schedule, parse_window
from tests.gateway.alerts.rules.helpers import changes, rd, spec

UTC = timezone.utc


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



# --------------------------------------------------------------------------- deadband (change_by)


def test_deadband_counts_a_change_from_the_last_activity_not_from_the_last_reading():
    from gateway.alerts.rules.inactivity import deadband_activity

    band = (20.0, False)  # change_by: 20 (W)
    assert deadband_activity("change", band, None, 3.1) == (False, 3.1)  # the first reading is the reference
    ref = 3.1
    for v in (3.4, 2.8, 3.6, 2.9, 3.3) * 20:  # standby noise, however long, never adds up to 20 W
        act, ref = deadband_activity("change", band, ref, v)
        assert not act and ref == 3.1
    assert deadband_activity("change", band, 3.1, 1800.0) == (True, 1800.0)  # the kettle
    assert deadband_activity("change", band, 1800.0, 3.0) == (True, 3.0)  # and off again
    assert deadband_activity("change", band, 3.0, "n/a") == (False, 3.0)


def test_deadband_in_percent_and_on_increase():
    from gateway.alerts.rules.inactivity import deadband_activity

    pct = (0.05, True)  # change_by: "5%"
    assert deadband_activity("change", pct, 200.0, 209.0) == (False, 200.0)
    assert deadband_activity("change", pct, 200.0, 189.0) == (True, 189.0)
    assert deadband_activity("change", pct, 0.0, 0.1) == (True, 0.1), "from 0 any change counts"
    inc = (0.005, False)  # a water meter's total, m3
    assert deadband_activity("increase", inc, 10.000, 10.004) == (False, 10.0)
    assert deadband_activity("increase", inc, 10.000, 10.006) == (True, 10.006)
    assert deadband_activity("increase", inc, 10.006, 0.002) == (False, 0.002), "a reset is a new reference"


def test_noisy_power_with_change_by_lets_the_welfare_check_fire_on_time():
    s = spec(c.InactivityRule, id="welfare", type="inactivity", per="all", **{"for": 12 * 3600},
             sources=[{"device": "power-101", "point": "power", "change_by": 20}])
    noisy = spec(c.InactivityRule, id="noisy", type="inactivity", per="all", **{"for": 12 * 3600},
                 sources=[{"device": "power-101", "point": "power"}])
    rules = [r.InactivityRule(x, {"*": list(x.sources)}, {"*": Schedule([], UTC)}) for x in (s, noisy)]
    for rule in rules:
        rule.start(utc(5, 8))
    t, fired = utc(5, 8), {}
    readings = [(0, 3.2), (60, 1500.0), (120, 3.1)]  # kettle at 08:01, off at 08:02: the last activity
    readings += [(120 + 60 * i, 3.0 + 0.4 * ((i * 7) % 5) / 4) for i in range(1, 13 * 60)]  # then standby noise for 13 h
    for dt, v in readings:
        for rule in rules:
            rule.observe(rd(t + dt, "power-101", "power", v, "W"))
            for ch in rule.evaluate(t + dt):
                fired.setdefault(rule.id, ch.ts)
    assert fired.get("welfare") == t + 120 + 12 * 3600, "12 h after the kettle went off"
    assert "noisy" not in fired, "without a deadband every poll is activity: it never fires"
