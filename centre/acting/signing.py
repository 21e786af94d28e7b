"""Sign at send time: a v2 envelope made the moment it goes out, valid until the person's deadline.

``issued_at`` is the send time, not the time the person acted, so an intent that waited
an hour for its gateway is not refused ``expired`` or ``validity_too_long``; ``expires_at``
is the person's ``valid_until``, cut to ``envelope_validity`` (the gateways'
``commands.max_validity``) -- a later re-send carries a later one.  The id is the row's id
every time: a gateway that already has it refuses the copy (``replayed``) and acts once.
"""

from __future__ import annotations

from core.protocol import CONTROLS, REPLAY, SIGNED_ACKS, envelope
from core.protocol.topics import Topics

# what a gateway must announce in …/state before it is sent an envelope of a kind (docs/protocol.md#capabilities)
CAPABILITY = {"command": CONTROLS, "ack": SIGNED_ACKS, "replay": REPLAY}
MIN_VALIDITY = 1.0  # seconds: an envelope that would live less is not sent (the gateway could not act on it)


def topic(kind: str, site: str, gateway: str) -> str:
    return f"{Topics(site, gateway).base}/{envelope.KINDS[kind]}"


def expires_at(valid_until: float, now: float, envelope_validity: float) -> float:
    return min(valid_until, now + envelope_validity)


def sign(keys, *, id: str, kind: str, site: str, gateway: str, target: str, action: str, params: dict | None,
         on_behalf_of: str | None, valid_until: float, now: float, envelope_validity: float) -> dict:
    """The signed envelope for one send; raises KeysError when the site has no usable key."""
    issuer, key = keys.signing_key(site)
    env = envelope.make(v=2, kind=kind, id=id, issuer=issuer, on_behalf_of=on_behalf_of, site=site, gateway=gateway,
                        target=target, action=action, params=params or {}, now=now,
                        valid_for=expires_at(valid_until, now, envelope_validity) - now)
    return envelope.sign(env, key)
