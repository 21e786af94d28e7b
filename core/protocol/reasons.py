"""Reason codes the gateway answers with: one table, so the code, the tests and the documents agree.

``REJECT_REASONS`` and ``FAIL_REASONS`` are the ``reason`` of a ``cmd.result`` (docs/commands.md).
``PROBLEMS`` says, for a ``malformed`` rejection of any signed envelope, what exactly was wrong
(the result's ``problem``; docs/protocol.md#signed-envelopes).
"""

from __future__ import annotations

from core.protocol.limits import REASONS as LIMIT_PROBLEMS

# Reason codes of a "rejected" result (docs/commands.md lists them with their meaning).
REJECT_REASONS: dict[str, str] = {
    "malformed": "not a JSON object of the envelope's shape (or too large)",
    "unsigned": "no signature",
    "unauthorised_issuer": "issuer unknown or disabled",
    "bad_signature": "signature does not verify with the issuer's key",
    "wrong_gateway": "site/gateway in the envelope are not this gateway's",
    "expired": "expires_at is in the past",
    "future_dated": "issued_at is ahead of the gateway's clock by more than clock_skew",
    "validity_too_long": "expires_at - issued_at is longer than max_validity",
    "replayed": "this id was already received from this issuer",
    "unknown_target": "no valve or lock with that id (or zone); for override, no control with that id",
    "unknown_action": "not an action the gateway knows",
    "unsupported_action": "the action does not apply to that kind of target",
    "unauthorised_action": "the issuer may not ask for this action",
    "unauthorised_target": "the issuer may not command this valve or lock",
    "missing_duration": "irrigate needs params.duration_s",
    "invalid_duration": "duration_s is not a positive number of seconds",
    "duration_exceeds_max": "duration_s is longer than the valve's max_run",
    "invalid_params": "unknown or wrongly typed parameters",
    "interlock": "an interlock forbids opening (see the interlock field)",
    "capacity": "the valve's pump/manifold already feeds max_open zones (when_full: refuse; see the manifold field)",
    "lockout": "too many rejected unlock attempts; unlocks refused for a while",
    "shutting_down": "the gateway is stopping",
}
FAIL_REASONS: dict[str, str] = {
    "device_error": "the device did not answer or refused the write",
    "readback_mismatch": "the state read back after the write is not what was written",
    "store_error": "the command id could not be recorded (replay protection), so nothing was done",
    "not_confirmed": "the valve's feedback did not agree within confirm_within (an opening is then commanded closed again)",
    "queue_expired": "a queued opening found no free slot on its manifold within max_wait",
    "cancelled": "a queued opening was cancelled (close, close_all, a newer irrigate, shutdown) before it started",
    "interlock": "a queued opening was blocked by an interlock when its slot freed",
}

# What made an envelope ``malformed``: the size/shape limits, then the envelope's own checks.
PROBLEMS: dict[str, str] = {
    **LIMIT_PROBLEMS,
    "bad_version": "v is not 1 or 2 (or a v1 envelope on a topic that takes only v2)",
    "wrong_kind": "the envelope's kind is not the kind its topic takes",
    "missing_field": "a required field is missing",
    "unknown_field": "a field the envelope does not have",
    "bad_field": "a field has the wrong type, length or characters",
    "bad_signature_format": "signature is not base64 of 64 bytes",
}

# The answer to a v1 unsigned acknowledgement ({"alert": …, "by": …}) on …/alert/ack.
UNSIGNED_ACK = "unsigned_ack"
UNSIGNED_ACK_DETAIL = "acks must be signed v2 envelopes, see docs/protocol.md#acknowledgements"
