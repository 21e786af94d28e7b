"""Results, audit records and the counters: what the command service says, and how it says it.

Every verified command gets results on ``…/cmd/result`` (event-lane records
emitted with topic ``cmd/result``): ``rejected`` (reason) -- or ``accepted`` and
then ``executed`` or ``failed`` -- and one ``cmd.audit`` record on ``…/event``;
both name the person a service signed for (``on_behalf_of``).  Junk gets none
of this (junk.py counts it).
Every other record of the service (``valve.*``, ``lock.*``, ``program.*``)
goes through ``emit`` too, so a record that cannot be stored is counted, not
raised into a valve operation.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from core.backoff import RateLimitedLog
from core.records import event_body

log = logging.getLogger("canopy.commands")

RESULT_TOPIC = "cmd/result"
AUDITED_FIELDS = ("reason", "problem", "detail", "state", "duration_s")


def describe(exc: BaseException) -> str:
    """An exception as one short line for a result or an event."""
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def new_counters() -> dict:
    return {"received": 0, "accepted": 0, "queued": 0, "executed": 0, "failed": 0, "rejected": {}, "dropped": 0,
            "junk": {}, "junk_issuers": {}, "emit_errors": 0, "worker_errors": 0}


class Audit:
    def __init__(self, clock, emit, counters: dict):
        self.clock = clock
        self.sink = emit  # async (lane, body, topic) -> committed to the outbox
        self.counters = counters
        self.on_change: Callable[[], None] | None = None  # the runtime republishes …/state on valve/lock events
        self.on_rejected: Callable[[dict, str], Awaitable[None]] | None = None  # the lock-out counter listens
        self.ratelog = RateLimitedLog(log)

    async def emit(self, lane: str, body: bytes, topic: str | None = None) -> None:
        try:
            await self.sink(lane, body, topic)
            if self.on_change is not None and (b'"type":"valve.' in body or b'"type":"lock.' in body):
                self.on_change()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.counters["emit_errors"] += 1
            self.ratelog("emit", "commands: a record could not be stored: %s", exc)

    async def reject(self, info: dict, reason: str, detail: str, *, stale: bool = False, **extra) -> None:
        """Answer and audit a refused command of a known issuer.

        ``stale``: an authentic envelope outside its time or place (perhaps captured and sent
        again by someone else), so it never counts towards a lock-out.
        """
        rejected = self.counters["rejected"]
        rejected[reason] = rejected.get(reason, 0) + 1
        self.ratelog(reason, "command %s from %s rejected: %s (%s)", info.get("id"), info.get("issuer"), reason, detail)
        await self.result(info, "rejected", reason=reason, detail=detail, **extra)
        await self.audit(info, "rejected", reason=reason, detail=detail, **extra)
        if self.on_rejected is not None and not stale:
            await self.on_rejected(info, reason)

    async def accepted(self, info: dict) -> None:
        self.counters["accepted"] += 1
        await self.result(info, "accepted")

    async def finish(self, info: dict, status: str, **fields) -> None:
        """``executed`` or ``failed``: the result, then the audit record."""
        self.counters[status] += 1
        if status == "failed":
            log.warning("command %s (%s %s) failed: %s %s", info.get("id"), info.get("action"), info.get("target"),
                        fields.get("reason"), fields.get("detail"))
        await self.result(info, status, **fields)
        await self.audit(info, status, **{k: v for k, v in fields.items() if k in AUDITED_FIELDS})

    async def result(self, info: dict, status: str, **fields) -> None:
        await self.emit("event", event_body(self.clock.time(), "cmd.result", id=info.get("id"),
                                            status=status, issuer=info.get("issuer"), action=info.get("action"),
                                            target=info.get("target"), **_person(info), **fields), topic=RESULT_TOPIC)

    async def audit(self, info: dict, outcome: str, **fields) -> None:
        await self.emit("event", event_body(self.clock.time(), "cmd.audit", id=info.get("id"), issuer=info.get("issuer"),
                                            action=info.get("action"), target=info.get("target"), **_person(info),
                                            outcome=outcome, **fields))


def _person(info: dict) -> dict:
    """``on_behalf_of`` when a service signed for a person (v2); v1 records stay as they were."""
    return {"on_behalf_of": info["on_behalf_of"]} if info.get("on_behalf_of") else {}
