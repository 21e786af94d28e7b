"""Delay-on / delay-off, and the rules built on it (threshold, rate, state, and composition).

A raw boolean per subject becomes *active* only after it has held for
``delay_on`` and stops being active only after it has been clear for
``delay_off``: a blip shorter than the delay is no episode.
"""

from __future__ import annotations

from core.records import Reading
from gateway.alerts.rules.base import Change, Rule, evidence_of


class Debounce:
    """Delay-on / delay-off on top of a raw boolean condition."""

    __slots__ = ("delay_on", "delay_off", "raw", "since", "active")

    def __init__(self, delay_on: float = 0.0, delay_off: float = 0.0):
        self.delay_on = delay_on
        self.delay_off = delay_off
        self.raw = False
        self.since: float | None = None  # when raw last changed
        self.active = False

    def set(self, raw: bool, ts: float) -> None:
        if raw != self.raw:
            self.raw = raw
            self.since = ts

    def deadline(self) -> float | None:
        if self.raw != self.active and self.since is not None:
            return self.since + (self.delay_on if self.raw else self.delay_off)
        return None

    def settle(self, now: float) -> float | None:
        """Flip ``active`` if the raw state has held long enough; returns when it flipped."""
        due = self.deadline()
        if due is not None and now >= due:
            self.active = self.raw
            return due
        return None

    def restore(self, active: bool) -> None:
        self.active = self.raw = active
        self.since = None


class DebouncedSubjects(Rule):
    """A rule with one :class:`Debounce` per subject (``self.subjects``)."""

    subjects: dict[str, Debounce]

    def deadline(self) -> float | None:
        return min((d for deb in self.subjects.values() if (d := deb.deadline()) is not None), default=None)

    def is_active(self, subject: str) -> bool:
        deb = self.subjects.get(subject)
        return bool(deb and deb.active)

    def subject_ids(self) -> set[str]:
        return set(self.subjects)

    def active_subjects(self) -> list[str]:
        return [s for s, deb in self.subjects.items() if deb.active]

    def restore(self, subject: str, active: bool) -> None:
        if subject in self.subjects:
            self.subjects[subject].restore(active)


class DebouncedRule(DebouncedSubjects):
    """Per-device raw condition from each reading of one point, then delay-on/delay-off."""

    def __init__(self, spec):
        super().__init__(spec)
        self.point: str = spec.point
        self.subjects = {d: Debounce(spec.delay_on, spec.delay_off) for d in spec.device_ids}

    def devices(self) -> set[str]:
        return set(self.subjects)

    def raw(self, device: str, deb: Debounce, r: Reading) -> bool | None:
        """The raw condition for this reading (None: the reading says nothing, e.g. not a number)."""
        raise NotImplementedError

    def observe(self, r: Reading) -> None:
        deb = self.subjects.get(r.device)
        if deb is None or r.point != self.point:
            return
        raw = self.raw(r.device, deb, r)
        if raw is None:
            return
        if raw != deb.raw or not self.evidence.get(r.device):
            self.evidence[r.device] = [evidence_of(r)]  # the reading that flipped it
        elif raw:
            self.evidence[r.device] = [self.evidence[r.device][0], evidence_of(r)][:2]  # and the latest
        deb.set(raw, r.ts)

    def evaluate(self, now: float) -> list[Change]:
        out = []
        for subject, deb in self.subjects.items():
            ts = deb.settle(now)
            if ts is not None:
                out.append(self._change(subject, deb.active, ts))
        return out
