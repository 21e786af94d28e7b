"""``inactivity``: no sign of daily life from a set of sources for a time, minus quiet hours.

Per household (or one for all sources): a door sensor changing, a water
meter advancing, a flow over a limit all count as activity.  A noisy value
(a float power reading) counts only past a deadband (``change_by``): far
enough from the value at the last activity, so noise never adds up to one.  With
``quiet: pause`` quiet hours do not count towards ``for``; with ``quiet: hold``
they count, but an alert that comes due inside them waits for their end.
"""

from __future__ import annotations

import math
from typing import Any

from core.records import Reading
from gateway.alerts.rules.base import ALL, MISSING, FlagRule, as_number, evidence_of, same_value
from gateway.alerts.timeutil import Schedule


def is_activity(mode: str, above: float | None, prev, value) -> bool:
    """Whether a reading of a source counts as activity (``prev`` is MISSING for the first one)."""
    if mode == "change":
        return prev is not MISSING and not same_value(prev, value)
    if mode == "increase":
        v, p = as_number(value), as_number(prev) if prev is not MISSING else None
        return v is not None and p is not None and v > p
    v = as_number(value)
    return v is not None and v > above


def deadband_activity(mode: str, deadband: tuple[float, bool], ref: float | None, value) -> tuple[bool, float | None]:
    """(activity?, the new reference) for a source with ``change_by``.

    The reference is the value at the last activity (the first reading at start),
    not the previous reading: noise around a level never counts, however long it
    goes on, while a real change counts once it is ``change_by`` away.  With a
    percentage the distance is relative to the reference (any change counts from 0).
    ``on: increase`` counts only rises; a counter that went back (reset) is a new reference.
    """
    v = as_number(value)
    if v is None:
        return False, ref
    if ref is None:
        return False, v
    amount, relative = deadband
    need = amount * abs(ref) if relative else amount
    delta = v - ref
    if mode == "increase":
        if delta < 0:
            return False, v
        moved = delta >= need if need > 0 else delta > 0
    else:
        moved = abs(delta) >= need if need > 0 else delta != 0
    return (True, v) if moved else (False, ref)


class InactivityRule(FlagRule):
    """No activity from a set of sources for ``for`` seconds of non-quiet time (per household)."""

    kind = "inactivity"

    def __init__(self, spec, groups: dict[str, list], schedules: dict[str, Schedule]):
        """``groups``: subject -> its sources; ``schedules``: subject -> its quiet hours."""
        super().__init__(spec)
        self.groups = groups
        self.schedules = schedules
        self.by_source: dict[tuple[str, str], list[tuple[str, Any]]] = {}
        for subject, sources in groups.items():
            for src in sources:
                self.by_source.setdefault((src.device, src.point), []).append((subject, src))
        self.last_activity: dict[str, float] = {}
        self.prev: dict[tuple[str, str], float | Any] = {}
        self.ref: dict[tuple[str, str, str], float | None] = {}  # (subject, device, point) -> value at the last activity
        self.active: dict[str, bool] = {s: False for s in groups}
        self._due: dict[str, tuple[float, float]] = {}

    def devices(self) -> set[str]:
        return {d for d, _ in self.by_source}

    def observe(self, r: Reading) -> None:
        entries = self.by_source.get((r.device, r.point))
        if not entries:
            return
        key = (r.device, r.point)
        prev = self.prev.get(key, MISSING)
        self.prev[key] = r.value
        for subject, src in entries:
            band = src.deadband
            if band is None:
                act = is_activity(src.mode, src.above, prev, r.value)
            else:
                rk = (subject, r.device, r.point)
                act, self.ref[rk] = deadband_activity(src.mode, band, self.ref.get(rk), r.value)
            if act and r.ts > self.last_activity.get(subject, -math.inf):
                self.last_activity[subject] = r.ts
                self.evidence[subject] = [evidence_of(r)]

    def _last(self, subject: str) -> float:
        return self.last_activity.get(subject, self.t0 if self.t0 is not None else 0.0)

    def inactive_for(self, subject: str, now: float) -> float:
        """Seconds that count towards ``for`` (quiet time excluded with quiet: pause)."""
        last = self._last(subject)
        if now <= last:  # the wall clock went back (no RTC before NTP): nothing counts
            return 0.0
        sched = self.schedules[subject]
        return sched.active_seconds(last, now) if self.spec.quiet == "pause" else now - last

    def holds(self, subject: str, now: float) -> bool:
        """pause: ``for`` seconds of non-quiet time since the last activity; hold: ``for`` seconds,
        and not before the quiet hours it ends in are over.  Once true, it stays true until activity."""
        return now >= self.due(subject)

    def flipped(self, subject: str, on: bool, now: float) -> float:
        self.facts[subject] = {"duration": now - self._last(subject), "household": subject if subject != ALL else ""}
        return now if on else self._last(subject)

    def due(self, subject: str) -> float:
        """When the condition comes true if nothing happens (cached per last activity)."""
        last = self._last(subject)
        cached = self._due.get(subject)
        if cached is not None and cached[0] == last:
            return cached[1]
        sched = self.schedules[subject]
        if self.spec.quiet == "pause":
            due = sched.when_active_reaches(last, self.spec.for_)
        else:
            due = sched.quiet_until(last + self.spec.for_)
        self._due[subject] = (last, due)
        return due

    due_at = due

    def dump(self) -> dict:
        return {"last_activity": {s: round(t, 3) for s, t in self.last_activity.items()}}

    def load(self, data: dict) -> None:
        for s, t in (data.get("last_activity") or {}).items():
            if s in self.groups and isinstance(t, (int, float)):
                self.last_activity[s] = max(float(t), self.last_activity.get(s, -math.inf))
