"""The sender (a leader job): pending intents go out when their gateway is online, unanswered ones again, late ones expire.

Each round reads the rows nobody answered yet (``rank <= 1``) with their gateway's status
and decides for each (:func:`decide`, pure): send it now, wait, or mark it ``expired`` with
the reason in words.  A round runs every ``check_interval`` and at once when the hub says a
gateway came online or a person acted on this instance; rows made on other instances are
found by the next round.  Nothing is marked sent before the broker's PUBACK.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import orjson

from centre.acting import rows, signing
from centre.acting.config import ActingConfig
from centre.acting.intents import clock, gateway_words
from centre.acting.keys import KeysError
from centre.hub import Change
from centre.store.engine import write_transaction
from core.backoff import RateLimitedLog
from core.mqtt import MqttError

log = logging.getLogger("centre.acting")


@dataclass(frozen=True, slots=True)
class Decision:
    action: str  # send | wait | expire
    detail: str = ""


def resend_delay(sends: int, cfg: ActingConfig) -> float:
    return min(cfg.resend_max, cfg.resend_after * 2 ** max(0, sends - 1))


def decide(row, now: float, cfg: ActingConfig, tz=None) -> Decision:
    """What to do with one unanswered row (``rows.waiting``) now.  Pure."""
    gw = _gateway(row)
    capability = signing.CAPABILITY[row.kind]
    if row.status == "sent":
        if now >= row.valid_until + cfg.expire_grace:
            last = clock(row.sent_at, tz, now)
            return Decision("expire", f"sent {row.sends}× (last at {last}), no answer from the gateway before it expired")
    elif now >= row.valid_until - signing.MIN_VALIDITY:
        return Decision("expire", f"never sent: {_why_not(gw, capability, tz, now)}")
    if row.kind == "replay" or gw is None or gw["status"] != "online" or capability not in (row.gw_capabilities or ()):
        return Decision("wait", _why_not(gw, capability, tz, now))
    if row.status == "pending" or now >= (row.sent_at or 0) + resend_delay(row.sends, cfg):
        return Decision("send")
    return Decision("wait", "waiting for the gateway's answer")


class Sender:
    def __init__(self, centre, keys, publisher, cfg: ActingConfig, *, tz=None, clock=time.time):
        self.centre = centre
        self.engine = centre.engine
        self.keys = keys
        self.publisher = publisher
        self.cfg = cfg
        self.tz = tz
        self.clock = clock
        self.counters = {"rounds": 0, "sent": 0, "resent": 0, "expired": 0, "send_errors": 0, "no_key": 0}
        self.problems: dict[str, str] = {}  # row id -> why it could not be sent (key missing, …), for its expiry
        self._log = RateLimitedLog(log)

    async def run(self) -> None:
        sub = self.centre.hub.subscribe(["gateway", "command"])
        try:
            while True:
                await self.round()
                await self._wake(sub)
        finally:
            self.centre.hub.unsubscribe(sub)

    async def _wake(self, sub) -> None:
        """Sleep until the next round: ``check_interval``, or a gateway online / a new intent here."""
        deadline = time.monotonic() + self.cfg.check_interval
        while (left := deadline - time.monotonic()) > 0:
            try:
                change = await asyncio.wait_for(sub.get(), left)
            except TimeoutError:
                return
            if change.data.get("status") in ("online", "pending"):
                return

    async def round(self) -> None:
        now = self.clock()
        async with self.engine.connect() as conn:
            waiting = await rows.waiting(conn, self.cfg.send_batch)
        changes = []
        for row in waiting:
            d = decide(row, now, self.cfg, self.tz)
            if d.action == "expire":
                detail = d.detail if row.status == "sent" or row.id not in self.problems else f"never sent: {self.problems[row.id]}"
                changes += await self._expire(row, detail, now)
            elif d.action == "send":
                changes += await self._send(row, now)
        self.counters["rounds"] += 1
        self.centre.hub.publish(changes)

    async def _send(self, row, now: float) -> list[Change]:
        try:
            env = signing.sign(self.keys, id=row.id, kind=row.kind, site=row.site, gateway=row.gateway, target=row.target,
                               action=row.action, params=row.params, on_behalf_of=row.on_behalf_of,
                               valid_until=row.valid_until, now=now, envelope_validity=self.cfg.envelope_validity)
        except KeysError as exc:
            self.problems[row.id] = str(exc)
            self.counters["no_key"] += 1
            self._log("no_key", "cannot sign %s %s for %s: %s", row.kind, row.id, row.on_behalf_of, exc)
            return []
        try:
            await self.publisher.publish(signing.topic(row.kind, row.site, row.gateway), orjson.dumps(env))
        except MqttError as exc:
            self.counters["send_errors"] += 1
            self.problems[row.id] = f"the broker did not take it ({exc})"
            return []
        async with write_transaction(self.engine) as conn:
            await rows.mark_sent(conn, row.id, env, now)
        self.problems.pop(row.id, None)
        self.counters["resent" if row.status == "sent" else "sent"] += 1
        log.info("%s %s %s %s for %s sent to %s/%s (send %d)", row.kind, row.id, row.action, row.target, row.on_behalf_of,
                 row.site, row.gateway, (row.sends or 0) + 1)
        return [Change("command", {"id": row.id, "kind": row.kind, "status": "sent", "site": row.site,
                                   "gateway": row.gateway, "reason": None})]

    async def _expire(self, row, detail: str, now: float) -> list[Change]:
        async with write_transaction(self.engine) as conn:
            changed = await rows.mark_expired(conn, row.id, detail, now)
        self.problems.pop(row.id, None)
        if not changed:
            return []
        self.counters["expired"] += 1
        log.info("%s %s for %s at %s/%s expired: %s", row.kind, row.id, row.on_behalf_of, row.site, row.gateway, detail)
        return [Change("command", {"id": row.id, "kind": row.kind, "status": "expired", "site": row.site,
                                   "gateway": row.gateway, "reason": None, "detail": detail})]


def _gateway(row) -> dict | None:
    if row.gw_status is None:
        return None
    return {"gateway": row.gateway, "status": row.gw_status, "status_since": row.gw_since, "reason": row.gw_reason}


def _why_not(gw: dict | None, capability: str, tz, now: float) -> str:
    if gw is not None and gw["status"] == "online":
        return f"gateway {gw['gateway']} does not take these (no '{capability}' among its capabilities)"
    return gateway_words(gw, tz, now)
