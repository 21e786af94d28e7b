"""``threshold``: a value above or below a limit, with hysteresis (a Schmitt trigger)."""

from __future__ import annotations

from gateway.alerts.rules.base import as_number, reading_facts
from gateway.alerts.rules.debounce import DebouncedRule


class ThresholdRule(DebouncedRule):
    """``above``/``below`` a limit; once on, clears only past the limit by ``hysteresis``."""

    kind = "threshold"

    def raw(self, device, deb, r):
        v = as_number(r.value)
        if v is None:
            return None
        s = self.spec
        if s.above is not None:
            limit = s.above - s.hysteresis if deb.raw else s.above
            on = v > limit
        else:
            limit = s.below + s.hysteresis if deb.raw else s.below
            on = v < limit
        self.facts[device] = reading_facts(r, v, threshold=s.above if s.above is not None else s.below)
        return on
