"""Alert lifecycle: raised -> delivered -> acknowledged -> resolved.  Pure.

One alert per *episode* (a condition becoming active until it clears) per
rule and subject.  When a new episode starts, the re-raise policy decides:

- ``each_episode``: a new alert each time (after the previous one resolved);
- ``once``: one alert until somebody acknowledges it; episodes in between are
  folded into it (counted, not published);
- ``dead_time``: a new alert only if the previous one was raised at least
  ``dead_time`` ago; otherwise the episode is folded into it.

An open alert always absorbs a new episode of its own key (no storm).
Escalation steps are due at ``raised_at + after`` (``escalation_from + after``
once a severity rise moved the clock, incidents.py) for as long as the alert
is neither acknowledged nor resolved.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields


@dataclass
class Alert:
    id: str
    rule: str
    subject: str
    severity: str
    cls: str | None
    raised_at: float
    device: str | None = None
    location: dict = field(default_factory=dict)
    readings: list = field(default_factory=list)
    message: str = ""
    facts: dict = field(default_factory=dict)
    delivered_at: float | None = None
    acked_at: float | None = None
    acked_by: str | None = None  # the person: the ack's on_behalf_of, else its issuer
    acked_issuer: str | None = None  # the key that signed the ack
    ack_id: str | None = None  # the ack envelope's id
    note: str | None = None
    resolved_at: float | None = None
    resolved_by: str | None = None  # "condition", "ack:{by}", "rule removed"
    resolve_ack: str | None = None  # the id of the ack envelope that resolved it (its sender learns it took effect)
    condition: bool = True  # the rule's condition holds right now
    episodes: int = 1  # episodes covered by this alert (re-raise policy folds later ones in)
    step: int = 0  # escalation step last published (0: the first group)
    escalated: dict = field(default_factory=dict)  # step (as text) -> when it was published
    pending: list = field(default_factory=list)  # records decided but not yet committed to the outbox
    outputs: list = field(default_factory=list)  # local outputs this alert holds: [{device, point, value, release}]
    source: str = "rule"  # "rule": from the site's rules; "external": raise_alert() (cameras)
    incident: str | None = None  # rules.incidents name: the alert stands for every rule of it on this subject
    members: dict = field(default_factory=dict)  # incident: rule id -> {"severity", "active", "joined_at"}, in join order
    escalation_from: float | None = None  # escalation steps are measured from here (None: raised_at)
    raised_key: dict | None = None  # the raise's own key once committed: {"epoch", "lane", "seq"} (its copies carry it)
    raised_body: dict | None = None  # the raise as committed: a group paged later gets a copy of it (records.py)

    @property
    def key(self) -> str:
        return incident_key(self.incident, self.subject) if self.incident else f"{self.rule}|{self.subject}"

    @property
    def rules(self) -> list[str]:
        return list(self.members) or [self.rule]

    @property
    def open(self) -> bool:
        return self.resolved_at is None

    @property
    def status(self) -> str:
        if self.resolved_at is not None:
            return "resolved"
        if self.acked_at is not None:
            return "acknowledged"
        if self.delivered_at is not None:
            return "delivered"
        return "raised"

    def summary(self, chain: list["ChainStep"]) -> dict:
        """What ``…/state`` and ``canopy status`` show of an open alert."""
        return {"id": self.id, "rule": self.rule, "severity": self.severity, "status": self.status,
                "raised_at": round(self.raised_at, 3), "device": self.device, "location": self.location,
                "message": self.message, "step": self.step,
                "group": chain[self.step].group if self.step < len(chain) else None, "acked_by": self.acked_by,
                "condition": self.condition, "episodes": self.episodes,
                **({"incident": self.incident, "rules": self.rules} if self.incident else {})}

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Alert":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def prune(alerts: dict[str, Alert], history: int) -> dict[str, Alert]:
    """Open alerts, alerts with records to send, and the last ``history`` closed ones (by raise time)."""
    keep = [a for a in alerts.values() if a.open or a.pending]
    closed = sorted((a for a in alerts.values() if not a.open and not a.pending), key=lambda a: a.resolved_at or 0)
    keep += closed[-history:] if history else []
    if len(keep) < len(alerts):
        return {a.id: a for a in sorted(keep, key=lambda a: a.raised_at)}
    return alerts


@dataclass
class Episode:
    """What the engine remembers per rule and subject, across restarts."""

    active: bool = False  # the condition holds (an episode is under way)
    alert: str | None = None  # the last alert raised for this key
    raised_at: float | None = None  # when that alert was raised
    acked: bool = False  # whether that alert has been acknowledged
    suppressed: int = 0  # episodes folded into that alert since it was raised

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Episode":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def on_new_episode(policy: str, dead_time: float | None, ep: Episode, last_open: bool, now: float) -> str:
    """``raise`` a new alert, or ``fold`` the episode into the last one."""
    if ep.alert is not None and last_open:
        return "fold"
    if ep.alert is None or ep.raised_at is None:
        return "raise"
    if policy == "once":
        return "raise" if ep.acked else "fold"
    if policy == "dead_time":
        return "raise" if now - ep.raised_at >= (dead_time or 0.0) or now < ep.raised_at else "fold"
    return "raise"


@dataclass(frozen=True)
class ChainStep:
    group: str
    after: float
    recipients: tuple[str, ...]


def incident_key(incident: str, subject: str) -> str:
    """The episode key of an incident on one subject (never a rule id: those have no colon)."""
    return f"incident:{incident}|{subject}"


def escalation_base(alert: Alert) -> float:
    """Where escalation times are measured from: the raise, or where a severity rise moved the clock."""
    return alert.escalation_from if alert.escalation_from is not None else alert.raised_at


def escalation_due(alert: Alert, chain: list[ChainStep], now: float) -> list[int]:
    """Steps (indices into ``chain``) to publish now, in order."""
    if not alert.open or alert.acked_at is not None:
        return []
    return [i for i in range(alert.step + 1, len(chain)) if escalation_base(alert) + chain[i].after <= now]


def next_escalation(alert: Alert, chain: list[ChainStep]) -> float | None:
    if not alert.open or alert.acked_at is not None or alert.step + 1 >= len(chain):
        return None
    return escalation_base(alert) + chain[alert.step + 1].after


def chains_of(rules_config) -> dict[str, list[ChainStep]]:
    """Each alert class's escalation chain, with the recipients of every step."""
    return {name: [ChainStep(s.group, s.after, tuple(rules_config.groups[s.group].recipients)) for s in cls.escalation]
            for name, cls in rules_config.classes.items()}
