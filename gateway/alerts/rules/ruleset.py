"""The rules of one site, built from the validated config and evaluated components-first."""

from __future__ import annotations

from core.records import Reading
from gateway.alerts.config import rule_models as m
from gateway.alerts.config.composition import topo_order
from gateway.alerts.rules.base import ALL, Change, Rule
from gateway.alerts.rules.composite import CompositeRule
from gateway.alerts.rules.flow import FlowRule
from gateway.alerts.rules.inactivity import InactivityRule
from gateway.alerts.rules.rate import RateRule
from gateway.alerts.rules.stale import StaleRule
from gateway.alerts.rules.state import StateRule
from gateway.alerts.rules.threshold import ThresholdRule

# config model -> rule logic, for the rule types built from their spec alone
SIMPLE_RULES: dict[type, type[Rule]] = {
    m.ThresholdRule: ThresholdRule,
    m.RateRule: RateRule,
    m.StateRule: StateRule,
    m.FlowRule: FlowRule,
}


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

    # ---- across restarts
    def dump(self) -> dict[str, dict]:
        return {r.id: d for r in self.rules if (d := r.dump())}

    def restore(self, episodes: dict, dumps: dict[str, dict]) -> dict:
        """The saved episodes (``"rule|subject"`` -> episode) that still fit the config; rules resume them.

        An episode of a rule or subject that is gone is dropped; one of another
        service (``camera.fall|cam-1``: a dotted name that is no rule) or of an
        incident (``incident:smoke|smoke-shed``) is kept.
        """
        kept = {}
        for key, ep in episodes.items():
            rule_id, _, subject = key.partition("|")
            rule = self.by_id.get(rule_id)
            if rule is None and ("." in rule_id or rule_id.startswith("incident:")):
                kept[key] = ep
            elif rule is not None and subject in rule.subject_ids():
                kept[key] = ep
                if ep.active:
                    rule.restore(subject, True)
        for rid, d in dumps.items():
            if rid in self.by_id:
                self.by_id[rid].load(d)
        return kept


def _inactivity(spec, rc, locations: dict) -> InactivityRule:
    """Sources grouped by household (or all together), each group with its quiet hours."""
    groups: dict[str, list] = {}
    for src in spec.sources:
        subject = ALL
        if spec.per == "household":
            loc = locations.get(src.device)
            subject = loc.household if loc is not None and loc.household else ALL
        groups.setdefault(subject, []).append(src)
    schedules = {s: rc.schedule_for(spec, s if s != ALL else None) for s in groups}
    return InactivityRule(spec, groups, schedules)


def build_rules(cfg) -> RuleSet:
    """A RuleSet from a validated LoadedConfig."""
    rc = cfg.site.rules
    intervals = {dev.id: dev.poll_interval for _, dev in cfg.devices() if dev.enabled}
    locations = {dev.id: dev.location for _, dev in cfg.devices()}
    specs = {r.id: r for r in rc.rules}
    order = topo_order(rc)
    built: dict[str, Rule] = {}
    for rid in order:
        spec = specs[rid]
        if type(spec) in SIMPLE_RULES:
            rule: Rule = SIMPLE_RULES[type(spec)](spec)
        elif isinstance(spec, m.StaleRule):
            rule = StaleRule(spec, {d: intervals[d] for d in (spec.devices or intervals) if d in intervals})
        elif isinstance(spec, m.InactivityRule):
            rule = _inactivity(spec, rc, locations)
        else:
            rule = CompositeRule(spec, [built[x] for x in spec.of])
        built[rid] = rule
    return RuleSet([built[rid] for rid in order])
