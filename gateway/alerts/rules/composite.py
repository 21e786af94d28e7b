"""``all`` / ``any``: a condition made of other rules' conditions, per device or site-wide."""

from __future__ import annotations

from gateway.alerts.rules.base import ALL, MAX_EVIDENCE, Change, Rule
from gateway.alerts.rules.debounce import Debounce, DebouncedSubjects


class CompositeRule(DebouncedSubjects):
    """``all``/``any`` of other rules' conditions, per device (``same_device``) or site-wide."""

    def __init__(self, spec, components: list[Rule]):
        super().__init__(spec)
        self.kind = spec.type
        self.components = components
        self.combine = all if spec.type == "all" else any
        if spec.same_device:
            subjects = set().union(*(c.devices() for c in components))
            if spec.type == "all":
                subjects = set.intersection(*(c.devices() for c in components))
        else:
            subjects = {ALL}
        self.subjects = {s: Debounce(spec.delay_on, spec.delay_off) for s in sorted(subjects)}

    def devices(self) -> set[str]:
        return {s for s in self.subjects if s != ALL}

    def _raw(self, subject: str) -> bool:
        if subject == ALL:
            return self.combine(c.any_active() for c in self.components)
        return self.combine(c.is_active(subject) for c in self.components)

    def evaluate(self, now: float) -> list[Change]:
        out = []
        for subject, deb in self.subjects.items():
            raw = self._raw(subject)
            if raw != deb.raw:
                deb.set(raw, now)
                self._gather(subject)
            ts = deb.settle(now)
            if ts is not None:
                if deb.active:
                    self._gather(subject)
                out.append(self._change(subject, deb.active, ts))
        return out

    def _gather(self, subject: str) -> None:
        """Evidence and facts from the components that are active for ``subject`` now."""
        ev: list[dict] = []
        names = []
        for c in self.components:
            subs = c.active_subjects() if subject == ALL else ([subject] if c.is_active(subject) else [])
            if subs:
                names.append(c.id)
            for s in subs:
                ev.extend(c.evidence.get(s, []))
        self.evidence[subject] = ev[:MAX_EVIDENCE]
        first = next((e for e in ev if "device" in e), None)
        self.facts[subject] = {"components": ", ".join(names), **({"device": first["device"], "point": first["point"],
                                                                    "value": first["value"], "unit": first.get("unit", "")} if first else {})}

    def is_active(self, subject: str) -> bool:
        deb = self.subjects.get(subject) or self.subjects.get(ALL)
        return bool(deb and deb.active)
