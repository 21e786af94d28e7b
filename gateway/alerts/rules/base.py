"""What every rule shares: the subject model, condition changes, evidence and facts.

Every rule keeps, per *subject* (a device, a household, or ``*``), whether its
condition holds.  ``observe(reading)`` feeds values; ``evaluate(now)``
returns the transitions (:class:`Change`) that are due at ``now``;
``deadline()`` says when the next one could be due without any new reading
(a debounce delay ending, an inactivity period running out).  Nothing here
reads a clock, sleeps or does I/O, so tests drive it with plain numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from core.records import Reading

ALL = "*"  # the subject of rules that are about the whole site
MAX_EVIDENCE = 8
MISSING = object()  # no previous value yet (None is a value)


def evidence_of(r: Reading) -> dict:
    out = {"device": r.device, "point": r.point, "value": r.value, "ts": round(r.ts, 3)}
    if r.unit:
        out["unit"] = r.unit
    return out


def reading_facts(r: Reading, value, **extra) -> dict:
    """The facts an alert text about one reading can use (``{device} {point} is {value}``)."""
    return {"device": r.device, "point": r.point, "value": value, "unit": r.unit, **extra}


def as_number(v) -> float | None:
    """A finite number, or None: booleans, text, NaN and infinities never compare."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return float(v)


def same_value(a, b) -> bool:
    """Equality where ``True`` is not ``1`` (a bool point and a number point never match)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return a == b


@dataclass
class Change:
    """A condition started (``active``) or ended for one subject of one rule, at ``ts``."""

    rule: str
    subject: str
    active: bool
    ts: float
    evidence: list[dict] = field(default_factory=list)
    facts: dict = field(default_factory=dict)


class Rule:
    """Base: subjects with an ``active`` flag, evidence and facts for the alert text."""

    kind = ""

    def __init__(self, spec):
        self.spec = spec
        self.id: str = spec.id
        self.evidence: dict[str, list[dict]] = {}
        self.facts: dict[str, dict] = {}
        self.t0: float | None = None  # when the engine started evaluating

    # inputs
    def devices(self) -> set[str]:
        return set()

    def observe(self, r: Reading) -> None:
        pass

    # outputs
    def start(self, now: float) -> None:
        if self.t0 is None:
            self.t0 = now

    def evaluate(self, now: float) -> list[Change]:
        return []

    def deadline(self) -> float | None:
        return None

    def is_active(self, subject: str) -> bool:
        return False

    def subject_ids(self) -> set[str]:
        return set()

    def active_subjects(self) -> list[str]:
        return []

    def any_active(self) -> bool:
        return bool(self.active_subjects())

    def restore(self, subject: str, active: bool) -> None:
        """After a restart: the condition was (not) active when the gateway stopped."""

    def dump(self) -> dict:
        """Inner state worth keeping across a restart (small)."""
        return {}

    def load(self, data: dict) -> None:
        pass

    def _change(self, subject: str, active: bool, ts: float) -> Change:
        return Change(self.id, subject, active, ts, list(self.evidence.get(subject, [])), dict(self.facts.get(subject, {})))


class FlagRule(Rule):
    """A rule whose condition is a function of time per subject (flow, stale, inactivity).

    Subclasses say whether the condition ``holds`` at ``now``, what to record
    when it ``flipped`` (returning when it did), and when it would come true
    with no new reading (``due_at``); evaluation and the deadline are shared.
    """

    active: dict[str, bool]

    def holds(self, subject: str, now: float) -> bool:
        raise NotImplementedError

    def flipped(self, subject: str, on: bool, now: float) -> float:
        """Update facts and evidence for a flip at ``now``; return when the flip really happened."""
        raise NotImplementedError

    def due_at(self, subject: str) -> float | None:
        return None

    def evaluate(self, now: float) -> list[Change]:
        out = []
        for subject, was in self.active.items():
            on = self.holds(subject, now)
            if on != was:
                self.active[subject] = on
                out.append(self._change(subject, on, self.flipped(subject, on, now)))
        return out

    def deadline(self) -> float | None:
        return min((t for s, on in self.active.items() if not on and (t := self.due_at(s)) is not None), default=None)

    def is_active(self, subject: str) -> bool:
        return self.active.get(subject, False)

    def subject_ids(self) -> set[str]:
        return set(self.active)

    def active_subjects(self) -> list[str]:
        return [d for d, a in self.active.items() if a]

    def restore(self, subject: str, active: bool) -> None:
        if subject in self.active:
            self.active[subject] = active
