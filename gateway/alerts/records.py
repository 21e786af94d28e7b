"""The records an alert produces, as the outbox takes them: (lane, body, topic).  Pure.

``alert.raised`` and ``alert.escalated`` go to the ``alarm`` lane (every
severity: an alert is for people) on the recipient group's topic
``alert/{group}`` (``None``, i.e. ``…/event``, when the alert has no class);
``alert.acknowledged`` and ``alert.resolved`` go to the ``event`` lane.
A record is named by a *tag* kept in ``Alert.pending`` until it is committed:
``raised``, ``escalated:{step}``, ``acknowledged``, ``resolved``.
"""

from __future__ import annotations

from core.records import event_body
from gateway.alerts.lifecycle import Alert, ChainStep

Record = tuple[str, bytes, "str | None"]  # lane, body, topic suffix (None: the lane's default topic)


def is_alarm(tag: str) -> bool:
    return tag == "raised" or tag.startswith("escalated:")


def lane_of(tag: str) -> str:
    return "alarm" if is_alarm(tag) else "event"


def _common(a: Alert) -> dict:
    return {"alert": a.id, "rule": a.rule, "class": a.cls, "severity": a.severity, "subject": a.subject,
            "device": a.device, "location": a.location, "raised_at": round(a.raised_at, 3)}


def alarm_record(a: Alert, tag: str, chain: list[ChainStep], lang: str, now: float) -> Record:
    """``alert.raised`` (step 0) or ``alert.escalated`` (step n), for the step's group."""
    raised = tag == "raised"
    step = 0 if raised else int(tag.split(":")[1])
    grp = chain[step] if step < len(chain) else None
    nxt = a.raised_at + chain[step + 1].after if step + 1 < len(chain) else None
    ts = a.raised_at if raised else a.escalated.get(str(step), now)
    body = event_body(
        ts, "alert.raised" if raised else "alert.escalated", **_common(a),
        status="raised" if raised else "escalated", step=step,
        group=grp.group if grp else None, recipients=list(grp.recipients) if grp else [],
        next_escalation_at=round(nxt, 3) if nxt is not None else None,
        readings=a.readings, message=a.message, lang=lang,
    )
    return "alarm", body, (f"alert/{grp.group}" if grp else None)


def acknowledged_record(a: Alert, now: float) -> Record:
    return "event", event_body(a.acked_at or now, "alert.acknowledged", **_common(a), status="acknowledged",
                               by=a.acked_by, note=a.note, step=a.step), None


def resolved_record(a: Alert, message: str, lang: str, now: float) -> Record:
    return "event", event_body(a.resolved_at or now, "alert.resolved", **_common(a), status="resolved",
                               resolved_by=a.resolved_by, acked_by=a.acked_by,
                               duration=round((a.resolved_at or a.raised_at) - a.raised_at, 3),
                               readings=a.readings, message=message, lang=lang), None
