"""What junk on ``…/cmd`` costs: a counter, a summary a minute, a log line a minute -- never a record each.

Every refused message the gate (gate.py) or the worker calls junk -- unparseable,
unsigned, unknown issuer, replayed, rate-limited, bad signature, stale -- is counted by kind and
reason in ``counters["junk"]`` (``…/state`` → ``commands.counters``), and per
configured issuer in ``counters["junk_issuers"]``.  Nothing is written per message:
at most one ``cmd.junk`` summary event every SUMMARY_EVERY seconds (the counts since
the last one) and a log line carrying the count.

One courtesy: a message that cannot be parsed is still answered (``rejected``,
``malformed``, with its ``problem``) and audited when it comes alone -- no other junk
within ANSWER_HOLD seconds after it, at most one such answer every ANSWER_EVERY
seconds -- so an issuer's tool with a bug learns why, while a flood gets no answers.
"""

from __future__ import annotations

import logging

from core.protocol.envelope import peek
from core.records import event_body
from gateway.commands.gate import Junk

log = logging.getLogger("canopy.commands")

SUMMARY_EVERY = 60.0  # seconds: at most one cmd.junk event and one log line this often
ANSWER_HOLD = 1.0  # an unparseable message is answered only if no other junk follows within this
ANSWER_EVERY = 10.0  # and at most this often


class JunkLedger:
    def __init__(self, clock, jobs, audit, counters: dict):
        self.clock = clock
        self.jobs = jobs
        self.audit = audit
        self.counters = counters
        self.period: dict[str, dict[str, int]] = {}  # counts since the last summary
        self.period_issuers: dict[str, int] = {}
        self.period_total = 0
        self.period_since: float | None = None  # wall time of the period's first junk
        self.active = False  # junk seen lately: a summary is scheduled
        self.pending: tuple[Junk, bytes] | None = None  # an unparseable message waiting for its answer
        self.last_answer = -ANSWER_EVERY
        self.last_junk = -ANSWER_HOLD

    def count(self, junk: Junk, payload: bytes = b"") -> None:
        """Count one refused message (sync: called from ``on_command`` for every one)."""
        by_kind = self.counters["junk"].setdefault(junk.kind, {})
        by_kind[junk.reason] = by_kind.get(junk.reason, 0) + 1
        period = self.period.setdefault(junk.kind, {})
        period[junk.reason] = period.get(junk.reason, 0) + 1
        if junk.issuer is not None:
            issuers = self.counters["junk_issuers"]
            issuers[junk.issuer] = issuers.get(junk.issuer, 0) + 1
            self.period_issuers[junk.issuer] = self.period_issuers.get(junk.issuer, 0) + 1
        self.period_total += 1
        if self.period_since is None:
            self.period_since = self.clock.time()
        if not self.active:
            self.active = True
            log.warning("commands: refusing junk on …/cmd (%s: %s; %s) without answers; counted in …/state, "
                        "summed up every %g s", junk.kind, junk.reason, junk.detail, SUMMARY_EVERY)
            self.jobs.schedule(("junk", "summary"), SUMMARY_EVERY, self.summary)
        self._courtesy(junk, payload)

    def _courtesy(self, junk: Junk, payload: bytes) -> None:
        mono = self.clock.monotonic()
        if self.pending is not None:  # more junk right after it: a flood, not a mistake
            self.pending = None
            self.jobs.cancel(("junk", "answer"))
        alone = mono - self.last_junk >= ANSWER_HOLD
        self.last_junk = mono
        if junk.kind == "unparseable" and alone and mono - self.last_answer >= ANSWER_EVERY:
            self.pending = (junk, bytes(payload))
            self.jobs.schedule(("junk", "answer"), ANSWER_HOLD, self._answer)

    async def _answer(self) -> None:
        if self.pending is None:
            return
        (junk, payload), self.pending = self.pending, None
        self.last_answer = self.clock.monotonic()
        self._uncount(junk)  # answered: the summary is for what got no answer
        info = {k: v for k, v in peek(payload).items() if k != "kind"}
        info.setdefault("id", None)
        fields = {"reason": "malformed", "problem": junk.reason, "detail": junk.detail}
        rejected = self.counters["rejected"]
        rejected["malformed"] = rejected.get("malformed", 0) + 1
        await self.audit.result(info, "rejected", **fields)
        await self.audit.audit(info, "rejected", **fields)

    def _uncount(self, junk: Junk) -> None:
        reasons = self.period.get(junk.kind, {})
        if reasons.get(junk.reason, 0) > 0:
            reasons[junk.reason] -= 1
            self.period_total -= 1
            if not reasons[junk.reason]:
                del reasons[junk.reason]
            if not reasons:
                del self.period[junk.kind]

    async def summary(self) -> None:
        """The counts since the last summary: one event and one log line; then again in a minute while junk comes."""
        if not self.period_total:
            self.active = False
            self.period_since = None
            return
        counts, issuers, total, since = self.period, self.period_issuers, self.period_total, self.period_since
        self.period, self.period_issuers, self.period_total, self.period_since = {}, {}, 0, None
        self.jobs.schedule(("junk", "summary"), SUMMARY_EVERY, self.summary)
        now = self.clock.time()
        log.warning("commands: %d junk message(s) on …/cmd refused in the last %.0f s: %s", total, now - (since or now),
                    ", ".join(f"{kind} {sum(r.values())}" for kind, r in counts.items()))
        await self.audit.emit("event", event_body(now, "cmd.junk", since=round(since or now, 3), total=total,
                                                  counts=counts, issuers=issuers))
