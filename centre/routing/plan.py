"""Who gets told what, through which channel: one alert step -> notification rows.  Pure.

An alert step (:class:`AlertNote`) names the groups to tell: at the raise every group in
the record's ``groups``; at an escalation only the group it reached now (the earlier ones
were paged already); at an update, acknowledgement or resolution every group reached.
Each group's routing (``RoutingConfig.group``) gives its channels and, with the people
lookup, its members:

- ``console``: one row per group, listing the members' usernames (the live screens);
- ``webhook:NAME``: one POST per group, listing the members with their phones and e-mails;
- ``email``: one message per member who has an address.

Every row's ``key`` is a hash of (alert step, group, channel, recipient), so planning the
same step twice (a new leader looking back) inserts nothing new.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

from centre.routing.config import RoutingConfig


@dataclass(frozen=True, slots=True)
class Person:
    username: str
    display_name: str | None = None
    email: str | None = None
    phone: str | None = None
    language: str = "en"


@dataclass(frozen=True, slots=True)
class AlertNote:
    """One step of an alert's life worth telling people about (from a gateway, or the centre's own)."""

    key: str  # unique per step: "site/gateway/epoch/lane/seq" of the record, or "blind-7/raised"
    site: str
    gateway: str
    alert: str
    event: str  # raised | escalated | updated | acknowledged | resolved
    ts: float
    groups: tuple[str, ...] = ()  # every group the alert has reached
    severity: str | None = None
    cls: str | None = None
    subject: str | None = None
    message: str | None = None
    location: dict | None = None
    actor: str | None = None  # who acknowledged or resolved
    source: str = "gateway"  # gateway | centre
    extra: dict = field(default_factory=dict)

    def told(self) -> tuple[str, ...]:
        """The groups this step is for."""
        if self.event == "escalated":
            return self.groups[-1:]
        return self.groups


def payload(note: AlertNote, group: str, recipients: list[dict]) -> dict:
    """The JSON a webhook receives (and the console shows); stable keys, documented in docs/centre.md#webhooks."""
    return {"v": 1, "type": f"alert.{note.event}", "source": note.source, "site": note.site, "gateway": note.gateway,
            "alert": note.alert, "ts": note.ts, "severity": note.severity, "class": note.cls, "subject": note.subject,
            "message": note.message, "location": note.location, "actor": note.actor, "group": group,
            "recipients": recipients, **note.extra}


def plan(note: AlertNote, cfg: RoutingConfig, members: Callable[[str, str, list[str]], list[Person]],
         now: float) -> list[dict]:
    """The notification rows for one alert step (``members(site, group, configured_users)`` looks people up)."""
    out: list[dict] = []
    for group in note.told():
        routing = cfg.group(note.site, group)
        if routing is None:
            continue
        people = members(note.site, group, routing.users)
        listed = [{"user": p.username, "name": p.display_name, "phone": p.phone, "email": p.email,
                   "language": p.language} for p in people]
        for channel in routing.channels:
            if channel == "email":
                for p, entry in zip(people, listed):
                    if p.email:
                        out.append(_row(note, group, channel, p.email, payload(note, group, [entry]), now))
            else:
                out.append(_row(note, group, channel, None, payload(note, group, listed), now))
    return out


def _row(note: AlertNote, group: str, channel: str, recipient: str | None, body: dict, now: float) -> dict:
    key = hashlib.sha256("\x1f".join([note.key, group, channel, recipient or ""]).encode()).hexdigest()
    return {"key": key, "created_at": now, "site": note.site, "gateway": note.gateway, "alert": note.alert[:64],
            "event": note.event, "group": group[:160], "channel": channel, "recipient": recipient, "payload": body,
            "status": "sent" if channel == "console" else "queued", "attempts": 0, "next_attempt_at": now,
            "sent_at": now if channel == "console" else None}
