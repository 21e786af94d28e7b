"""What a person asked, in words they recognise, and where it stands -- pure functions, no I/O.

``describe`` is the sentence recorded with the intent ("irrigate zone-2 for 20 min, if it can
start before 10:45"); ``status_text`` says where it is now ("waiting: gateway offline since
10:32", "rejected by the gateway: interlock_rain (it is raining)").  ``check`` refuses, with
the exact reason, what no gateway could take: an unknown action, params that are not JSON
the envelope's limits allow, a validity out of range.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import orjson

from centre.acting.keys import COMMAND_ACTIONS
from core.protocol import envelope
from core.protocol.envelope import ID_RE, PERSON_RE, TARGET_RE, Malformed

KINDS = ("command", "ack")
ACK_ACTIONS = envelope.ACTIONS["ack"]
_PROBE_KEY = envelope.generate()  # signs the size probe only; never sent


class IntentError(ValueError):
    """Why an intent cannot be recorded (shown to the person as is)."""


@dataclass(frozen=True, slots=True)
class Intent:
    id: str
    user: str
    kind: str  # command | ack
    site: str
    gateway: str
    target: str
    action: str
    params: dict
    created_at: float
    valid_until: float


def new_id() -> str:
    return secrets.token_hex(8)


def check(intent: Intent, *, max_validity: float) -> None:
    """Raise IntentError unless a gateway could take this intent as a signed envelope."""
    if intent.kind not in KINDS:
        raise IntentError(f"kind must be one of {', '.join(KINDS)} (got {intent.kind!r})")
    actions = COMMAND_ACTIONS if intent.kind == "command" else ACK_ACTIONS
    if intent.action not in actions:
        raise IntentError(f"{intent.kind} action must be one of {', '.join(actions)} (got {intent.action!r})")
    if not PERSON_RE.match(intent.user):
        raise IntentError(f"user {intent.user!r} cannot be named in an envelope (letters, digits, _ . : @ + -)")
    for name in ("site", "gateway"):
        if not TARGET_RE.match(getattr(intent, name)) or getattr(intent, name) == "*":
            raise IntentError(f"{name} {getattr(intent, name)!r} is not an id")
    if not TARGET_RE.match(intent.target):
        raise IntentError(f"target {intent.target!r} is not an id (or '*')")
    if not ID_RE.match(intent.id):
        raise IntentError(f"id {intent.id!r} is not an envelope id")
    validity = intent.valid_until - intent.created_at
    if not 0 < validity <= max_validity:
        raise IntentError(f"validity must be between 1 s and {max_validity:.0f} s (got {validity:.0f} s)")
    probe = envelope.make(v=2, kind=intent.kind, id=intent.id, issuer="centre-1", on_behalf_of=intent.user,
                          site=intent.site, gateway=intent.gateway, target=intent.target, action=intent.action,
                          params=intent.params, now=intent.created_at, valid_for=min(validity, 3600))
    try:
        envelope.parse(orjson.dumps(envelope.sign(probe, _PROBE_KEY)), kind=intent.kind)
    except Malformed as exc:
        raise IntentError(f"the gateway would refuse this {intent.kind} ({exc.reason}): {exc}") from None
    except TypeError as exc:  # params orjson cannot write
        raise IntentError(f"params must be plain JSON: {exc}") from None


def describe(intent: Intent, tz: ZoneInfo | None = None) -> str:
    """The intent in words, with its validity: what the person saw when they acted."""
    p, target = intent.params, intent.target
    if intent.kind == "ack":
        what = "acknowledge" if intent.action == "acknowledge" else "acknowledge and resolve"
        note = f' ("{p["note"]}")' if isinstance(p.get("note"), str) and p["note"] else ""
        return f"{what} alert {target}{note}, if it reaches the gateway before {clock(intent.valid_until, tz, intent.created_at)}"
    if intent.action == "irrigate":
        seconds = p.get("duration_s")
        span = f" for {_duration(seconds)}" if isinstance(seconds, (int, float)) and seconds > 0 else ""
        what = f"irrigate {target}{span}"
    elif intent.action == "override":
        state, seconds = p.get("state"), p.get("duration_s")
        span = f" for {_duration(seconds)}" if isinstance(seconds, (int, float)) and seconds > 0 else ""
        what = f"return {target} to automatic" if state == "auto" else f"hold {target} {state}{span}"
    elif intent.action in ("close_all", "resume_programs"):
        what = intent.action.replace("_", " ") + f" at {intent.gateway}"
    else:
        what = f"{intent.action.replace('_', ' ')} {target}"
    return f"{what}, if it can start before {clock(intent.valid_until, tz, intent.created_at)}"


def status_text(row, gateway, now: float, tz: ZoneInfo | None = None) -> str:
    """Where a commands row stands, for people: ``row`` and ``gateway`` are mappings (gateway may be None)."""
    status = row["status"]
    when = lambda ts: clock(ts, tz, now)  # noqa: E731
    if status == "pending":
        return f"waiting: {gateway_words(gateway, tz, now)}"
    if status == "sent":
        times = f" ({row['sends']}×)" if (row["sends"] or 0) > 1 else ""
        return f"sent {when(row['sent_at'])}{times}, waiting for the gateway's answer (valid until {when(row['valid_until'])})"
    if status == "expired":
        return f"expired at {when(row['valid_until'])}: {row['detail'] or 'no answer from the gateway'}"
    if status in ("rejected", "failed"):
        reason = f"{row['reason']}" + (f" ({row['detail']})" if row["detail"] else "") if row["reason"] else (row["detail"] or "")
        return f"{status} by the gateway" + (f": {reason}" if reason else "")
    if status == "accepted":
        return f"accepted by the gateway {when(row['result_at'])}, being carried out"
    return f"{status} {when(row['result_at'])}" if row.get("result_at") else status


def gateway_words(gateway, tz: ZoneInfo | None, now: float) -> str:
    """"gateway offline since 10:32 (connection lost)" -- why something is not sent yet."""
    if gateway is None:
        return "the centre has never heard from this gateway"
    name = gateway["gateway"]
    if gateway["status"] == "online":
        return f"gateway {name} is online"
    since = f" since {clock(gateway['status_since'], tz, now)}" if gateway.get("status_since") else ""
    reason = f" ({gateway['reason']})" if gateway.get("reason") else ""
    return f"gateway {name} offline{since}{reason}" if gateway["status"] == "offline" else f"gateway {name} not seen online yet"


def clock(ts: float | None, tz: ZoneInfo | None, now: float | None = None) -> str:
    """``10:45`` today, ``Dec 7 10:45`` on another day (in ``tz``, default the host's zone)."""
    if ts is None:
        return "?"
    t = dt.datetime.fromtimestamp(ts, tz).astimezone(tz) if tz else dt.datetime.fromtimestamp(ts).astimezone()
    ref = dt.datetime.fromtimestamp(now if now is not None else ts, t.tzinfo)
    return t.strftime("%H:%M") if t.date() == ref.date() else t.strftime("%b %-d %H:%M")


def _duration(seconds: float) -> str:
    if seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    if seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"
