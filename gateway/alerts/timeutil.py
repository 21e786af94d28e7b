"""Durations and quiet hours: the pure time arithmetic under the rules.

Durations in the config are seconds (a number) or text such as ``90s``,
``5m``, ``12h``, ``1h30m``, ``2d``, ``500ms``.  Quiet hours are local
time-of-day windows (``"22:00-07:00"`` crosses midnight) in the rules'
time zone, optionally only on some weekdays (the weekday the window *starts*).
Everything here takes epoch timestamps and returns numbers: no clocks, no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, tzinfo

MAX_DURATION = 31 * 86400.0  # a month: longer rules are a typo, and bound the quiet-hours arithmetic

_UNITS = {"ms": 0.001, "s": 1.0, "min": 60.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_TOKEN = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|min|s|m|h|d)")
_FULL = re.compile(r"^\s*(?:\d+(?:\.\d+)?\s*(?:ms|min|s|m|h|d)\s*)+$")
DURATION_HELP = "a duration is a number of seconds or text like '90s', '5m', '12h', '1h30m', '2d'"


def parse_duration(v) -> float:
    """Seconds from a number or a text like ``1h30m``; ValueError in plain words otherwise."""
    if isinstance(v, bool):
        raise ValueError(DURATION_HELP)
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        text = v.strip()
        try:
            return float(text)
        except ValueError:
            pass
        if _FULL.match(text):
            return sum(float(n) * _UNITS[u] for n, u in _TOKEN.findall(text))
        raise ValueError(f"{v!r} is not a duration; {DURATION_HELP}")
    raise ValueError(DURATION_HELP)


def fmt_duration(seconds: float, lang: str = "en") -> str:
    """``12 h``, ``1 h 30 min``, ``45 s``; zh: ``12小时``, ``1小时30分钟``."""
    s = int(round(max(0.0, seconds)))
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    if lang == "zh":
        names = (("天", d), ("小时", h), ("分钟", m), ("秒", s))
        parts = [f"{n}{u}" for u, n in names if n]
        return "".join(parts[:2]) or "0秒"
    names = (("d", d), ("h", h), ("min", m), ("s", s))
    parts = [f"{n} {u}" for u, n in names if n]
    return " ".join(parts[:2]) or "0 s"


# --------------------------------------------------------------------------- quiet hours

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_TOD = re.compile(r"^([01]?\d|2[0-4]):([0-5]\d)(?::([0-5]\d))?$")


def parse_time_of_day(text: str) -> int:
    """``"07:30"`` or ``"07:30:15"`` -> seconds after midnight (``24:00`` allowed as an end)."""
    m = _TOD.match(str(text).strip())
    if not m:
        raise ValueError(f"{text!r} is not a time of day (HH:MM or HH:MM:SS, 24-hour clock)")
    h, mi, s = int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)
    secs = h * 3600 + mi * 60 + s
    if secs > 86400:
        raise ValueError(f"{text!r} is past 24:00")
    return secs


@dataclass(frozen=True)
class Window:
    """A quiet window: from ``start`` to ``end`` (seconds after local midnight), crossing midnight if end <= start."""

    start: int
    end: int
    days: frozenset[int] | None = None  # weekdays (0 = Monday) on which the window starts; None: every day

    @property
    def length(self) -> int:
        return (self.end - self.start) % 86400 or 86400


def parse_window(spec) -> Window:
    """``"22:00-07:00"`` or ``{"from": "22:00", "to": "07:00", "days": ["fri", "sat"]}``."""
    days = None
    if isinstance(spec, str):
        if spec.count("-") != 1:
            raise ValueError(f"{spec!r} is not a window; write it like '22:00-07:00'")
        a, b = spec.split("-")
    elif isinstance(spec, dict):
        a, b = spec.get("from"), spec.get("to")
        if a is None or b is None:
            raise ValueError("a window needs 'from' and 'to'")
        if spec.get("days") is not None:
            days = frozenset(WEEKDAYS.index(d) for d in spec["days"])
    else:  # a pydantic model
        a, b = spec.from_, spec.to
        if spec.days is not None:
            days = frozenset(WEEKDAYS.index(d) for d in spec.days)
    start, end = parse_time_of_day(a), parse_time_of_day(b)
    if start % 86400 == end % 86400:
        raise ValueError(f"window {a}-{b} is empty (or the whole day); give different start and end times")
    return Window(start % 86400, end, days)


class Schedule:
    """Quiet windows in one time zone (``None``: the board's local time)."""

    def __init__(self, windows: list[Window] | tuple[Window, ...] = (), tz: tzinfo | None = None):
        self.windows = tuple(windows)
        self.tz = tz

    def __bool__(self) -> bool:
        return bool(self.windows)

    def _local_date(self, t: float) -> date:
        return datetime.fromtimestamp(t, self.tz).date()

    def _at(self, d: date, secs: int) -> float:
        base = datetime.combine(d, time(0), tzinfo=self.tz)
        return (base + timedelta(seconds=secs)).timestamp()

    def intervals(self, t0: float, t1: float) -> list[tuple[float, float]]:
        """Quiet intervals overlapping [t0, t1], clipped to it, merged and sorted."""
        if not self.windows or t1 <= t0:
            return []
        raw: list[tuple[float, float]] = []
        d = self._local_date(t0) - timedelta(days=1)
        last = self._local_date(t1)
        while d <= last:
            for w in self.windows:
                if w.days is not None and d.weekday() not in w.days:
                    continue
                a = self._at(d, w.start)
                b = self._at(d, w.start + w.length)
                if b > t0 and a < t1:
                    raw.append((max(a, t0), min(b, t1)))
            d += timedelta(days=1)
        raw.sort()
        merged: list[tuple[float, float]] = []
        for a, b in raw:
            if merged and a <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], b))
            else:
                merged.append((a, b))
        return merged

    def quiet_seconds(self, t0: float, t1: float) -> float:
        return sum(b - a for a, b in self.intervals(t0, t1))

    def active_seconds(self, t0: float, t1: float) -> float:
        """Seconds in [t0, t1] outside quiet hours."""
        return max(0.0, (t1 - t0) - self.quiet_seconds(t0, t1))

    def is_quiet(self, t: float) -> bool:
        return any(a <= t < b for a, b in self.intervals(t - 1, t + 1))

    def quiet_until(self, t: float) -> float:
        """End of the quiet stretch containing ``t`` (``t`` itself when not quiet)."""
        end = t
        for _ in range(64):
            ivs = [iv for iv in self.intervals(end - 1, end + 2 * 86400) if iv[0] <= end < iv[1]]
            if not ivs:
                return end
            end = max(b for _, b in ivs)
        return end

    def when_active_reaches(self, t0: float, need: float) -> float:
        """The first time ``t`` with ``active_seconds(t0, t) >= need``; ``inf`` if never (all quiet)."""
        t, remaining = t0, need
        chunk = max(2 * 86400.0, need * 1.5)
        for _ in range(400):
            end = t + remaining + chunk
            for a, b in self.intervals(t, end):
                if a > t:
                    if a - t >= remaining:
                        return t + remaining
                    remaining -= a - t
                t = max(t, b)
            if t + remaining <= end:
                return t + remaining
            t = end
        return float("inf")

    def covers_whole_week(self) -> bool:
        """True if every moment of a week is quiet (an inactivity rule could never fire)."""
        # 2024-01-01 is a Monday; check one week plus a day for windows started the day before.
        t0 = datetime(2024, 1, 1, tzinfo=self.tz).timestamp()
        return self.active_seconds(t0, t0 + 7 * 86400) == 0
