"""The records an alert produces, as the outbox takes them: (lane, body, topic).  Pure.

``alert.raised``, ``alert.escalated`` and ``alert.updated`` (an incident's
severity rose) go to the ``alarm`` lane (every severity: an alert is for
people), ``alert.acknowledged`` and ``alert.resolved`` to the ``event`` lane.
Every one of them carries ``groups`` -- the groups the alert has reached so far --
and is published on ``…/event`` and on ``…/alert/{g}`` of each of those groups
as ONE outbox row (one seq): its topic is the space-separated list
``"event alert/g1 alert/g2"``.  An alert without a class has no groups and goes
to ``…/event`` only (topic ``None``).

A group paged by an escalation did not get the raise, so the escalation is
preceded by a **copy** of the raise on that group's topic alone: the raise's
body as committed plus ``copy_of``, the raise's own ``(epoch, lane, seq)``.  A
receiver keys a record on its ``copy_of`` when it has one, else on its own
``(epoch, lane, seq)`` (docs/protocol.md#alert-lifecycle-on-the-wire), so
every group topic gets raise, escalation, ack and resolution and a receiver
of several topics still sees each exactly once.

A record is named by a *tag* kept in ``Alert.pending`` until it is committed:
``raised``, ``copy:{group}``, ``escalated:{step}``,
``updated:{previous}:{severity}:{status}:{ts}``, ``acknowledged``,
``resolved``.  ``words`` (texts.py) adds what people read: ``incident``,
``rules``, ``message_key``, ``params`` and ``texts``.
"""

from __future__ import annotations

import orjson

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
    return tag == "raised" or tag.startswith(("copy:", "escalated:", "updated:"))


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
                               **({"ack": a.resolve_ack} if a.resolve_ack else {}),
                               duration=round((a.resolved_at or a.raised_at) - a.raised_at, 3),
                               readings=a.readings, message=message, lang=lang), topics_of(groups)


def copy_tag(group: str) -> str:
    return f"copy:{group}"


def copies_for_step(chain: list[ChainStep], step: int) -> list[str]:
    """The copy tags an escalation to ``step`` needs: its group, unless an earlier step already paged it."""
    group = chain[step].group
    return [] if group in groups_reached(chain, step - 1) else [copy_tag(group)]


def copy_record(a: Alert, tag: str, raised_body: dict) -> Record:
    """``alert.raised`` again, on the newly paged group's topic only, carrying the raise's key as ``copy_of``.

    ``raised_body`` is the raise as committed (``Alert.raised_body``; rebuilt by the caller for an alert
    saved before copies existed).  Without ``Alert.raised_key`` (the outbox gave no seq, or the engine
    was not told the epoch) the copy goes without ``copy_of``: the group still gets the raise.
    """
    group = tag.split(":", 1)[1]
    body = raised_body if a.raised_key is None else {**raised_body, "copy_of": a.raised_key}
    return "alarm", orjson.dumps(body), f"alert/{group}"


def raise_spent(a: Alert) -> bool:
    """No copy of the raise can be needed any more: the alert is closed and no copy waits to be committed."""
    return not a.open and not any(t.startswith("copy:") for t in a.pending)
