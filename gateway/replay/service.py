"""``…/replay`` in the daemon: the topic handler, one worker, and the ``replay.result`` answers.

``on_request`` (sync, for every message on ``…/replay``) runs the gate
(gate.py): junk is counted and dropped there, unanswered; an authentic
request -- or the refusal of an authentic one -- takes a slot of a small
queue (``QUEUE``; beyond it the message is dropped and counted: the centre
asks again).  One worker serves the queue in order:

- ``records``: walks the range a window (``WINDOW`` seqs) at a time through
  ``Outbox.holding``, sends again every retained row (sender.py: paced, behind
  live alarms), and answers ``done`` -- everything asked for was sent again or
  is still on its way -- or ``partial`` with the part no longer held (tally.py);
- ``state`` / ``meta``: publishes that document again, answers ``done``;
- a refusal (``unknown_action``, ``invalid_params``, stale) is answered
  ``rejected`` within a per-issuer budget (``ANSWERS_BURST``, then one a
  minute): every answer is a commit, and the SD card counts commits.

Answers are ``replay.result`` records on ``…/cmd/result`` (event lane), built
from the fields ``core.protocol.messages.commands.ReplayResult`` declares (the counts
``sent``, ``pending``, ``missing`` and ``missing_runs`` among them; ``detail`` says
the same in words).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable

from core.backoff import RateLimitedLog
from core.protocol.envelope import Envelope
from core.protocol.messages.commands import ReplayResult
from core.records import event_body
from gateway.commands.gate import Junk, TokenBucket
from gateway.replay import request
from gateway.replay.gate import ReplayGate, issuer_keys
from gateway.replay.request import Ask, Refused
from gateway.replay.sender import Interrupted, Sender
from gateway.replay.tally import Tally

log = logging.getLogger("canopy.replay")

QUEUE = 8  # requests waiting; a centre sends one per open gap and replay_interval
WINDOW = 500  # seqs read from the outbox at a time
ANSWERS_BURST, ANSWERS_PER_S = 5.0, 1 / 60
RESULT_TOPIC = "cmd/result"
RESULT_FIELDS = frozenset(ReplayResult.model_fields) - {"seq", "ts", "type", "topic"}
DEFAULT_BYTES_PER_S = 64 * 1024
STALE = frozenset({"wrong_gateway", "expired", "future_dated", "validity_too_long", "malformed"})

Emit = Callable[[str, bytes, str | None], Awaitable[object]]


class ReplayService:
    def __init__(self, cfg, clock, outbox, uplink, emit: Emit, *, publish_state: Callable[[], None] | None = None,
                 publish_meta: Callable[[], None] | None = None, bytes_per_s: float = DEFAULT_BYTES_PER_S):
        cc = cfg.site.commands
        self.gate = ReplayGate(cfg.site.site, cfg.site.gateway, cc, issuer_keys(cc, cfg.base_dir), clock)
        self.clock = clock
        self.outbox = outbox
        self.uplink = uplink
        self.emit = emit
        self.publish_state = publish_state
        self.publish_meta = publish_meta
        self.bytes_per_s = bytes_per_s
        self.inbox: deque[Ask | tuple[Envelope, Refused]] = deque()
        self._ready = asyncio.Event()
        self.answers: dict[str, TokenBucket] = {}
        self.current: dict | None = None  # the replay being sent, for the status file
        self.counters: dict = {"received": 0, "requests": 0, "done": 0, "partial": 0, "records_sent": 0,
                               "messages_sent": 0, "missing": 0, "dropped": 0, "rejected": {}, "unanswered": 0,
                               "junk": {}, "junk_issuers": {}, "errors": 0}
        self.ratelog = RateLimitedLog(log)

    @property
    def takes_requests(self) -> bool:
        """Only a site naming an issuer that may replay subscribes to ``…/replay`` (and so announces ``replay``)."""
        return bool(self.gate.keys)

    # -- the topic handler (sync, on the loop) ----------------------------------------------
    def on_request(self, topic: str, payload: bytes) -> None:
        self.counters["received"] += 1
        verdict = self.gate.admit(payload)
        if isinstance(verdict, Junk):
            return self._junk(verdict)
        try:
            stale = self.gate.stale(verdict, self.clock.time())
            if stale is not None:
                raise Refused(*stale)
            item: Ask | tuple[Envelope, Refused] = request.read(verdict)
        except Refused as exc:
            if not self._answer_budget(verdict.issuer).take(self.clock.monotonic()):
                if exc.reason in STALE:  # perhaps captured and sent again: junk, as on …/cmd
                    return self._junk(Junk("stale", exc.reason, exc.detail, verdict.issuer))
                self.counters["unanswered"] += 1
                return self.ratelog("unanswered", "replay: request %s from %s refused unanswered (%s: %s)",
                                    verdict.id, verdict.issuer, exc.reason, exc.detail)
            item = (verdict, exc)
        if len(self.inbox) >= QUEUE:
            self.counters["dropped"] += 1
            self.ratelog("full", "replay: request %s from %s dropped: %d waiting already", verdict.id, verdict.issuer, QUEUE)
            return
        self.inbox.append(item)
        self._ready.set()

    def _junk(self, junk: Junk) -> None:
        by_kind = self.counters["junk"].setdefault(junk.kind, {})
        by_kind[junk.reason] = by_kind.get(junk.reason, 0) + 1
        if junk.issuer is not None:
            self.counters["junk_issuers"][junk.issuer] = self.counters["junk_issuers"].get(junk.issuer, 0) + 1
        self.ratelog(f"junk-{junk.kind}", "replay: refused unanswered (%s: %s; %s); counted", junk.kind, junk.reason,
                     junk.detail)

    def _answer_budget(self, issuer: str) -> TokenBucket:
        bucket = self.answers.get(issuer)
        if bucket is None:  # one per configured issuer that may replay: bounded by the config
            bucket = self.answers[issuer] = TokenBucket(ANSWERS_PER_S, ANSWERS_BURST, ANSWERS_BURST, self.clock.monotonic())
        return bucket

    # -- the worker ------------------------------------------------------------------------
    async def run(self) -> None:
        while True:
            while not self.inbox:
                self._ready.clear()
                await self._ready.wait()
            item = self.inbox.popleft()
            try:
                await self.handle(item)
            except asyncio.CancelledError:
                raise
            except Exception:
                self.counters["errors"] += 1
                log.exception("replay: handling a request failed")

    async def handle(self, item: Ask | tuple[Envelope, Refused]) -> None:
        if isinstance(item, tuple):
            env, refused = item
            rejected = self.counters["rejected"]
            rejected[refused.reason] = rejected.get(refused.reason, 0) + 1
            log.warning("replay request %s from %s rejected: %s (%s)", env.id, env.issuer, refused.reason, refused.detail)
            return await self._answer(env, "rejected", reason=refused.reason, detail=refused.detail)
        self.counters["requests"] += 1
        if item.action == "records":
            return await self.replay_records(item)
        publish = self.publish_state if item.action == "state" else self.publish_meta
        if publish is not None:
            publish()
        self.counters["done"] += 1
        await self._answer(item.env, "done", detail=f"…/{item.action} published again")

    async def replay_records(self, ask: Ask) -> Tally:
        """Send again what is held of the range; answer with what was sent and what is gone."""
        r = ask.records
        top = self.outbox.counters[r.lane].last_seq if r.epoch == self.outbox.epoch else None
        tally = Tally(r.first, r.last, top)
        sender = Sender(self.uplink, self.outbox, r.lane, tally, bytes_per_s=self.bytes_per_s, clock=self.clock)
        self.current = {"id": ask.env.id, "issuer": ask.env.issuer, "lane": r.lane, "from_seq": r.first, "to_seq": r.last}
        reason = None
        try:
            if r.epoch != self.outbox.epoch:
                reason = "unknown_epoch"  # another outbox file's, or records published from memory: none kept
                tally.gone(r.first, r.last)
            else:
                await self._walk(r.lane, tally, sender)
        finally:
            self.current = None
        self.counters[tally.status] += 1
        self.counters["records_sent"] += tally.sent
        self.counters["messages_sent"] += sender.messages
        self.counters["missing"] += tally.missing
        if tally.status == "partial" and reason is None:
            reason = "interrupted" if tally.interrupted else "not_held"
        detail = tally.describe() + (f"; the outbox's epoch is {self.outbox.epoch}" if reason == "unknown_epoch" else "")
        log.info("replay %s from %s, %s %s %d-%d: %s", ask.env.id, ask.env.issuer, r.lane, r.epoch, r.first, r.last, detail)
        await self._answer(ask.env, tally.status, reason=reason, detail=detail, lane=r.lane, epoch=r.epoch,
                           first=tally.first_sent, last=tally.last_sent,
                           oldest_kept=tally.oldest_held if tally.missing else None, sent=tally.sent,
                           pending=tally.pending, missing=tally.missing, missing_runs=tally.runs)
        return tally

    async def _walk(self, lane: str, tally: Tally, sender: Sender) -> None:
        """Below the oldest seq held everything is gone at once; above it, window by window."""
        tally.oldest_held = await self.outbox.oldest_held(lane)
        lo = tally.first
        held_from = tally.oldest_held if tally.oldest_held is not None else tally.end + 1
        if lo < held_from:
            tally.gone(lo, min(tally.end, held_from - 1))
            lo = held_from
        try:
            while lo <= tally.end:
                hi = min(tally.end, lo + WINDOW - 1)
                held = await self.outbox.holding(lane, lo, hi)
                await sender.add(tally.window(lo, hi, held.pending, held.retained))
                lo = hi + 1
            await sender.flush()
        except Interrupted as exc:
            tally.interrupted = str(exc)

    async def _answer(self, env: Envelope, status: str, **fields) -> None:
        body = {"id": env.id, "issuer": env.issuer, "on_behalf_of": env.on_behalf_of, "status": status, **fields}
        body = {k: v for k, v in body.items() if k in RESULT_FIELDS and (v is not None or k in ("id", "issuer"))}
        try:
            await self.emit("event", event_body(self.clock.time(), "replay.result", **body), RESULT_TOPIC)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.counters["errors"] += 1
            self.ratelog("emit", "replay: an answer could not be stored: %s", exc)

    def snapshot(self) -> dict:
        """For the status file: who may ask, what is queued or being sent, the counters."""
        return {"issuers": sorted(self.gate.keys), "queue": len(self.inbox), "current": self.current,
                "counters": self.counters}
