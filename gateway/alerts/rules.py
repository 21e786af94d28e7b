"""Rule logic: readings and timestamps in, condition changes out.  Pure.

Every rule keeps, per *subject* (a device, a household, or ``*``), whether its
condition holds.  ``observe(reading)`` feeds values; ``evaluate(now)``
returns the transitions (:class:`Change`) that are due at ``now``;
``deadline()`` says when the next one could be due without any new reading
(a debounce delay ending, an inactivity period running out).  Nothing here
reads a clock, sleeps or does I/O, so tests drive it with plain numbers.

The alert lifecycle (raise, fold, suppress, escalate) is in lifecycle.py.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from core.records import Reading
from gateway.alerts.timeutil import Schedule

ALL = "*"  # the subject of rules that are about the whole site
MAX_EVIDENCE = 8
MAX_WINDOW_SAMPLES = 4096


def evidence_of(r: Reading) -> dict:
    out = {"device": r.device, "point": r.point, "value": r.value, "ts": round(r.ts, 3)}
    if r.unit:
        out["unit"] = r.unit
    return out


def _number(v) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return float(v)


@dataclass
class Change:
    """A condition started (``active``) or ended for one subject of one rule, at ``ts``."""

    rule: str
    subject: str
    active: bool
    ts: float
    evidence: list[dict] = field(default_factory=list)
    facts: dict = field(default_factory=dict)


class Debounce:
    """Delay-on / delay-off on top of a raw boolean condition."""

    __slots__ = ("delay_on", "delay_off", "raw", "since", "active")

    def __init__(self, delay_on: float = 0.0, delay_off: float = 0.0):
        self.delay_on = delay_on
        self.delay_off = delay_off
        self.raw = False
        self.since: float | None = None  # when raw last changed
        self.active = False

    def set(self, raw: bool, ts: float) -> None:
        if raw != self.raw:
            self.raw = raw
            self.since = ts

    def deadline(self) -> float | None:
        if self.raw != self.active and self.since is not None:
            return self.since + (self.delay_on if self.raw else self.delay_off)
        return None

    def settle(self, now: float) -> float | None:
        """Flip ``active`` if the raw state has held long enough; returns when it flipped."""
        due = self.deadline()
        if due is not None and now >= due:
            self.active = self.raw
            return due
        return None

    def restore(self, active: bool) -> None:
        self.active = self.raw = active
        self.since = None


class Rule:
    """Base: subjects with an ``active`` flag, evidence and facts for the alert text."""

    kind = ""

    def __init__(self, spec):
        self.spec = spec
        self.id: str = spec.id
        self.evidence: dict[str, list[dict]] = {}
        self.facts: dict[str, dict] = {}
        self.t0: float | None = None  # when the engine started evaluating

    # inputs
    def devices(self) -> set[str]:
        return set()

    def observe(self, r: Reading) -> None:
        pass

    # outputs
    def start(self, now: float) -> None:
        if self.t0 is None:
            self.t0 = now

    def evaluate(self, now: float) -> list[Change]:
        return []

    def deadline(self) -> float | None:
        return None

    def is_active(self, subject: str) -> bool:
        return False

    def subject_ids(self) -> set[str]:
        return set()

    def active_subjects(self) -> list[str]:
        return []

    def any_active(self) -> bool:
        return bool(self.active_subjects())

    def restore(self, subject: str, active: bool) -> None:
        """After a restart: the condition was (not) active when the gateway stopped."""

    def dump(self) -> dict:
        """Inner state worth keeping across a restart (small)."""
        return {}

    def load(self, data: dict) -> None:
        pass

    def _change(self, subject: str, active: bool, ts: float) -> Change:
        return Change(self.id, subject, active, ts, list(self.evidence.get(subject, [])), dict(self.facts.get(subject, {})))


class FlagRule(Rule):
    """A rule that keeps one ``active`` flag per subject (device or group)."""

    active: dict[str, bool]

    def is_active(self, subject: str) -> bool:
        return self.active.get(subject, False)

    def subject_ids(self) -> set[str]:
        return set(self.active)

    def active_subjects(self) -> list[str]:
        return [d for d, a in self.active.items() if a]

    def restore(self, subject: str, active: bool) -> None:
        if subject in self.active:
            self.active[subject] = active


class DebouncedRule(Rule):
    """Per-device raw condition from each reading, then delay-on/delay-off."""

    def __init__(self, spec):
        super().__init__(spec)
        self.point: str = spec.point
        self.subjects: dict[str, Debounce] = {d: Debounce(spec.delay_on, spec.delay_off) for d in spec.device_ids}

    def devices(self) -> set[str]:
        return set(self.subjects)

    def raw(self, device: str, deb: Debounce, r: Reading) -> bool | None:
        raise NotImplementedError

    def observe(self, r: Reading) -> None:
        deb = self.subjects.get(r.device)
        if deb is None or r.point != self.point:
            return
        raw = self.raw(r.device, deb, r)
        if raw is None:
            return
        if raw != deb.raw or not self.evidence.get(r.device):
            self.evidence[r.device] = [evidence_of(r)]  # the reading that flipped it
        elif raw:
            self.evidence[r.device] = [self.evidence[r.device][0], evidence_of(r)][:2]  # and the latest
        deb.set(raw, r.ts)

    def evaluate(self, now: float) -> list[Change]:
        out = []
        for subject, deb in self.subjects.items():
            ts = deb.settle(now)
            if ts is not None:
                out.append(self._change(subject, deb.active, ts))
        return out

    def deadline(self) -> float | None:
        return min((d for deb in self.subjects.values() if (d := deb.deadline()) is not None), default=None)

    def is_active(self, subject: str) -> bool:
        deb = self.subjects.get(subject)
        return bool(deb and deb.active)

    def subject_ids(self) -> set[str]:
        return set(self.subjects)

    def active_subjects(self) -> list[str]:
        return [s for s, deb in self.subjects.items() if deb.active]

    def restore(self, subject: str, active: bool) -> None:
        if subject in self.subjects:
            self.subjects[subject].restore(active)


class ThresholdRule(DebouncedRule):
    """``above``/``below`` a limit; once on, clears only past the limit by ``hysteresis``."""

    kind = "threshold"

    def raw(self, device, deb, r):
        v = _number(r.value)
        if v is None:
            return None
        s = self.spec
        if s.above is not None:
            limit = s.above - s.hysteresis if deb.raw else s.above
            on = v > limit
        else:
            limit = s.below + s.hysteresis if deb.raw else s.below
            on = v < limit
        self.facts[device] = {"device": device, "point": r.point, "value": v, "unit": r.unit,
                              "threshold": s.above if s.above is not None else s.below}
        return on


class RateRule(DebouncedRule):
    """The value rose (``rise``) or fell (``fall``) by at least that much within ``window``."""

    kind = "rate"

    def __init__(self, spec):
        super().__init__(spec)
        self.samples: dict[str, deque] = {d: deque(maxlen=MAX_WINDOW_SAMPLES) for d in self.subjects}

    def raw(self, device, deb, r):
        v = _number(r.value)
        if v is None:
            return None
        q = self.samples[device]
        q.append((r.ts, v))
        while q and q[0][0] < r.ts - self.spec.window:
            q.popleft()
        values = [x for _, x in q]
        if self.spec.rise is not None:
            change = v - min(values)
            on = change >= self.spec.rise
        else:
            change = max(values) - v
            on = change >= self.spec.fall
        self.facts[device] = {"device": device, "point": r.point, "value": v, "unit": r.unit,
                              "change": round(change, 6), "window": self.spec.window}
        return on


class StateRule(DebouncedRule):
    """The point changed to ``to`` (optionally only from ``from``); holds while it stays there."""

    kind = "state"

    def __init__(self, spec):
        super().__init__(spec)
        self.prev: dict[str, Any] = {}

    def raw(self, device, deb, r):
        s = self.spec
        prev = self.prev.get(device, _MISSING)
        self.prev[device] = r.value
        at = _same(r.value, s.to)
        if s.from_ is None:
            on = at
        else:
            on = at and (deb.raw or (prev is not _MISSING and _same(prev, s.from_)))
        self.facts[device] = {"device": device, "point": r.point, "value": r.value, "unit": r.unit, "to": s.to}
        return on


_MISSING = object()


def _same(a, b) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return a == b


class FlowRule(FlagRule):
    """Flow without a pause (longer than ``max_pause``) for ``for`` seconds."""

    kind = "flow"

    def __init__(self, spec):
        super().__init__(spec)
        self.point: str = spec.point
        self.run_start: dict[str, float | None] = {d: None for d in spec.device_ids}
        self.last_flow: dict[str, float] = {}
        self.prev: dict[str, tuple[float, float]] = {}
        self.active: dict[str, bool] = {d: False for d in spec.device_ids}

    def devices(self) -> set[str]:
        return set(self.run_start)

    def observe(self, r: Reading) -> None:
        if r.device not in self.run_start or r.point != self.point:
            return
        v = _number(r.value)
        if v is None:
            return
        s = self.spec
        prev = self.prev.get(r.device)
        self.prev[r.device] = (r.ts, v)
        if s.on == "above":
            flowing, began = v > s.above, r.ts
        else:
            if prev is None:
                return
            flowing, began = v > prev[1], prev[0]  # it advanced since the previous reading
        d = r.device
        if flowing:
            if self.run_start[d] is None:
                self.run_start[d] = began
                self.evidence[d] = [evidence_of(r)]
            else:
                self.evidence[d] = [self.evidence[d][0], evidence_of(r)] if self.evidence.get(d) else [evidence_of(r)]
            self.last_flow[d] = r.ts
        elif self.run_start[d] is not None and r.ts - self.last_flow.get(d, -math.inf) >= s.max_pause:
            self.run_start[d] = None
            self.evidence[d] = [evidence_of(r)]
        start = self.run_start[d]
        self.facts[d] = {"device": d, "point": r.point, "value": v, "unit": r.unit,
                         "duration": self.last_flow.get(d, r.ts) - start if start is not None and math.isfinite(start) else 0.0}

    def evaluate(self, now: float) -> list[Change]:
        out = []
        for d, start in self.run_start.items():
            on = start is not None and now - start >= self.spec.for_
            if on != self.active[d]:
                self.active[d] = on
                ts = start + self.spec.for_ if on else self.last_flow.get(d, now)
                if not math.isfinite(ts):
                    ts = now
                if on and math.isfinite(start):
                    self.facts.setdefault(d, {})["duration"] = now - start
                out.append(self._change(d, on, min(ts, now)))
        return out

    def deadline(self) -> float | None:
        return min((s + self.spec.for_ for d, s in self.run_start.items() if s is not None and not self.active[d]), default=None)

    def restore(self, subject: str, active: bool) -> None:
        super().restore(subject, active)
        if subject in self.active:
            if active and self.run_start[subject] is None:
                self.run_start[subject] = -math.inf  # still running until a reading says otherwise


class StaleRule(FlagRule):
    """No valid reading from a device for ``intervals`` × its poll interval."""

    kind = "stale"

    def __init__(self, spec, poll_intervals: dict[str, float]):
        super().__init__(spec)
        ids = spec.devices if spec.devices is not None else list(poll_intervals)
        self.limit = {d: spec.intervals * poll_intervals[d] for d in ids}
        self.last_seen: dict[str, float] = {}
        self.active: dict[str, bool] = {d: False for d in ids}

    def devices(self) -> set[str]:
        return set(self.limit)

    def observe(self, r: Reading) -> None:
        if r.device in self.limit and r.ts > self.last_seen.get(r.device, -math.inf):
            self.last_seen[r.device] = r.ts
            self.evidence[r.device] = [evidence_of(r)]

    def _since(self, d: str) -> float:
        return self.last_seen.get(d, self.t0 if self.t0 is not None else 0.0)

    def evaluate(self, now: float) -> list[Change]:
        out = []
        for d, limit in self.limit.items():
            since = self._since(d)
            on = now - since >= limit
            if on != self.active[d]:
                self.active[d] = on
                self.facts[d] = {"device": d, "duration": now - since if on else 0.0}
                if on and d not in self.evidence:
                    self.evidence[d] = []
                out.append(self._change(d, on, since + limit if on else self.last_seen.get(d, now)))
        return out

    def deadline(self) -> float | None:
        return min((self._since(d) + lim for d, lim in self.limit.items() if not self.active[d]), default=None)


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
        self.active: dict[str, bool] = {s: False for s in groups}
        self._due: dict[str, tuple[float, float]] = {}

    def devices(self) -> set[str]:
        return {d for d, _ in self.by_source}

    def observe(self, r: Reading) -> None:
        entries = self.by_source.get((r.device, r.point))
        if not entries:
            return
        key = (r.device, r.point)
        prev = self.prev.get(key, _MISSING)
        self.prev[key] = r.value
        for subject, src in entries:
            mode = src.mode
            if mode == "change":
                act = prev is not _MISSING and not _same(prev, r.value)
            elif mode == "increase":
                v, p = _number(r.value), _number(prev) if prev is not _MISSING else None
                act = v is not None and p is not None and v > p
            else:
                v = _number(r.value)
                act = v is not None and v > src.above
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

    def condition(self, subject: str, now: float) -> bool:
        """pause: ``for`` seconds of non-quiet time since the last activity; hold: ``for`` seconds,
        and not before the quiet hours it ends in are over.  Once true, it stays true until activity."""
        return now >= self.due(subject)

    def evaluate(self, now: float) -> list[Change]:
        out = []
        for subject in self.groups:
            on = self.condition(subject, now)
            if on != self.active[subject]:
                self.active[subject] = on
                self.facts[subject] = {"duration": now - self._last(subject), "household": subject if subject != ALL else ""}
                out.append(self._change(subject, on, now if on else self._last(subject)))
        return out

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

    def deadline(self) -> float | None:
        return min((self.due(s) for s in self.groups if not self.active[s]), default=None)

    def dump(self) -> dict:
        return {"last_activity": {s: round(t, 3) for s, t in self.last_activity.items()}}

    def load(self, data: dict) -> None:
        for s, t in (data.get("last_activity") or {}).items():
            if s in self.groups and isinstance(t, (int, float)):
                self.last_activity[s] = max(float(t), self.last_activity.get(s, -math.inf))


class CompositeRule(Rule):
    """``all``/``any`` of other rules' conditions, per device (``same_device``) or site-wide."""

    def __init__(self, spec, components: list[Rule]):
        super().__init__(spec)
        self.kind = spec.type
        self.components = components
        self.combine = all if spec.type == "all" else any
        if spec.same_device:
            subjects = set().union(*(c.devices() for c in components))
            if spec.type == "all":
                subjects = set.intersection(*(c.devices() for c in components))
        else:
            subjects = {ALL}
        self.subjects: dict[str, Debounce] = {s: Debounce(spec.delay_on, spec.delay_off) for s in sorted(subjects)}

    def devices(self) -> set[str]:
        return {s for s in self.subjects if s != ALL}

    def _raw(self, subject: str) -> bool:
        if subject == ALL:
            return self.combine(c.any_active() for c in self.components)
        return self.combine(c.is_active(subject) for c in self.components)

    def evaluate(self, now: float) -> list[Change]:
        out = []
        for subject, deb in self.subjects.items():
            raw = self._raw(subject)
            if raw != deb.raw:
                deb.set(raw, now)
                self._gather(subject)
            ts = deb.settle(now)
            if ts is not None:
                if deb.active:
                    self._gather(subject)
                out.append(self._change(subject, deb.active, ts))
        return out

    def _gather(self, subject: str) -> None:
        ev: list[dict] = []
        names = []
        for c in self.components:
            subs = c.active_subjects() if subject == ALL else ([subject] if c.is_active(subject) else [])
            if subs:
                names.append(c.id)
            for s in subs:
                ev.extend(c.evidence.get(s, []))
        self.evidence[subject] = ev[:MAX_EVIDENCE]
        first = next((e for e in ev if "device" in e), None)
        self.facts[subject] = {"components": ", ".join(names), **({"device": first["device"], "point": first["point"],
                                                                    "value": first["value"], "unit": first.get("unit", "")} if first else {})}

    def deadline(self) -> float | None:
        return min((d for deb in self.subjects.values() if (d := deb.deadline()) is not None), default=None)

    def is_active(self, subject: str) -> bool:
        deb = self.subjects.get(subject) or self.subjects.get(ALL)
        return bool(deb and deb.active)

    def subject_ids(self) -> set[str]:
        return set(self.subjects)

    def active_subjects(self) -> list[str]:
        return [s for s, deb in self.subjects.items() if deb.active]

    def restore(self, subject: str, active: bool) -> None:
        if subject in self.subjects:
            self.subjects[subject].restore(active)


class RuleSet:
    """All rules of a site, indexed by device, evaluated components-first."""

    def __init__(self, rules: list[Rule]):
        self.rules = rules  # in dependency order
        self.by_id = {r.id: r for r in rules}
        self.by_device: dict[str, list[Rule]] = {}
        for r in rules:
            if isinstance(r, CompositeRule):
                continue
            for d in r.devices():
                self.by_device.setdefault(d, []).append(r)

    def start(self, now: float) -> None:
        for r in self.rules:
            r.start(now)

    def observe(self, r: Reading) -> None:
        for rule in self.by_device.get(r.device, ()):
            rule.observe(r)

    def evaluate(self, now: float) -> list[Change]:
        out: list[Change] = []
        for rule in self.rules:
            out.extend(rule.evaluate(now))
        return out

    def deadline(self) -> float | None:
        return min((d for r in self.rules if (d := r.deadline()) is not None), default=None)


def build_rules(cfg) -> RuleSet:
    """A RuleSet from a validated LoadedConfig."""
    from gateway.alerts import config as c

    rc = cfg.site.rules
    intervals = {dev.id: dev.poll_interval for _, dev in cfg.devices() if dev.enabled}
    locations = {dev.id: dev.location for _, dev in cfg.devices()}
    specs = {r.id: r for r in rc.rules}
    built: dict[str, Rule] = {}
    for rid in c.topo_order(rc):
        spec = specs[rid]
        if isinstance(spec, c.ThresholdRule):
            rule: Rule = ThresholdRule(spec)
        elif isinstance(spec, c.RateRule):
            rule = RateRule(spec)
        elif isinstance(spec, c.StateRule):
            rule = StateRule(spec)
        elif isinstance(spec, c.FlowRule):
            rule = FlowRule(spec)
        elif isinstance(spec, c.StaleRule):
            rule = StaleRule(spec, {d: intervals[d] for d in (spec.devices or intervals) if d in intervals})
        elif isinstance(spec, c.InactivityRule):
            groups: dict[str, list] = {}
            for src in spec.sources:
                if spec.per == "household":
                    loc = locations.get(src.device)
                    subject = loc.household if loc is not None and loc.household else ALL
                else:
                    subject = ALL
                groups.setdefault(subject, []).append(src)
            schedules = {s: rc.schedule_for(spec, s if s != ALL else None) for s in groups}
            rule = InactivityRule(spec, groups, schedules)
        else:
            rule = CompositeRule(spec, [built[x] for x in spec.of])
        built[rid] = rule
    return RuleSet([built[rid] for rid in c.topo_order(rc)])
