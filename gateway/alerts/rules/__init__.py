"""Rule logic: readings and timestamps in, condition changes out.  Pure.

One module per rule type (threshold, rate, state, flow, stale, inactivity,
composite) over two bases: :mod:`.debounce` (a raw condition per reading,
then delay-on/delay-off) and :class:`.base.FlagRule` (a condition that is a
function of time).  :func:`build_rules` turns the validated ``rules:`` section
into a :class:`RuleSet`.  The alert lifecycle (raise, fold, escalate) is in
gateway/alerts/lifecycle.py.
"""

from gateway.alerts.rules.base import ALL, Change, FlagRule, Rule, evidence_of
from gateway.alerts.rules.composite import CompositeRule
from gateway.alerts.rules.debounce import Debounce, DebouncedRule
from gateway.alerts.rules.flow import FlowRule
from gateway.alerts.rules.inactivity import InactivityRule
from gateway.alerts.rules.rate import RateRule
from gateway.alerts.rules.ruleset import RuleSet, build_rules
from gateway.alerts.rules.stale import StaleRule
from gateway.alerts.rules.state import StateRule
from gateway.alerts.rules.threshold import ThresholdRule

__all__ = [
    "ALL", "Change", "CompositeRule", "Debounce", "DebouncedRule", "FlagRule", "FlowRule", "InactivityRule",
    "RateRule", "Rule", "RuleSet", "StaleRule", "StateRule", "ThresholdRule", "build_rules", "evidence_of",
]
