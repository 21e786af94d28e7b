"""Cross-checks of the ``rules:`` section that need the whole site.

Devices and points that exist, writable outputs whose values fit, message
templates, references between rules, classes, groups and schedules, cycles in
composition, and durations that could never work with the devices' poll
intervals; and the ``ack`` permissions of ``commands.issuers``, which name
classes and groups of this section.  Each section has its own function; every
problem names file:line:key through ``src.problem``.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from gateway.alerts.config.composition import find_cycles
from gateway.alerts.config.rule_models import (
    CompositeRule,
    DeviceRule,
    FlowRule,
    InactivityRule,
    RateRule,
    StaleRule,
    StateRule,
    ThresholdRule,
)
from gateway.alerts.config.section import RulesConfig

BASE = ("rules",)
RESERVED_GROUPS = {"ack": "…/alert/ack is where acknowledgements arrive, so no group's alerts may go there"}

TEMPLATE_FIELDS = frozenset({
    "rule", "severity", "device", "point", "value", "unit", "threshold", "change", "window", "duration",
    "where", "site", "building", "household", "grid", "zone", "components", "to", "label", "place", "control", "expected",
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


def _names(d) -> str:
    return ", ".join(sorted(d)) or "none"


@dataclass
class _Checks:
    """The site's devices and the problems found so far."""

    rc: RulesConfig
    src: Any
    devices: dict[str, tuple[Any, Any]]  # id -> (device config, its profile or None)
    problems: list = field(default_factory=list)
    ids: dict[str, int] = field(default_factory=dict)  # rule id -> index of its first definition

    def problem(self, path: tuple, msg: str) -> None:
        self.problems.append(self.src.problem(BASE + path, msg))

    def point(self, path: tuple, device: str, point: str, dev_key: tuple = ("device",), pt_key: tuple = ("point",)):
        """The profile Point, or None after reporting a problem."""
        if device not in self.devices:
            self.problem(path + dev_key, f"unknown device '{device}' (devices: {_names(self.devices)})")
            return None
        dev, prof = self.devices[device]
        if prof is None:
            return None
        try:
            return prof.point(point)
        except KeyError:
            self.problem(path + pt_key, f"device '{device}' ({dev.profile}) has no point '{point}' "
                                        f"(points: {', '.join(p.name for p in prof.points)})")
            return None

    def poll_interval(self, device: str) -> float:
        return self.devices[device][0].poll_interval


def validate_rules(site, profiles, src) -> list:
    """Cross-checks that need the whole site; returns Problems naming file:line:key."""
    devices = {dev.id: (dev, profiles.get(dev.profile)) for bus in site.buses for dev in bus.devices}
    ck = _Checks(site.rules, src, devices)
    _check_people(ck)
    _check_ack_permissions(ck, site)
    _check_external(ck)
    _check_ids(ck)
    for i, rule in enumerate(ck.rc.rules):
        _check_rule(ck, ("rules", i), rule)
    _check_incidents(ck)
    ck.problems.extend(find_cycles(ck.rc, src, BASE, ck.ids))
    return list(dict.fromkeys(ck.problems))


# --------------------------------------------------------------------------- sections


def _check_people(ck: _Checks) -> None:
    """Classes name known groups; households name known schedules."""
    rc = ck.rc
    for name in rc.groups:
        if name in RESERVED_GROUPS:
            ck.problem(("groups", name), f"'{name}' cannot be a group name: {RESERVED_GROUPS[name]} (rename the group)")
    for name, cls in rc.classes.items():
        for s, step in enumerate(cls.escalation):
            if step.group not in rc.groups:
                ck.problem(("classes", name, "escalation", s, "group"), f"unknown group '{step.group}' (groups: {_names(rc.groups)})")
    for hh, spec in rc.households.items():
        if spec.schedule is not None and spec.schedule not in rc.schedules:
            ck.problem(("households", hh, "schedule"), f"unknown schedule '{spec.schedule}'")


def _check_ack_permissions(ck: _Checks, site) -> None:
    """``commands.issuers.*.ack`` names classes and groups that exist (``*`` is ``ack: all``)."""
    issuers = site.commands.issuers if getattr(site, "commands", None) is not None else {}
    for name, issuer in issuers.items():
        for j, scope in enumerate(issuer.ack):
            path = ("commands", "issuers", name, "ack", j)
            group = scope.removeprefix("group:")
            if scope.startswith("group:") and group not in ck.rc.groups:
                ck.problems.append(ck.src.problem(path, f"unknown group '{group}' (groups: {_names(ck.rc.groups)})"))
            elif not scope.startswith("group:") and scope != "*" and scope not in ck.rc.classes:
                ck.problems.append(ck.src.problem(path, f"unknown alert class '{scope}' (classes: {_names(ck.rc.classes)}; "
                                                        f"a recipient group is written group:<name>)"))


def _check_external(ck: _Checks) -> None:
    for name, ext in ck.rc.external.items():
        _check_alert_keys(ck, ("external", name), ext, value_kinds=False)


def _check_ids(ck: _Checks) -> None:
    for i, rule in enumerate(ck.rc.rules):
        if rule.id in ck.ids:
            first = ck.src.line_of(BASE + ("rules", ck.ids[rule.id], "id"))
            ck.problem(("rules", i, "id"), f"duplicate rule id '{rule.id}' (first at line {first})")
        ck.ids.setdefault(rule.id, i)


def _check_alert_keys(ck: _Checks, path: tuple, owner, *, value_kinds: bool) -> None:
    """What a rule and an external source share: class, local outputs, message templates."""
    if owner.class_ is not None and owner.class_ not in ck.rc.classes:
        ck.problem(path + ("class",), f"unknown class '{owner.class_}' (classes: {_names(ck.rc.classes)})")
    for o, out in enumerate(owner.outputs):
        pt = ck.point(path + ("outputs", o), out.device, out.point)
        if pt is None:
            continue
        if not pt.writable:
            ck.problem(path + ("outputs", o, "point"), f"point '{out.point}' of '{out.device}' is not writable")
        elif value_kinds and _kind(pt) != _value_kind(out.value):
            ck.problem(path + ("outputs", o, "value"), f"'{out.point}' is a {_kind(pt)} point; value {out.value!r} does not fit")
    if owner.message is not None:
        for lang in ("en", "zh"):
            text = getattr(owner.message, lang)
            if text is not None and (msg := _template_problem(text)):
                ck.problem(path + ("message", lang), msg)


def _check_rule(ck: _Checks, path: tuple, rule) -> None:
    _check_alert_keys(ck, path, rule, value_kinds=True)
    if not rule.alert and rule.outputs:
        ck.problem(path + ("outputs",), "a rule with alert: false raises nothing, so its outputs would never be driven; "
                                        "for a closed loop (a fan on temperature, a heater, a mister) use the controls: "
                                        "section (docs/controls.md)")
    if isinstance(rule, DeviceRule):
        dev_keys = [(d, ("device",)) for d in ([rule.device] if rule.device else [])]
        dev_keys += [(d, ("devices", k)) for k, d in enumerate(rule.devices or [])]
        for dev_id, dkey in dev_keys:
            pt = ck.point(path, dev_id, rule.point, dkey)
            if pt is not None:
                _check_device_point(ck, path, rule, dev_id, _kind(pt))
    elif isinstance(rule, StaleRule):
        for k, dev_id in enumerate(rule.devices or []):
            if dev_id not in ck.devices:
                ck.problem(path + ("devices", k), f"unknown device '{dev_id}' (devices: {', '.join(sorted(ck.devices))})")
    elif isinstance(rule, InactivityRule):
        _check_inactivity(ck, path, rule)
    elif isinstance(rule, CompositeRule):
        _check_composite(ck, path, rule)


def _check_device_point(ck: _Checks, path: tuple, rule: DeviceRule, dev_id: str, kind: str) -> None:
    """The point's kind fits the rule type; windows and durations fit the device's poll interval."""
    interval = ck.poll_interval(dev_id)
    if isinstance(rule, (ThresholdRule, RateRule, FlowRule)) and kind != "number":
        ck.problem(path + ("point",), f"'{rule.point}' of '{dev_id}' is a {kind} point; a {rule.type} rule needs a number")
    if isinstance(rule, StateRule):
        for key, v in (("to", rule.to), ("from", rule.from_)):
            if v is not None and _value_kind(v) != kind:
                ck.problem(path + (key,), f"'{rule.point}' of '{dev_id}' is a {kind} point; {key}: {v!r} can never match")
    if isinstance(rule, RateRule) and rule.window < 2 * interval:
        ck.problem(path + ("window",), f"window {rule.window:g} s is shorter than two polls of '{dev_id}' "
                                       f"(poll_interval {interval:g} s): a change can never be seen in it")
    if isinstance(rule, FlowRule) and rule.for_ < interval:
        ck.problem(path + ("for",), f"for {rule.for_:g} s is shorter than the poll interval of '{dev_id}' ({interval:g} s)")
    if isinstance(rule, FlowRule) and rule.on == "increase" and rule.max_pause and rule.max_pause >= rule.for_:
        ck.problem(path + ("max_pause",), "max_pause must be shorter than for")


def _check_inactivity(ck: _Checks, path: tuple, rule: InactivityRule) -> None:
    """Sources exist and fit their mode, carry a household when needed, and are polled often enough."""
    for k, s in enumerate(rule.sources):
        pt = ck.point(path + ("sources", k), s.device, s.point)
        if pt is None:
            continue
        if s.mode in ("increase", "above") and _kind(pt) != "number":
            ck.problem(path + ("sources", k, "point"), f"'{s.point}' is a {_kind(pt)} point; on: {s.mode} needs a number")
        elif s.change_by is not None and _kind(pt) != "number":
            ck.problem(path + ("sources", k, "change_by"), f"'{s.point}' is a {_kind(pt)} point; change_by needs a number")
        if rule.per == "household":
            loc = ck.devices[s.device][0].location
            if loc is None or loc.household is None:
                ck.problem(path + ("sources", k, "device"),
                           f"per: household, but device '{s.device}' has no location.household (set it, or use per: all)")
        if rule.for_ < 2 * ck.poll_interval(s.device):
            ck.problem(path + ("for",), f"for {rule.for_:g} s is shorter than two polls of '{s.device}'")
    if rule.schedule is not None and rule.schedule not in ck.rc.schedules:
        ck.problem(path + ("schedule",), f"unknown schedule '{rule.schedule}' (schedules: {_names(ck.rc.schedules)})")
    else:
        _check_quiet_hours(ck, path, rule)


def _check_quiet_hours(ck: _Checks, path: tuple, rule: InactivityRule) -> None:
    """Quiet hours that cover the whole week would keep the rule from ever firing."""
    households = {None}
    if rule.per == "household":
        households = {ck.devices[s.device][0].location.household for s in rule.sources
                      if s.device in ck.devices and ck.devices[s.device][0].location}
    for hh in sorted(households, key=str):
        try:
            whole = ck.rc.schedule_for(rule, hh).covers_whole_week()
        except KeyError:  # an unknown schedule, reported above
            continue
        if whole:
            where = f" for household {hh}" if hh else ""
            ck.problem(path + ("for",), f"quiet hours{where} cover the whole week: this rule could never fire")


def _check_composite(ck: _Checks, path: tuple, rule: CompositeRule) -> None:
    """Components exist, are not the rule itself, and are about single devices with same_device."""
    for k, ref in enumerate(rule.of):
        if ref == rule.id:
            ck.problem(path + ("of", k), f"rule '{rule.id}' cannot contain itself")
        elif ref not in ck.ids:
            ck.problem(path + ("of", k), f"unknown rule '{ref}' (rules: {', '.join(sorted(ck.ids))})")
    if rule.same_device:
        for k, ref in enumerate(rule.of):
            comp = ck.rc.rules[ck.ids[ref]] if ref in ck.ids else None
            if comp is not None and not isinstance(comp, (DeviceRule, StaleRule, CompositeRule)):
                ck.problem(path + ("of", k), f"same_device: rule '{ref}' ({comp.type}) is not about single devices")


def _check_incidents(ck: _Checks) -> None:
    """Incidents: rules that raise alerts, one chain per incident, no lonely undeclared names (typos)."""
    members: dict[str, list[int]] = {}
    for i, rule in enumerate(ck.rc.rules):
        if rule.incident is None:
            continue
        members.setdefault(rule.incident, []).append(i)
        if not rule.alert:
            ck.problem(("rules", i, "incident"), f"rule '{rule.id}' has alert: false: it raises nothing, so it cannot join "
                                                 f"incident '{rule.incident}' (a condition for all/any needs no incident)")
    for name, idx in members.items():
        declared = ck.rc.incidents.get(name)
        if declared is None and len(idx) == 1:
            ck.problem(("rules", idx[0], "incident"), f"incident '{name}' is named by this rule only: declare it under "
                                                      f"rules.incidents, or check the spelling (incidents: {_names(members)})")
        classes = sorted({str(ck.rc.rules[i].class_) for i in idx})
        if (declared is None or declared.class_ is None) and len(classes) > 1:
            ck.problem(("rules", idx[-1], "incident"), f"the rules of incident '{name}' have different classes ({', '.join(classes)}): "
                                                    f"one incident escalates along one chain (give incidents.{name}.class)")
    for name, inc in ck.rc.incidents.items():
        _check_alert_keys(ck, ("incidents", name), SimpleNamespace(class_=inc.class_, outputs=[], message=inc.message),
                          value_kinds=False)
        if name not in members:
            ck.problem(("incidents", name), f"no rule names incident '{name}' (add incident: {name} to its rules, or remove it)")
