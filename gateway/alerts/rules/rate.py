"""``rate``: the value rose or fell by at least an amount within a time window."""

from __future__ import annotations

from collections import deque

from gateway.alerts.rules.base import as_number, reading_facts
from gateway.alerts.rules.debounce import DebouncedRule

MAX_WINDOW_SAMPLES = 4096  # bounds memory for a fast poll and a long window


class RateRule(DebouncedRule):
    """The value rose (``rise``) or fell (``fall``) by at least that much within ``window``."""

    kind = "rate"

    def __init__(self, spec):
        super().__init__(spec)
        self.samples: dict[str, deque] = {d: deque(maxlen=MAX_WINDOW_SAMPLES) for d in self.subjects}

    def raw(self, device, deb, r):
        v = as_number(r.value)
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
        self.facts[device] = reading_facts(r, v, change=round(change, 6), window=self.spec.window)
        return on
