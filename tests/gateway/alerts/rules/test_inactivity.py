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

