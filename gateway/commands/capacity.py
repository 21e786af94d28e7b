"""Pump and manifold capacity: at most ``max_open`` zones of a manifold open at once.

A pump sized for two zones cannot water three: the third gets too little
pressure and the pump runs off its curve.  A remote opening beyond the limit is
refused (``when_full: refuse``, reason ``capacity``) or waits (``queue``: result
``queued``, with its own expiry ``max_wait``, independent of the envelope's).
When a zone of the manifold closes, the oldest waiting opening takes the slot at
once -- before any program, which never queues but waits for its next reading.
A valve waits at most once: a new irrigate replaces its waiting one, a ``close``
or ``close_all`` cancels it.  So a queue is bounded by the manifold's valves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from core.timefmt import fmt_time


@dataclass
class Waiting:
    """An accepted opening waiting for a slot: what the command asked, and until when it may wait."""

    valve: object
    duration: float
    env: object
    info: dict
    until: float  # wall clock


@dataclass
class Manifold:
    cfg: object  # ManifoldConfig
    valves: list = field(default_factory=list)
    waiting: list[Waiting] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.cfg.id

    def in_use(self) -> list:
        """Valves that hold a slot: open, opening or still closing."""
        return [v for v in self.valves if v.cycle is not None or v.busy]

    def words_full(self) -> str:
        use = self.in_use()
        return f"{self.id} already feeds {len(use)} of {self.cfg.max_open} zones ({', '.join(v.id for v in use)})"


class Capacity:
    def __init__(self, configs: list, valves, *, clock, jobs, tz=None):
        self.clock = clock
        self.jobs = jobs
        self.tz = tz
        self.by_id = {c.id: Manifold(c, [valves.by_id[vid] for vid in c.valves if vid in valves.by_id]) for c in configs}
        self.by_valve = {v.id: m for m in self.by_id.values() for v in m.valves}
        self.start: Callable[[Waiting], None] | None = None  # valve_commands: open a waiting valve now
        self.expired: Callable[[Waiting, str, str], None] | None = None  # valve_commands: fail it (reason, detail)
        valves.on_slot_free = self.pump

    def full(self, v) -> Manifold | None:
        """The manifold that has no slot for ``v`` now (``v`` already open needs none), or None."""
        m = self.by_valve.get(v.id)
        if m is None or v.cycle is not None or v.busy:
            return None
        return m if len(m.in_use()) >= m.cfg.max_open or m.waiting else None

    def enqueue(self, m: Manifold, item: Waiting) -> Waiting | None:
        """Queue ``item``; returns the item of the same valve it replaced, if any."""
        old = self.cancel(item.valve)
        m.waiting.append(item)
        self.jobs.schedule(("queued", item.valve.id), item.until - self.clock.time(), self._expire, item)
        return old

    def cancel(self, v) -> Waiting | None:
        """Take ``v``'s waiting opening out of its queue (a close, a new irrigate, close_all)."""
        m = self.by_valve.get(v.id)
        if m is None:
            return None
        for item in m.waiting:
            if item.valve is v:
                m.waiting.remove(item)
                self.jobs.cancel(("queued", v.id))
                return item
        return None

    def waiting(self) -> list[Waiting]:
        return [w for m in self.by_id.values() for w in m.waiting]

    def pump(self) -> None:
        """A slot may have freed: start the oldest waiting openings while there is room (sync, on the loop)."""
        if self.jobs.stopping:
            return
        for m in self.by_id.values():
            while m.waiting and len(m.in_use()) < m.cfg.max_open:
                item = m.waiting.pop(0)
                self.jobs.cancel(("queued", item.valve.id))
                if self.start is not None:
                    self.start(item)

    async def _expire(self, item: Waiting) -> None:
        m = self.by_valve.get(item.valve.id)
        if m is None or item not in m.waiting:
            return
        m.waiting.remove(item)
        if self.expired is not None:
            self.expired(item, "queue_expired", f"no free slot on {m.id} by {fmt_time(item.until, self.tz)} "
                                                f"({m.words_full()}); {item.valve.id} was not opened")

    def snapshot(self) -> dict:
        return {m.id: {"open": [v.id for v in m.in_use()], "max_open": m.cfg.max_open,
                       "waiting": [{"valve": w.valve.id, "until": round(w.until, 3)} for w in m.waiting]}
                for m in self.by_id.values()}
