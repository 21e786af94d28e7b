"""Records on their way from the engine to the outbox.

The engine decides a record (an alert's tag, or a ready body such as
``alert.ack_rejected``); this queue commits it through ``emit(lane, body,
topic)``.  Alarms go first, in order within each lane; a lane whose commit
fails waits (retried a second later, the record kept), the other lane goes
on.  An alert's tag stays in ``Alert.pending`` (and so in the state file)
until its record is committed, so a record decided before a crash is sent
after the restart.  The sequence numbers ``emit`` returns for ``alert.raised``
are remembered (bounded) so a PUBACK can mark the alert *delivered*, and kept
in the alert with the outbox's epoch and the committed body
(``Alert.raised_key``, ``Alert.raised_body``, in the state file): the copies of
the raise for groups paged later repeat that body and carry that key
(records.py).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import orjson

from gateway.alerts.lifecycle import Alert
from gateway.alerts.records import Record, lane_of

log = logging.getLogger("canopy.alerts")

MAX_SEQ_MAP = 4096  # raised records awaiting their PUBACK
MAX_PENDING_EVENTS = 100  # ready bodies (answers to junk acks) waiting for the outbox; more are not answered
MAX_PENDING_AUDITS = 1000  # answers to signed acks (their audit): junk cannot crowd them out
RETRY_DELAY = 1.0

Emit = Callable[..., Awaitable[object]]  # emit(lane, body, topic[, mark=key]) -> seqs
Committed = Callable[[list[str]], Awaitable[dict]]  # marks -> {key: Marked(lane, seq, body)} (gateway/outbox/marks.py)


class RecordQueue:
    """Records decided but not yet committed to the outbox, in the order they were decided."""

    def __init__(self, emit: Emit, build: Callable[[Alert, str], Record], counters: dict[str, int],
                 epoch: Callable[[], str] | None = None, committed: Committed | None = None):
        """``build(alert, tag)`` renders an alert's record; ``counters['emit_errors']`` counts failed commits;
        ``epoch()`` is the outbox's epoch (the raise's key needs it: without it copies carry no ``copy_of``);
        ``committed(keys)`` is the outbox's :meth:`~gateway.outbox.store.Outbox.marked`: with it every record
        is emitted with a mark (``emit(…, mark=)``) and a record requeued after a restart is looked up
        before it is sent again (exactly once across a crash between commit and state save).
        """
        self.emit = emit
        self.epoch = epoch
        self.build = build
        self.counters = counters
        self.items: list[tuple[str | None, str, bytes | None]] = []  # (alert id, tag, body of a ready record)
        self.retry_at = 0.0
        self.seq_alert: dict[tuple[str, int], str] = {}  # (lane, seq) of alert.raised -> alert id
        self.committed = committed
        self.restored: set[tuple[str, str]] = set()  # (alert id, tag) requeued at start: maybe committed already

    def __len__(self) -> int:
        return len(self.items)

    def add(self, a: Alert, tag: str) -> None:
        """A new record of an alert: listed in the alert (persisted) and queued."""
        a.pending.append(tag)
        self.items.append((a.id, tag, None))

    def requeue(self, a: Alert) -> None:
        """After a restart: the alert's records that were decided but not seen committed."""
        for tag in a.pending:
            self.items.append((a.id, tag, None))
            self.restored.add((a.id, tag))

    def add_event(self, body: bytes, *, audited: bool = False) -> bool:
        """A ready ``event`` record that is not an alert's; False (dropped) while too many of its kind wait."""
        tag = "event:audit" if audited else "event"
        if sum(1 for aid, t, _ in self.items if aid is None and t == tag) >= (MAX_PENDING_AUDITS if audited else MAX_PENDING_EVENTS):
            return False
        self.items.append((None, tag, body))
        return True

    def due(self, now: float) -> bool:
        return bool(self.items) and now >= self.retry_at

    def deadline(self) -> float | None:
        return self.retry_at if self.items else None

    async def flush(self, now: float, alerts: dict[str, Alert]) -> bool:
        """Commit what is queued, alarms first; True if an alert's pending list changed."""
        failed: set[str] = set()
        changed = False
        for want in ("alarm", "event"):
            for item in list(self.items):
                aid, tag, body = item
                lane = lane_of(tag) if aid is not None else _lane_of_ready(tag)
                if lane != want or lane in failed:
                    continue
                a = alerts.get(aid) if aid is not None else None
                if aid is not None and a is None:  # pruned meanwhile: nothing left to say
                    self.items.remove(item)
                    continue
                if not await self._commit(item, a, now):
                    failed.add(lane)
                    continue
                changed = changed or a is not None
        return changed

    async def _commit(self, item: tuple, a: Alert | None, now: float) -> bool:
        aid, tag, body = item
        lane, payload, topic = self.build(a, tag) if a is not None else (_lane_of_ready(tag), body, None)
        key = f"{aid}|{tag}" if aid is not None and self.committed is not None else None
        try:
            if key is not None and (aid, tag) in self.restored:
                found = (await self.committed([key])).get(key)
                self.restored.discard((aid, tag))
                if found is not None:  # committed before the crash: its seq, and never a second copy
                    log.info("alert %s: its %s record was committed before the restart (%s #%d); not sent again",
                             aid, tag, found.lane, found.seq)
                    lane, payload, result = found.lane, found.body or payload, [found.seq]
                    self._done(item, a, tag, lane, payload, result)
                    return True
            result = await (self.emit(lane, payload, topic, mark=key) if key is not None else self.emit(lane, payload, topic))
        except Exception as exc:  # outbox closing or failing: keep it, try again
            self.counters["emit_errors"] += 1
            self.retry_at = now + RETRY_DELAY
            log.error("cannot commit %s record (%s: %s); kept, retrying", lane, type(exc).__name__, exc)
            return False
        self._done(item, a, tag, lane, payload, result)
        return True

    def _done(self, item: tuple, a: Alert | None, tag: str, lane: str, payload: bytes, result) -> None:
        """The record is committed (``result``: what ``emit`` returned, its seqs)."""
        self.items.remove(item)
        if a is not None:
            if tag in a.pending:
                a.pending.remove(tag)
            if tag == "raised":
                self._remember(lane, result, a.id)
                self._learn_raise(a, lane, payload, result)

    def _learn_raise(self, a: Alert, lane: str, payload: bytes, result) -> None:
        """Keep the committed raise and its ``(epoch, lane, seq)``: its copies repeat the one and carry the other."""
        seqs = _seqs(result)
        epoch = self.epoch() if self.epoch is not None and seqs else None
        a.raised_key = {"epoch": epoch, "lane": lane, "seq": seqs[0]} if isinstance(epoch, str) and epoch else None
        try:
            body = orjson.loads(payload)
        except orjson.JSONDecodeError:  # never from records.py; a copy is then rebuilt from the alert
            body = None
        a.raised_body = body if isinstance(body, dict) else None

    def _remember(self, lane: str, result, alert_id: str) -> None:
        for seq in _seqs(result):
            self.seq_alert[(lane, seq)] = alert_id
        while len(self.seq_alert) > MAX_SEQ_MAP:
            self.seq_alert.pop(next(iter(self.seq_alert)))

    def delivered(self, lane: str, first: int, last: int) -> list[str]:
        """Alert ids whose ``alert.raised`` is among the acknowledged records ``first..last`` of ``lane``."""
        if not self.seq_alert:
            return []
        keys = [k for k in self.seq_alert if k[0] == lane and first <= k[1] <= last]
        return [self.seq_alert.pop(k) for k in keys]


def _lane_of_ready(tag: str) -> str:
    return tag.split(":", 1)[0]


def _seqs(result) -> list[int]:
    """Sequence numbers from what ``emit`` returned (one int, a list of them, or nothing)."""
    if isinstance(result, bool) or result is None:
        return []
    if isinstance(result, int):
        return [result]
    if isinstance(result, (list, tuple)):
        return [x for x in result if isinstance(x, int) and not isinstance(x, bool)]
    return []
