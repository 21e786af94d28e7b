"""Every message on ``…/alert/ack`` ends here exactly once: accepted, or refused with a reason that is counted.

The checks of the envelope are in acks.py; this decides what a checked ack does to
its alert -- it must exist, be within the issuer's ``ack`` permission (class or
recipient group, docs/alerts.md#who-may-acknowledge), and still be open to what the
ack asks -- and answers.  A refusal changes nothing: the alert stays open, its
outputs stay on and its escalation goes on.  Refusals are counted per reason (the
engine's snapshot, so ``…/state``), logged rate-limited, and answered with
``alert.ack_rejected``: always for a correctly signed new ack (its durable audit),
at most REJECTIONS_PER_MINUTE a minute for everything else.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from core.backoff import RateLimitedLog
from core.records import event_body
from gateway.alerts.acks import FIELD_MAX, AckChecker, AckRefusal, AckRequest
from gateway.alerts.emission import RecordQueue
from gateway.alerts.lifecycle import Alert

log = logging.getLogger("canopy.alerts")

REJECTIONS_PER_MINUTE = 10  # answers to unverified acks; a flood of junk gets no more
UNKNOWN_ALERT = "unknown alert"
UNAUTHORISED_ALERT = "unauthorised_alert"

Apply = Callable[..., bool]  # the engine's apply_ack(alert, by, resolve, note, now, issuer=, ack_id=): True if something changed


class Rejections:
    """``alert.ack_rejected`` answers: every audited one, at most REJECTIONS_PER_MINUTE of the others."""

    def __init__(self):
        self._sent: list[float] = []

    def answer(self, now: float, refusal: AckRefusal) -> bytes | None:
        """The record body, or None when the minute's answers to junk are used up."""
        if not refusal.audited:
            self._sent = [t for t in self._sent if now - t < 60]
            if len(self._sent) >= REJECTIONS_PER_MINUTE:
                return None
            self._sent.append(now)
        extra = {"id": refusal.id} if refusal.id else {}
        return event_body(now, "alert.ack_rejected", alert=str(refusal.alert)[:FIELD_MAX], by=str(refusal.by)[:FIELD_MAX],
                          reason=refusal.reason, detail=refusal.detail, **extra)


class AckDesk:
    def __init__(self, checker: AckChecker, records: RecordQueue, counters: dict[str, int], wake: Callable[[], None]):
        """``counters``: the engine's (``ack_ok``, ``ack_rejected``); ``wake`` gets the engine to commit the answer."""
        self.checker = checker
        self.records = records
        self.counters = counters
        self.rejected: dict[str, int] = {}  # reason -> count, since start
        self._wake = wake
        self._rejections = Rejections()
        self._ratelog = RateLimitedLog(log)

    def handle(self, payload: bytes, now: float, alerts: dict[str, Alert], groups_of: Callable[[Alert], list[str]],
               apply: Apply) -> bool:
        """One message; True when it was correctly signed and new (its id must reach the state file)."""
        checked = self.checker.check(payload, now)
        if isinstance(checked, AckRefusal):
            self.refuse(now, checked)
            return False
        self._decide(checked, now, alerts, groups_of, apply)
        return True

    def _decide(self, req: AckRequest, now: float, alerts: dict[str, Alert], groups_of, apply: Apply) -> None:
        a = alerts.get(req.alert)
        if a is None:
            return self.refuse(now, req.refused(UNKNOWN_ALERT, f"no alert {req.alert!r} on this gateway (closed long ago, or a typo)"))
        groups = groups_of(a)
        if not req.permission.may_ack(a.cls, groups):
            scope = ", ".join(req.permission.ack)
            return self.refuse(now, req.refused(UNAUTHORISED_ALERT, f"{req.issuer} (for {req.by}) may not acknowledge this alert "
                                                f"(class {a.cls}, groups {', '.join(groups) or 'none'}; its ack permission: {scope})"))
        if apply(a, req.by, req.resolve, req.note, now, issuer=req.issuer, ack_id=req.id):
            self.counters["ack_ok"] += 1
            return None
        log.info("ack %s from %s for alert %s changed nothing (already %s)", req.id, req.by, a.id, a.status)
        return self.refuse(now, req.refused(f"already {a.status}", f"the alert is already {a.status}"))

    def refuse(self, now: float, refusal: AckRefusal) -> None:
        self.counters["ack_rejected"] += 1
        self.rejected[refusal.reason] = self.rejected.get(refusal.reason, 0) + 1
        self._ratelog(refusal.reason, "ack rejected (%s): %s [alert %r, by %r]", refusal.reason, refusal.detail,
                      refusal.alert, refusal.by)
        body = self._rejections.answer(now, refusal)
        if body is not None and self.records.add_event(body, audited=refusal.audited):
            self._wake()
