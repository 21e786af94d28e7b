"""``stale``: a device that sent no valid reading for a number of its poll intervals."""

from __future__ import annotations

import math

from core.records import Reading
from gateway.alerts.rules.base import FlagRule, evidence_of


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

    def holds(self, subject: str, now: float) -> bool:
        return now - self._since(subject) >= self.limit[subject]

    def flipped(self, subject: str, on: bool, now: float) -> float:
        since = self._since(subject)
        self.facts[subject] = {"device": subject, "duration": now - since if on else 0.0}
        if on and subject not in self.evidence:
            self.evidence[subject] = []
        return since + self.limit[subject] if on else self.last_seen.get(subject, now)

    def due_at(self, subject: str) -> float | None:
        return self._since(subject) + self.limit[subject]
