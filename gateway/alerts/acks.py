"""Ack messages from ``…/alert/ack``: parsed and checked before the engine sees them.  Pure.

``{"v": 1, "alert": id, "by": who, "resolve": bool?, "note": text?}``; anything
else gives a reason in plain words (counted and logged by the engine, never raised).
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from core.records import event_body

ACK_FIELD_MAX = 64
NOTE_MAX = 500
REJECTIONS_PER_MINUTE = 10  # answers to refused acks; a flood of bad acks gets no more


@dataclass(frozen=True)
class Ack:
    alert: str
    by: str
    resolve: bool = False
    note: str | None = None


def parse_ack(payload: bytes) -> Ack | str:
    """The ack, or why it is rejected."""
    try:
        msg = orjson.loads(payload)
    except (orjson.JSONDecodeError, TypeError):
        return f"not JSON ({len(payload or b'')} bytes)"
    problem = ack_problem(msg)
    if problem:
        return problem
    return Ack(msg["alert"], msg["by"].strip(), bool(msg.get("resolve", False)), msg.get("note"))


def ack_problem(msg) -> str | None:
    if not isinstance(msg, dict):
        return "not a JSON object"
    if msg.get("v", 1) != 1:
        return f"unsupported version {msg.get('v')!r}"
    aid = msg.get("alert")
    if not isinstance(aid, str) or not aid or len(aid) > ACK_FIELD_MAX:
        return "'alert' (the alert id, text) is missing or invalid"
    by = msg.get("by")
    if not isinstance(by, str) or not by.strip() or len(by) > ACK_FIELD_MAX:
        return "'by' (who acknowledges, text up to 64 characters) is missing or invalid"
    if "resolve" in msg and not isinstance(msg["resolve"], bool):
        return "'resolve' must be true or false"
    note = msg.get("note")
    if note is not None and (not isinstance(note, str) or len(note) > NOTE_MAX):
        return f"'note' must be text up to {NOTE_MAX} characters"
    return None


class Rejections:
    """``alert.ack_rejected`` answers, at most REJECTIONS_PER_MINUTE."""

    def __init__(self):
        self._sent: list[float] = []

    def answer(self, now: float, alert, by, reason: str) -> bytes | None:
        """The record body, or None when the minute's answers are used up."""
        self._sent = [t for t in self._sent if now - t < 60]
        if len(self._sent) >= REJECTIONS_PER_MINUTE:
            return None
        self._sent.append(now)
        return event_body(now, "alert.ack_rejected", alert=str(alert)[:ACK_FIELD_MAX], by=str(by)[:ACK_FIELD_MAX], reason=reason)
