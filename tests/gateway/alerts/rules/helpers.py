"""Helpers for the pure rule tests: readings, specs from the config models, changes as tuples.

No clock, no loop: every test drives time with plain numbers.
"""

from __future__ import annotations

from core.records import Reading


def rd(ts, device, point, value, unit=""):
    return Reading(ts, device, point, value, unit)


def changes(rule, now):
    return [(ch.subject, ch.active, ch.ts) for ch in rule.evaluate(now)]


def spec(model, **kw):
    return model.model_validate(kw)

