"""``state``: a point changed to a value (an edge), optionally only from a given value."""

from __future__ import annotations

from typing import Any

from gateway.alerts.rules.base import MISSING, reading_facts, same_value
from gateway.alerts.rules.debounce import DebouncedRule


class StateRule(DebouncedRule):
    """The point changed to ``to`` (optionally only from ``from``); holds while it stays there."""

    kind = "state"

    def __init__(self, spec):
        super().__init__(spec)
        self.prev: dict[str, Any] = {}

    def raw(self, device, deb, r):
        s = self.spec
        prev = self.prev.get(device, MISSING)
        self.prev[device] = r.value
        at = same_value(r.value, s.to)
        if s.from_ is None:
            on = at
        else:
            on = at and (deb.raw or (prev is not MISSING and same_value(prev, s.from_)))
        self.facts[device] = reading_facts(r, r.value, to=s.to)
        return on
