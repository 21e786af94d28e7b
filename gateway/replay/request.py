"""What an authentic ``replay`` envelope asks for (docs/protocol.md#replay): its action and parameters, checked.

``records`` names a lane, an epoch and an inclusive range of seqs; ``state`` and
``meta`` ask for those documents to be published again.  Anything else is
refused with a reason the issuer can act on (``unknown_action``,
``invalid_params``).  A range is at most ``MAX_SPAN`` seqs: a centre asks for one
gap at a time, and what the gateway holds of it is sent paced in any case.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from core.protocol.envelope import ACTIONS, Envelope
from core.records import LANES

MAX_SPAN = 1_000_000
EPOCH_RE = re.compile(r"^[0-9a-f]{16}$")
RECORDS_PARAMS = ("lane", "epoch", "from_seq", "to_seq")


class Refused(Exception):
    """The envelope is authentic but asks for something the gateway does not do (answered ``rejected``)."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class RecordsAsk:
    """Send again what is still held of seqs ``first``..``last`` of ``lane`` in ``epoch``."""

    lane: str
    epoch: str
    first: int
    last: int


@dataclass(frozen=True, slots=True)
class Ask:
    """One checked request: the envelope it came in, and what it asks (``records`` set for that action only)."""

    env: Envelope
    action: str  # records, state or meta
    records: RecordsAsk | None = None


def read(env: Envelope) -> Ask:
    """The request an authentic, fresh envelope makes; ``Refused`` when it makes none the gateway can serve."""
    if env.action not in ACTIONS["replay"]:
        raise Refused("unknown_action", f"a replay envelope's action is one of {', '.join(ACTIONS['replay'])}")
    if env.target != "*":
        raise Refused("invalid_params", "a replay envelope's target is `*`")
    params = env.params
    if env.action != "records":
        if params:
            raise Refused("invalid_params", f"`{env.action}` takes no params")
        return Ask(env, env.action)
    missing = [k for k in RECORDS_PARAMS if k not in params]
    extra = sorted(k for k in params if k not in RECORDS_PARAMS)
    if missing or extra:
        raise Refused("invalid_params", f"`records` takes exactly {', '.join(RECORDS_PARAMS)}"
                                        + (f"; missing {', '.join(missing)}" if missing else "")
                                        + (f"; unknown {', '.join(extra)}" if extra else ""))
    lane, epoch, first, last = (params[k] for k in RECORDS_PARAMS)
    if lane not in LANES:
        raise Refused("invalid_params", f"lane must be one of {', '.join(LANES)}")
    if not isinstance(epoch, str) or not EPOCH_RE.match(epoch):
        raise Refused("invalid_params", "epoch must be 16 lowercase hex digits (the batch envelope's epoch)")
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in (first, last)):
        raise Refused("invalid_params", "from_seq and to_seq must be whole numbers >= 1")
    if first > last:
        raise Refused("invalid_params", f"from_seq {first} is after to_seq {last}")
    if last - first + 1 > MAX_SPAN:
        raise Refused("invalid_params", f"at most {MAX_SPAN} seqs per request (asked for {last - first + 1})")
    return Ask(env, "records", RecordsAsk(lane, epoch, first, last))
