"""Durations and quiet hours: pure arithmetic on timestamps."""

from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest

from gateway.alerts.timeutil import Schedule, fmt_duration, parse_duration, parse_window

UTC = timezone.utc
SH = ZoneInfo("Asia/Shanghai")


def at(y, mo, d, h=0, mi=0, s=0, tz=UTC) -> float:
    return datetime(y, mo, d, h, mi, s, tzinfo=tz).timestamp()


@pytest.mark.parametrize("text,seconds", [
    (90, 90.0), (2.5, 2.5), ("90", 90.0), ("90s", 90.0), ("5m", 300.0), ("5min", 300.0), ("12h", 43200.0),
    ("1h30m", 5400.0), ("2d", 172800.0), ("500ms", 0.5), (" 1h 30m ", 5400.0),
])
def test_durations_parse(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["soon", "5 parsecs", "-5s", "h", "", True, None, [1]])
def test_bad_durations_say_how_to_write_one(bad):
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


def test_durations_read_well_in_both_languages():
    assert fmt_duration(43200) == "12 h"
    assert fmt_duration(5400) == "1 h 30 min"
    assert fmt_duration(45) == "45 s"
    assert fmt_duration(43200, "zh") == "12小时"
    assert fmt_duration(5400, "zh") == "1小时30分钟"
    assert fmt_duration(0, "zh") == "0秒"


def test_window_across_midnight_is_quiet_on_both_sides():
    night = Schedule([parse_window("22:00-07:00")], UTC)
    assert night.is_quiet(at(2024, 3, 5, 23, 30))
    assert night.is_quiet(at(2024, 3, 6, 0, 0))
    assert night.is_quiet(at(2024, 3, 6, 6, 59, 59))
    assert not night.is_quiet(at(2024, 3, 6, 7, 0))
    assert not night.is_quiet(at(2024, 3, 5, 21, 59))
    # 20:00 -> 10:00 next day: 14 h, of which 22:00-07:00 (9 h) is quiet
    assert night.quiet_seconds(at(2024, 3, 5, 20), at(2024, 3, 6, 10)) == 9 * 3600
    assert night.active_seconds(at(2024, 3, 5, 20), at(2024, 3, 6, 10)) == 5 * 3600
    assert night.quiet_until(at(2024, 3, 6, 1)) == at(2024, 3, 6, 7)
    assert night.quiet_until(at(2024, 3, 6, 12)) == at(2024, 3, 6, 12)


def test_when_active_reaches_skips_the_night():
    night = Schedule([parse_window("22:00-07:00")], UTC)
    # last activity 20:00; 12 waking hours: 2 h before 22:00, then 10 h from 07:00 -> 17:00 next day
    assert night.when_active_reaches(at(2024, 3, 5, 20), 12 * 3600) == at(2024, 3, 6, 17)
    # starting inside the quiet hours counts from their end
    assert night.when_active_reaches(at(2024, 3, 6, 3), 3600) == at(2024, 3, 6, 8)
    # no quiet hours at all: plain addition
    assert Schedule([], UTC).when_active_reaches(100.0, 50.0) == 150.0


def test_windows_on_some_weekdays_and_seconds_precision():
    # 2024-03-08 is a Friday
    weekend_nights = Schedule([parse_window({"from": "23:00", "to": "09:00", "days": ["fri", "sat"]})], UTC)
    assert weekend_nights.is_quiet(at(2024, 3, 9, 8))  # Saturday morning, window started Friday
    assert not weekend_nights.is_quiet(at(2024, 3, 7, 23, 30))  # Thursday night
    precise = Schedule([parse_window("10:00:00-10:00:05")], UTC)
    assert precise.quiet_seconds(at(2024, 3, 5, 9), at(2024, 3, 5, 11)) == 5


def test_time_zone_shifts_the_windows():
    night = Schedule([parse_window("22:00-07:00")], SH)  # UTC+8
    assert night.is_quiet(at(2024, 3, 5, 14, 30))  # 22:30 in Shanghai
    assert not night.is_quiet(at(2024, 3, 5, 0, 0))  # 08:00 in Shanghai


def test_overlapping_windows_merge_and_a_whole_week_is_detected():
    s = Schedule([parse_window("20:00-02:00"), parse_window("01:00-08:00")], UTC)
    assert s.quiet_seconds(at(2024, 3, 5, 12), at(2024, 3, 6, 12)) == 12 * 3600
    assert not s.covers_whole_week()
    assert Schedule([parse_window("00:00-12:00"), parse_window("12:00-24:00")], UTC).covers_whole_week()


@pytest.mark.parametrize("bad", ["22:00", "25:00-07:00", "22:00-22:00", "7-8", "22:60-07:00"])
def test_bad_windows_are_refused(bad):
    with pytest.raises(ValueError):
        parse_window(bad)
