"""Incidents: the rules of one incident on one subject share ONE alert, whose severity only rises.  Pure.

A smoke event trips the detector's alarm (critical), a haze threshold (warning)
and a smoulder composition (critical) on the same detector.  People need one
alert with one ack: the first rule that comes on raises it, later ones *join* it
(``members``), and a joining rule of a higher severity raises its severity
(the engine then writes ``alert.updated``).  The incident's ``on_rise`` says what
a rise does to the escalation:

- ``restart`` (default): the escalation clock restarts at the rise, as if the
  current step had just gone out; an acknowledged alert is re-armed (its ack no
  longer holds: the new danger needs a new ack, and its outputs sound again);
- ``next``: the next group is paged at once (and re-armed likewise);
- ``keep``: escalation times and an ack stay as they were.

The alert is over when none of its members is on (and resolves by itself only
when every member has ``resolve: auto``).
"""

from __future__ import annotations

from gateway.alerts.lifecycle import Alert, ChainStep

RANK = {"info": 0, "warning": 1, "critical": 2}


def join(a: Alert, rule: str, severity: str, now: float) -> str | None:
    """``rule`` came on for the alert's subject; returns the previous severity when the alert's rose, else None."""
    member = a.members.get(rule)
    if member is None:
        a.members[rule] = member = {"severity": severity, "joined_at": round(now, 3)}
    member["active"] = True
    a.condition = True
    if RANK.get(severity, 0) > RANK.get(a.severity, 0):
        previous, a.severity = a.severity, severity
        return previous
    return None


def leave(a: Alert, rule: str) -> bool:
    """``rule`` went off; True when no member is on any more (the incident's condition is over)."""
    member = a.members.get(rule)
    if member is not None:
        member["active"] = False
    a.condition = any(m.get("active") for m in a.members.values())
    return not a.condition


def on_rise(a: Alert, chain: list[ChainStep], policy: str, now: float) -> bool:
    """Apply ``on_rise`` to the escalation; True when an ack was cleared (the alert needs a new one)."""
    if policy == "keep" or not a.open:
        return False
    if chain:
        step = min(a.step + (1 if policy == "next" else 0), len(chain) - 1)
        a.escalation_from = now - chain[step].after
    if a.acked_at is None:
        return False
    a.acked_at = a.acked_by = a.note = a.acked_issuer = a.ack_id = None
    return True


def status_of(a: Alert) -> str:
    """The status an ``alert.updated`` record names: where the alert stands in its lifecycle."""
    if a.acked_at is not None:
        return "acknowledged"
    if a.step > 0:
        return "escalated"
    return "delivered" if a.delivered_at is not None else "raised"
