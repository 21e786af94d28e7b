"""The records an alert produces, as the outbox takes them: (lane, body, topic).  Pure.

``alert.raised``, ``alert.escalated`` and ``alert.updated`` (an incident's
severity rose) go to the ``alarm`` lane (every severity: an alert is for
people), ``alert.acknowledged`` and ``alert.resolved`` to the ``event`` lane.  Every one of them carries ``groups`` -- the groups the
alert has reached so far -- and is published on ``…/event`` and on
``…/alert/{g}`` of each of those groups as ONE outbox row (one seq, so receivers
de-duplicate by ``(epoch, lane, seq)``; docs/protocol.md#alert-lifecycle-on-the-wire):
its topic is the space-separated list ``"event alert/g1 alert/g2"``.  An alert
without a class has no groups and goes to ``…/event`` only (topic ``None``).
A record is named by a *tag* kept in ``Alert.pending`` until it is committed:
``raised``, ``escalated:{step}``, ``updated:{previous}:{severity}:{status}:{ts}``,
``acknowledged``, ``resolved``.  ``words`` (texts.py) adds what people read:
``incident``, ``rules``, ``message_key``, ``params`` and ``texts``.
"""

from __future__ import annotations

from core.records import event_body
from gateway.alerts.lifecycle import Alert, ChainStep, escalation_base

Record = tuple[str, bytes, "str | None"]  # lane, body, topic suffixes (None: the lane's default topic)


def groups_reached(chain: list[ChainStep], step: int) -> list[str]:
    """The groups paged up to and including ``step``, in order, each once."""
    return list(dict.fromkeys(s.group for s in chain[:step + 1]))


def topics_of(groups: list[str]) -> str | None:
    """``"event alert/g1 alert/g2"``: where one lifecycle record goes; None (``…/event``) without groups."""
    return " ".join(["event", *(f"alert/{g}" for g in groups)]) if groups else None


def is_alarm(tag: str) -> bool:
    return tag == "raised" or tag.startswith(("escalated:", "updated:"))


def lane_of(tag: str) -> str:
    return "alarm" if is_alarm(tag) else "event"


def _common(a: Alert, groups: list[str], words: dict) -> dict:
    return {"alert": a.id, "rule": a.rule, "class": a.cls, "severity": a.severity, "subject": a.subject,
            "device": a.device, "location": a.location, "raised_at": round(a.raised_at, 3), "groups": groups, **words}


def updated_tag(previous: str, severity: str, status: str, ts: float) -> str:
    return f"updated:{previous}:{severity}:{status}:{round(ts, 3)}"


def parse_updated(tag: str) -> tuple[str, str, str, float]:
    """(previous severity, new severity, status, when) of an ``updated:…`` tag."""
    _, previous, severity, status, ts = tag.split(":")
    return previous, severity, status, float(ts)


def alarm_record(a: Alert, tag: str, chain: list[ChainStep], lang: str, now: float, words: dict) -> Record:
    """``alert.raised`` (step 0) or ``alert.escalated`` (step n), for the step's group."""
    raised = tag == "raised"
    step = 0 if raised else int(tag.split(":")[1])
    grp = chain[step] if step < len(chain) else None
    nxt = escalation_base(a) + chain[step + 1].after if step + 1 < len(chain) else None
    ts = a.raised_at if raised else a.escalated.get(str(step), now)
    groups = groups_reached(chain, step)
    body = event_body(
        ts, "alert.raised" if raised else "alert.escalated", **_common(a, groups, words),
        status="raised" if raised else "escalated", step=step,
        group=grp.group if grp else None, recipients=list(grp.recipients) if grp else [],
        next_escalation_at=round(nxt, 3) if nxt is not None else None,
        readings=a.readings, message=a.message, lang=lang,
    )
    return "alarm", body, topics_of(groups)


def updated_record(a: Alert, tag: str, chain: list[ChainStep], lang: str, words: dict) -> Record:
    """``alert.updated``: the severity rose from ``previous_severity`` (an incident's rule joined)."""
    previous, severity, status, ts = parse_updated(tag)
    groups = groups_reached(chain, a.step)
    body = event_body(ts, "alert.updated", **{**_common(a, groups, words), "severity": severity}, status=status,
                      previous_severity=previous, step=a.step, readings=a.readings, message=a.message, lang=lang)
    return "alarm", body, topics_of(groups)


def acknowledged_record(a: Alert, chain: list[ChainStep], now: float, words: dict) -> Record:
    """``by`` is the person (the ack's on_behalf_of, else its issuer); ``issuer`` the key; ``ack`` the envelope id."""
    groups = groups_reached(chain, a.step)
    return "event", event_body(a.acked_at or now, "alert.acknowledged", **_common(a, groups, words), status="acknowledged",
                               by=a.acked_by, note=a.note, step=a.step, issuer=a.acked_issuer, ack=a.ack_id), topics_of(groups)


def resolved_record(a: Alert, chain: list[ChainStep], message: str, lang: str, now: float, words: dict) -> Record:
    groups = groups_reached(chain, a.step)
    return "event", event_body(a.resolved_at or now, "alert.resolved", **_common(a, groups, words), status="resolved",
                               resolved_by=a.resolved_by, acked_by=a.acked_by,
                               duration=round((a.resolved_at or a.raised_at) - a.raised_at, 3),
                               readings=a.readings, message=message, lang=lang), topics_of(groups)
