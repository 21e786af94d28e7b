"""``flow``: water running without a pause for longer than a time (a tap left running, a leak)."""

from __future__ import annotations

import math

from core.records import Reading
from gateway.alerts.rules.base import FlagRule, as_number, evidence_of, reading_facts


class FlowRule(FlagRule):
    """Flow without a pause (longer than ``max_pause``) for ``for`` seconds.

    ``on: above`` reads a rate point (flowing while it is over ``above``);
    ``on: increase`` reads a counter (flowing while it advances).
    """

    kind = "flow"

    def __init__(self, spec):
        super().__init__(spec)
        self.point: str = spec.point
        self.run_start: dict[str, float | None] = {d: None for d in spec.device_ids}
        self.last_flow: dict[str, float] = {}
        self.prev: dict[str, tuple[float, float]] = {}
        self.active: dict[str, bool] = {d: False for d in spec.device_ids}

    def devices(self) -> set[str]:
        return set(self.run_start)

    def observe(self, r: Reading) -> None:
        if r.device not in self.run_start or r.point != self.point:
            return
        v = as_number(r.value)
        if v is None:
            return
        s = self.spec
        prev = self.prev.get(r.device)
        self.prev[r.device] = (r.ts, v)
        if s.on == "above":
            flowing, began = v > s.above, r.ts
        else:
            if prev is None:
                return
            flowing, began = v > prev[1], prev[0]  # it advanced since the previous reading
        d = r.device
        if flowing:
            if self.run_start[d] is None:
                self.run_start[d] = began
                self.evidence[d] = [evidence_of(r)]
            else:
                self.evidence[d] = [self.evidence[d][0], evidence_of(r)] if self.evidence.get(d) else [evidence_of(r)]
            self.last_flow[d] = r.ts
        elif self.run_start[d] is not None and r.ts - self.last_flow.get(d, -math.inf) >= s.max_pause:
            self.run_start[d] = None
            self.evidence[d] = [evidence_of(r)]
        start = self.run_start[d]
        running = self.last_flow.get(d, r.ts) - start if start is not None and math.isfinite(start) else 0.0
        self.facts[d] = reading_facts(r, v, duration=running)

    def holds(self, subject: str, now: float) -> bool:
        start = self.run_start[subject]
        return start is not None and now - start >= self.spec.for_

    def flipped(self, subject: str, on: bool, now: float) -> float:
        start = self.run_start[subject]
        ts = start + self.spec.for_ if on else self.last_flow.get(subject, now)
        if not math.isfinite(ts):
            ts = now
        if on and math.isfinite(start):
            self.facts.setdefault(subject, {})["duration"] = now - start
        return min(ts, now)

    def due_at(self, subject: str) -> float | None:
        start = self.run_start[subject]
        return start + self.spec.for_ if start is not None else None

    def restore(self, subject: str, active: bool) -> None:
        super().restore(subject, active)
        if subject in self.active:
            if active and self.run_start[subject] is None:
                self.run_start[subject] = -math.inf  # still running until a reading says otherwise
