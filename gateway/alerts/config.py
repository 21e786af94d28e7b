"""Typed config for rules, alert classes, recipient groups, schedules and escalation.

The site config's ``rules:`` section validates against :class:`RulesConfig`
(unknown keys are errors, every rule type is a ``type``-tagged model);
:func:`validate_rules` then cross-checks what needs the whole site: devices
and points that exist, writable outputs, references between rules, classes,
groups and schedules, cycles in composition, and durations that could never
work with the devices' poll intervals.  docs/alerts.md describes every key.
"""

from __future__ import annotations

import string
from typing import Annotated, Any, Literal, Union
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BeforeValidator, ConfigDict, Field, field_validator, model_validator

from core.model import Strict as _Strict
from gateway.alerts.timeutil import MAX_DURATION, WEEKDAYS, Schedule, parse_duration, parse_window

RuleId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
Duration = Annotated[float, BeforeValidator(parse_duration), Field(ge=0, le=MAX_DURATION)]
PositiveDuration = Annotated[float, BeforeValidator(parse_duration), Field(gt=0, le=MAX_DURATION)]
Severity = Literal["critical", "warning", "info"]
Scalar = Union[bool, int, float, str]

RULE_TYPES = ("threshold", "rate", "state", "inactivity", "flow", "stale", "all", "any")


class Strict(_Strict):
    """The strict base, with aliases also accepted by field name (``on`` is a YAML 1.1 boolean)."""

    model_config = ConfigDict(**_Strict.model_config, populate_by_name=True)


# --------------------------------------------------------------------------- people and chains


class Group(Strict):
    recipients: list[str] = Field(min_length=1, description="who is in the group (names, ids, numbers: the centre resolves them)")
    description: str = ""


class Step(Strict):
    group: Name
    after: Duration = Field(0.0, description="time since the alert was raised")


class Output(Strict):
    device: str
    point: str
    value: Scalar = Field(True, description="written when the alert is raised")
    release: Scalar | None = Field(None, description="written on ack or resolve; default: false (or 0)")

    @property
    def release_value(self):
        if self.release is not None:
            return self.release
        return False if isinstance(self.value, bool) else 0


class AlertClass(Strict):
    escalation: list[Step] = Field(min_length=1, description="recipient groups in order, each with its delay")
    description: str = ""

    @field_validator("escalation")
    @classmethod
    def _increasing(cls, v: list[Step]) -> list[Step]:
        if v and v[0].after != 0:
            raise ValueError(f"the first step goes out when the alert is raised: its 'after' must be 0, not {v[0].after:g}")
        for a, b in zip(v, v[1:]):
            if b.after <= a.after:
                raise ValueError(f"step '{b.group}' (after {b.after:g} s) must come later than step '{a.group}' (after {a.after:g} s)")
        return v


# --------------------------------------------------------------------------- quiet hours


def _window_item(v):
    """A quiet window: ``"22:00-07:00"`` or ``{from: "22:00", to: "07:00", days: [sat, sun]}``."""
    if isinstance(v, str):
        parse_window(v)
        return v
    if isinstance(v, dict):
        extra = sorted(set(v) - {"from", "to", "days"})
        if extra:
            raise ValueError(f"unknown key(s) {', '.join(extra)} in a window (keys: from, to, days)")
        for k in ("from", "to"):
            if isinstance(v.get(k), int):  # YAML 1.1 reads an unquoted 22:00 as the number 1320
                raise ValueError(f"put the time in quotes: {k}: \"HH:MM\"")
        days = v.get("days")
        if days is not None:
            if not isinstance(days, list) or any(d not in WEEKDAYS for d in days):
                raise ValueError(f"days is a list of {', '.join(WEEKDAYS)}")
        parse_window(v)
        return v
    raise ValueError("a quiet-hours window is text like '22:00-07:00' or {from: '22:00', to: '07:00', days: [sat, sun]}")


QuietItem = Annotated[Any, BeforeValidator(_window_item)]


class ScheduleModel(Strict):
    quiet_hours: list[QuietItem] = Field(default_factory=list)
    description: str = ""


class Household(Strict):
    schedule: Name | None = None
    quiet_hours: list[QuietItem] | None = None

    @model_validator(mode="after")
    def _one(self) -> "Household":
        if self.schedule is not None and self.quiet_hours is not None:
            raise ValueError("give schedule or quiet_hours, not both")
        return self


# --------------------------------------------------------------------------- rules


class Messages(Strict):
    en: str | None = None
    zh: str | None = None


class ReraisePolicy(Strict):
    """When a new episode of a condition raises a new alert."""

    reraise: Literal["each_episode", "once", "dead_time"] = "each_episode"
    dead_time: PositiveDuration | None = None

    @model_validator(mode="after")
    def _dead_time(self):
        if self.reraise == "dead_time" and self.dead_time is None:
            raise ValueError("reraise: dead_time needs a dead_time (e.g. dead_time: 30m)")
        if self.reraise != "dead_time" and self.dead_time is not None:
            raise ValueError("dead_time only applies with reraise: dead_time")
        return self


class RuleBase(ReraisePolicy):
    id: RuleId
    severity: Severity = "warning"
    class_: Name | None = Field(None, alias="class", description="alert class: its escalation chain")
    alert: bool = Field(True, description="false: a condition only, for use in all/any rules")
    resolve: Literal["auto", "ack"] = Field("auto", description="auto: when the condition clears; ack: only by an ack with resolve")
    outputs: list[Output] = Field(default_factory=list)
    message: Messages | None = None
    description: str = ""



class DeviceRule(RuleBase):
    device: str | None = None
    devices: list[str] | None = Field(None, min_length=1)
    point: str

    @model_validator(mode="after")
    def _one_device_key(self):
        if (self.device is None) == (self.devices is None):
            raise ValueError("give device (one) or devices (a list), not both and not neither")
        return self

    @property
    def device_ids(self) -> list[str]:
        return [self.device] if self.device is not None else list(self.devices or [])


class Debounced(Strict):
    delay_on: Duration = Field(0.0, description="the condition must hold this long before it counts")
    delay_off: Duration = Field(0.0, description="and be clear this long before it is over")


class ThresholdRule(DeviceRule, Debounced):
    type: Literal["threshold"]
    above: float | None = None
    below: float | None = None
    hysteresis: float = Field(0.0, ge=0, description="clears only this far back on the safe side")

    @model_validator(mode="after")
    def _one_limit(self):
        if (self.above is None) == (self.below is None):
            raise ValueError("give above or below (one of them)")
        return self


class RateRule(DeviceRule, Debounced):
    type: Literal["rate"]
    rise: float | None = Field(None, gt=0)
    fall: float | None = Field(None, gt=0)
    window: PositiveDuration

    @model_validator(mode="after")
    def _one_direction(self):
        if (self.rise is None) == (self.fall is None):
            raise ValueError("give rise or fall (one of them)")
        return self


class StateRule(DeviceRule, Debounced):
    type: Literal["state"]
    to: Scalar = Field(description="the value the point changes to")
    from_: Scalar | None = Field(None, alias="from", description="only a change from this value counts")


class FlowRule(DeviceRule):
    type: Literal["flow"]
    on: Literal["above", "increase"] = Field("above", description="above: a rate point over 'above'; increase: a counter advancing")
    above: float = 0.0
    for_: PositiveDuration = Field(alias="for")
    max_pause: Duration = Field(0.0, description="gaps this short do not end a run")


class StaleRule(RuleBase):
    type: Literal["stale"]
    devices: list[str] | None = Field(None, min_length=1, description="default: every enabled device")
    intervals: float = Field(3, ge=1, le=100000, description="poll intervals without a valid reading")


class Source(Strict):
    device: str
    point: str
    on: Literal["change", "increase", "above"] | None = Field(None, description="default: change (above if 'above' is given)")
    above: float | None = None

    @model_validator(mode="after")
    def _mode(self):
        if self.on == "above" and self.above is None:
            raise ValueError("on: above needs 'above' (e.g. above: 0)")
        if self.above is not None and self.on not in (None, "above"):
            raise ValueError("'above' only applies with on: above")
        return self

    @property
    def mode(self) -> str:
        return self.on or ("above" if self.above is not None else "change")


class InactivityRule(RuleBase):
    type: Literal["inactivity"]
    sources: list[Source] = Field(min_length=1)
    per: Literal["household", "all"] = Field("household", description="one alert per household, or one for all sources")
    for_: PositiveDuration = Field(alias="for")
    schedule: Name | None = None
    quiet_hours: list[QuietItem] | None = None
    quiet: Literal["pause", "hold"] = Field("pause", description="pause: quiet time does not count; hold: it counts, alerts wait for its end")

    @model_validator(mode="after")
    def _one_schedule(self):
        if self.schedule is not None and self.quiet_hours is not None:
            raise ValueError("give schedule or quiet_hours, not both")
        return self


class CompositeRule(RuleBase, Debounced):
    of: list[RuleId] = Field(min_length=1, description="ids of other rules")
    same_device: bool = Field(False, description="true: per device, all components on the same device")


class AllRule(CompositeRule):
    type: Literal["all"]


class AnyRule(CompositeRule):
    type: Literal["any"]


Rule = Annotated[
    Union[ThresholdRule, RateRule, StateRule, InactivityRule, FlowRule, StaleRule, AllRule, AnyRule],
    Field(discriminator="type"),
]


class ExternalSource(ReraisePolicy):
    """Alerts raised by other parts of the gateway (``camera.fall``): their class, outputs and text."""

    class_: Name | None = Field(None, alias="class", description="alert class: its escalation chain")
    severity: Severity | None = Field(None, description="overrides the severity the source gives")
    outputs: list[Output] = Field(default_factory=list)
    message: Messages | None = None



class RulesConfig(Strict):
    timezone: str | None = Field(None, description="IANA zone for quiet hours, e.g. Asia/Shanghai; default: the board's")
    history: int = Field(100, ge=0, le=10000, description="closed alerts kept in the local state file")
    groups: dict[Name, Group] = Field(default_factory=dict)
    classes: dict[Name, AlertClass] = Field(default_factory=dict)
    schedules: dict[Name, ScheduleModel] = Field(default_factory=dict)
    households: dict[str, Household] = Field(default_factory=dict)
    external: dict[Name, ExternalSource] = Field(default_factory=dict, description="alerts from cameras and other services")
    rules: list[Rule] = Field(default_factory=list)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v):
        if v is None:
            return v
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r} (use an IANA name such as Asia/Shanghai or UTC)") from None
        return v

    @field_validator("groups", "classes", "schedules", "households", "external", "rules", mode="before")
    @classmethod
    def _null_is_empty(cls, v, info):
        if v is None:
            return [] if info.field_name == "rules" else {}
        return v

    # ---- helpers used by the engine
    def tz(self):
        return ZoneInfo(self.timezone) if self.timezone else None

    def schedule_for(self, rule: InactivityRule, household: str | None) -> Schedule:
        """Quiet hours for one household under one rule: the household's own, else the rule's."""
        tz = self.tz()
        hh = self.households.get(household) if household is not None else None
        if hh is not None and hh.quiet_hours is not None:
            return Schedule([parse_window(w) for w in hh.quiet_hours], tz)
        if hh is not None and hh.schedule is not None:
            return Schedule([parse_window(w) for w in self.schedules[hh.schedule].quiet_hours], tz)
        if rule.quiet_hours is not None:
            return Schedule([parse_window(w) for w in rule.quiet_hours], tz)
        if rule.schedule is not None:
            return Schedule([parse_window(w) for w in self.schedules[rule.schedule].quiet_hours], tz)
        return Schedule([], tz)


# --------------------------------------------------------------------------- cross-checks

TEMPLATE_FIELDS = frozenset({
    "rule", "severity", "device", "point", "value", "unit", "threshold", "change", "window", "duration",
    "where", "site", "building", "household", "grid", "zone", "components", "to",
})


def _template_problem(text: str) -> str | None:
    try:
        names = {f for _, f, _, _ in string.Formatter().parse(text) if f is not None}
    except ValueError as exc:
        return f"bad template: {exc}"
    bad = sorted(n for n in names if n.split(".")[0].split("[")[0] not in TEMPLATE_FIELDS)
    if bad:
        return f"unknown placeholder(s) {', '.join('{' + b + '}' for b in bad)}; known: {', '.join(sorted(TEMPLATE_FIELDS))}"
    return None


def _kind(point) -> str:
    if point.type == "bool":
        return "bool"
    if point.type == "string":
        return "string"
    return "number"


def _value_kind(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "number"
    return "string"


def validate_rules(site, profiles, src) -> list:
    """Cross-checks that need the whole site; returns Problems naming file:line:key."""
    rc: RulesConfig = site.rules
    problems = []
    base = ("rules",)

    def problem(path: tuple, msg: str) -> None:
        problems.append(src.problem(base + path, msg))

    devices: dict[str, tuple[Any, Any]] = {}
    for bus in site.buses:
        for dev in bus.devices:
            devices[dev.id] = (dev, profiles.get(dev.profile))

    def check_point(path: tuple, device: str, point: str, dev_key: tuple, pt_key: tuple):
        """Returns the profile Point, or None after reporting a problem."""
        if device not in devices:
            known = ", ".join(sorted(devices)) or "none"
            problem(path + dev_key, f"unknown device '{device}' (devices: {known})")
            return None
        dev, prof = devices[device]
        if prof is None:
            return None
        try:
            return prof.point(point)
        except KeyError:
            problem(path + pt_key, f"device '{device}' ({dev.profile}) has no point '{point}' "
                                   f"(points: {', '.join(p.name for p in prof.points)})")
            return None

    # groups and classes
    for name, cls in rc.classes.items():
        for s, step in enumerate(cls.escalation):
            if step.group not in rc.groups:
                problem(("classes", name, "escalation", s, "group"),
                        f"unknown group '{step.group}' (groups: {', '.join(sorted(rc.groups)) or 'none'})")
    for hh, spec in rc.households.items():
        if spec.schedule is not None and spec.schedule not in rc.schedules:
            problem(("households", hh, "schedule"), f"unknown schedule '{spec.schedule}'")

    for name, ext in rc.external.items():
        path = ("external", name)
        if ext.class_ is not None and ext.class_ not in rc.classes:
            problem(path + ("class",), f"unknown class '{ext.class_}' (classes: {', '.join(sorted(rc.classes)) or 'none'})")
        for o, out in enumerate(ext.outputs):
            pt = check_point(path + ("outputs", o), out.device, out.point, ("device",), ("point",))
            if pt is not None and not pt.writable:
                problem(path + ("outputs", o, "point"), f"point '{out.point}' of '{out.device}' is not writable")
        if ext.message is not None:
            for lang in ("en", "zh"):
                text = getattr(ext.message, lang)
                if text is not None and (msg := _template_problem(text)):
                    problem(path + ("message", lang), msg)

    ids: dict[str, int] = {}
    for i, rule in enumerate(rc.rules):
        if rule.id in ids:
            problem(("rules", i, "id"), f"duplicate rule id '{rule.id}' (first at line {src.line_of(base + ('rules', ids[rule.id], 'id'))})")
        ids.setdefault(rule.id, i)

    for i, rule in enumerate(rc.rules):
        path = ("rules", i)
        if rule.class_ is not None and rule.class_ not in rc.classes:
            problem(path + ("class",), f"unknown class '{rule.class_}' (classes: {', '.join(sorted(rc.classes)) or 'none'})")
        for o, out in enumerate(rule.outputs):
            pt = check_point(path + ("outputs", o), out.device, out.point, ("device",), ("point",))
            if pt is not None:
                if not pt.writable:
                    problem(path + ("outputs", o, "point"), f"point '{out.point}' of '{out.device}' is not writable")
                elif _kind(pt) != _value_kind(out.value):
                    problem(path + ("outputs", o, "value"), f"'{out.point}' is a {_kind(pt)} point; value {out.value!r} does not fit")
        if rule.message is not None:
            for lang in ("en", "zh"):
                text = getattr(rule.message, lang)
                if text is not None and (msg := _template_problem(text)):
                    problem(path + ("message", lang), msg)

        if isinstance(rule, DeviceRule):
            dev_keys = [(d, ("device",)) for d in ([rule.device] if rule.device else [])]
            dev_keys += [(d, ("devices", k)) for k, d in enumerate(rule.devices or [])]
            for dev_id, dkey in dev_keys:
                pt = check_point(path, dev_id, rule.point, dkey, ("point",))
                if pt is None:
                    continue
                kind = _kind(pt)
                interval = devices[dev_id][0].poll_interval
                if isinstance(rule, (ThresholdRule, RateRule)) or (isinstance(rule, FlowRule)):
                    if kind != "number":
                        problem(path + ("point",), f"'{rule.point}' of '{dev_id}' is a {kind} point; a {rule.type} rule needs a number")
                if isinstance(rule, StateRule):
                    for key, v in (("to", rule.to), ("from", rule.from_)):
                        if v is not None and _value_kind(v) != kind:
                            problem(path + (key,), f"'{rule.point}' of '{dev_id}' is a {kind} point; {key}: {v!r} can never match")
                if isinstance(rule, RateRule) and rule.window < 2 * interval:
                    problem(path + ("window",), f"window {rule.window:g} s is shorter than two polls of '{dev_id}' "
                                                f"(poll_interval {interval:g} s): a change can never be seen in it")
                if isinstance(rule, FlowRule) and rule.for_ < interval:
                    problem(path + ("for",), f"for {rule.for_:g} s is shorter than the poll interval of '{dev_id}' ({interval:g} s)")
                if isinstance(rule, FlowRule) and rule.on == "increase" and rule.max_pause and rule.max_pause >= rule.for_:
                    problem(path + ("max_pause",), "max_pause must be shorter than for")
        elif isinstance(rule, StaleRule):
            for k, dev_id in enumerate(rule.devices or []):
                if dev_id not in devices:
                    problem(path + ("devices", k), f"unknown device '{dev_id}' (devices: {', '.join(sorted(devices))})")
        elif isinstance(rule, InactivityRule):
            for k, s in enumerate(rule.sources):
                pt = check_point(path + ("sources", k), s.device, s.point, ("device",), ("point",))
                if pt is None:
                    continue
                if s.mode in ("increase", "above") and _kind(pt) != "number":
                    problem(path + ("sources", k, "point"), f"'{s.point}' is a {_kind(pt)} point; on: {s.mode} needs a number")
                if rule.per == "household":
                    loc = devices[s.device][0].location
                    if loc is None or loc.household is None:
                        problem(path + ("sources", k, "device"),
                                f"per: household, but device '{s.device}' has no location.household (set it, or use per: all)")
                if rule.for_ < 2 * devices[s.device][0].poll_interval:
                    problem(path + ("for",), f"for {rule.for_:g} s is shorter than two polls of '{s.device}'")
            if rule.schedule is not None and rule.schedule not in rc.schedules:
                problem(path + ("schedule",), f"unknown schedule '{rule.schedule}' (schedules: {', '.join(sorted(rc.schedules)) or 'none'})")
            else:
                households = {devices[s.device][0].location.household for s in rule.sources
                              if s.device in devices and devices[s.device][0].location} if rule.per == "household" else {None}
                for hh in sorted(households, key=str):
                    try:
                        whole = rc.schedule_for(rule, hh).covers_whole_week()
                    except KeyError:  # an unknown schedule, reported above
                        continue
                    if whole:
                        where = f" for household {hh}" if hh else ""
                        problem(path + ("for",), f"quiet hours{where} cover the whole week: this rule could never fire")
        elif isinstance(rule, CompositeRule):
            for k, ref in enumerate(rule.of):
                if ref == rule.id:
                    problem(path + ("of", k), f"rule '{rule.id}' cannot contain itself")
                elif ref not in ids:
                    problem(path + ("of", k), f"unknown rule '{ref}' (rules: {', '.join(sorted(ids))})")
            if rule.same_device:
                for k, ref in enumerate(rule.of):
                    comp = rc.rules[ids[ref]] if ref in ids else None
                    if comp is not None and not isinstance(comp, (DeviceRule, StaleRule, CompositeRule)):
                        problem(path + ("of", k), f"same_device: rule '{ref}' ({comp.type}) is not about single devices")

    problems.extend(_cycles(rc, src, base, ids))
    return list(dict.fromkeys(problems))


def _cycles(rc: RulesConfig, src, base: tuple, ids: dict[str, int]) -> list:
    """One problem per cycle in all/any composition, at the `of` entry that closes it."""
    graph = {r.id: [x for x in r.of if x in ids and x != r.id] for r in rc.rules if isinstance(r, CompositeRule)}
    colour: dict[str, int] = {}
    stack: list[str] = []
    out = []
    reported: set[frozenset] = set()

    def visit(node: str) -> None:
        colour[node] = 1
        stack.append(node)
        for nxt in graph.get(node, []):
            if colour.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                key = frozenset(cycle)
                if key not in reported:
                    reported.add(key)
                    i = ids[node]
                    k = rc.rules[i].of.index(nxt)
                    out.append(src.problem(base + ("rules", i, "of", k), "cycle in composition: " + " -> ".join(cycle)))
            elif colour.get(nxt) is None:
                visit(nxt)
        stack.pop()
        colour[node] = 2

    for rid in graph:
        if colour.get(rid) is None:
            visit(rid)
    return out


def topo_order(rc: RulesConfig) -> list[str]:
    """Rule ids with every component before the rules that use it (validated: no cycles)."""
    by_id = {r.id: r for r in rc.rules}
    seen: set[str] = set()
    order: list[str] = []

    def visit(rid: str) -> None:
        if rid in seen:
            return
        seen.add(rid)
        r = by_id[rid]
        if isinstance(r, CompositeRule):
            for x in r.of:
                visit(x)
        order.append(rid)

    for r in rc.rules:
        visit(r.id)
    return order


__all__ = ["RULE_TYPES", "RulesConfig", "validate_rules", "topo_order", "WEEKDAYS"]
