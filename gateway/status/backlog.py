"""How far behind delivery is: the age of the oldest record each lane still has to deliver, and the last PUBACK.

"3,000 pending" says little on its own; "the oldest is 40 minutes old" says the
link is down.  The uplink reports each range the broker acknowledged
(``on_acked``); the oldest undelivered record of a lane is then the first row
after the highest acknowledged seq: one indexed read (``Outbox.fetch``) per
lane that has a backlog, made when a snapshot is taken, never per record.  A
range acknowledged out of order counts as delivered up to its end, so the age
is at worst that of a record still in flight behind it.
"""

from __future__ import annotations

import logging

import orjson

from core.clock import Clock
from core.records import LANES

log = logging.getLogger("canopy.status")


class BacklogAge:
    """Fed by the uplink's ``on_acked``; ``refresh`` before a snapshot, ``ages`` and ``last_puback_ts`` in it."""

    def __init__(self, outbox, clock: Clock):
        self._outbox = outbox
        self._clock = clock
        self._acked_to = dict.fromkeys(LANES, 0)  # highest seq the broker acknowledged, per lane
        self._oldest_ts: dict[str, float | None] = dict.fromkeys(LANES)
        self.last_puback_ts: float | None = None  # wall time of the last acknowledged range of records

    def on_acked(self, lane: str, first: int, last: int) -> None:
        self.last_puback_ts = self._clock.time()
        if last > self._acked_to.get(lane, 0):
            self._acked_to[lane] = last

    async def refresh(self) -> None:
        """Read each lane's oldest undelivered record; keeps the last known ages once the outbox is closed."""
        if not self._outbox.is_open:
            return
        for lane in LANES:
            ts = None
            if self._outbox.pending(lane) > 0:
                try:
                    rows = await self._outbox.fetch(lane, self._acked_to[lane], 1)
                except Exception as exc:  # a health figure must never stop the gateway
                    log.debug("cannot read the oldest %s record: %s", lane, exc)
                    continue
                ts = _ts_of(rows[0][1]) if rows else None
            self._oldest_ts[lane] = ts

    def ages(self) -> dict[str, float | None]:
        """Seconds since each lane's oldest undelivered record was made; None for an empty lane."""
        now = self._clock.time()
        return {lane: (round(max(0.0, now - ts), 1) if ts is not None else None) for lane, ts in self._oldest_ts.items()}


def _ts_of(body: bytes) -> float | None:
    try:
        ts = orjson.loads(body).get("ts")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return float(ts) if isinstance(ts, (int, float)) else None
