"""Typed config for rules, alert classes, recipient groups, schedules and escalation.

The site config's ``rules:`` section validates against :class:`RulesConfig`
(section.py; unknown keys are errors, every rule type is a ``type``-tagged
model in rule_models.py, groups and classes in people.py, quiet hours in
schedules.py); :func:`validate_rules` (checks.py) then cross-checks what needs
the whole site.  docs/alerts.md describes every key.
"""

from gateway.alerts.config.checks import TEMPLATE_FIELDS, validate_rules
from gateway.alerts.config.composition import topo_order
from gateway.alerts.config.fields import Strict
from gateway.alerts.config.incidents import Incident
from gateway.alerts.config.people import AlertClass, Group, Step
from gateway.alerts.config.rule_models import (
    RULE_TYPES,
    AllRule,
    AnyRule,
    CompositeRule,
    Debounced,
    DeviceRule,
    ExternalSource,
    FlowRule,
    InactivityRule,
    Messages,
    Output,
    RateRule,
    ReraisePolicy,
    Rule,
    RuleBase,
    Source,
    StaleRule,
    StateRule,
    ThresholdRule,
)
from gateway.alerts.config.schedules import Household, ScheduleModel
from gateway.alerts.config.section import RulesConfig
from gateway.alerts.timeutil import WEEKDAYS

__all__ = [
    "RULE_TYPES", "RulesConfig", "validate_rules", "topo_order", "WEEKDAYS", "TEMPLATE_FIELDS", "Strict",
    "AlertClass", "Group", "Step", "Household", "ScheduleModel", "AllRule", "AnyRule", "CompositeRule", "Debounced",
    "DeviceRule", "ExternalSource", "FlowRule", "Incident", "InactivityRule", "Messages", "Output", "RateRule", "ReraisePolicy",
    "Rule", "RuleBase", "Source", "StaleRule", "StateRule", "ThresholdRule",
]
