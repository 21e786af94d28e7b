"""Gap repair's hook (``centre.request_replay``): a signed ``replay`` request for the records of a gap.

Ingest's gap tracker calls it for a gap that stays open, inside its own write transaction,
so this never writes to the database before it returns: it reads the gateway's state,
signs and publishes (docs/protocol.md#replay), then records the request in ``commands``
(kind ``replay``; the gateway's ``replay.result`` lands on the same row) in a task of its
own.  A gap gets one request per ``replay_interval`` at most, only from the leader, and
only to a gateway that is online and announces ``replay``.
"""

from __future__ import annotations

import asyncio
import logging
import time

import orjson
import sqlalchemy as sa

from centre.acting import rows, signing
from centre.acting.config import ActingConfig
from centre.acting.keys import KeysError
from centre.ingest import not_held
from centre.store import schema
from centre.store.engine import write_transaction
from core.backoff import RateLimitedLog
from core.mqtt import MqttError

log = logging.getLogger("centre.acting")
MAX_REMEMBERED = 10_000  # gaps whose last request time is kept (oldest forgotten first)


class ReplayRequester:
    def __init__(self, centre, keys, publisher, cfg: ActingConfig, *, clock=time.time):
        self.centre = centre
        self.keys = keys
        self.publisher = publisher
        self.cfg = cfg
        self.clock = clock
        self.last: dict[int, float] = {}  # gap id -> when its last request went out
        self.counters = {"requested": 0, "skipped": 0, "errors": 0}
        self._tasks: set[asyncio.Task] = set()
        self._log = RateLimitedLog(log)

    async def __call__(self, gap) -> bool:
        """Send one replay request for ``gap`` (a ``GapRef``); True when it went out."""
        now = self.clock()
        if not self.centre.is_leader("gaps") or now - self.last.get(gap.id, -1e18) < self.cfg.replay_interval:
            self.counters["skipped"] += 1
            return False
        async with self.centre.engine.connect() as conn:
            g = schema.gateways
            gw = (await conn.execute(sa.select(g.c.status, g.c.capabilities).where(
                g.c.site == gap.site, g.c.gateway == gap.gateway))).first()
        if gw is None or gw.status != "online" or signing.CAPABILITY["replay"] not in (gw.capabilities or ()):
            self.counters["skipped"] += 1
            return False
        cid = f"{not_held.PREFIX}{gap.id}-{int(now * 1000)}"  # ingest finds a gap's answers by this id
        params = {"lane": gap.lane, "epoch": gap.epoch, "from_seq": gap.first_seq, "to_seq": gap.last_seq}
        valid_until = now + self.cfg.replay_validity
        try:
            env = signing.sign(self.keys, id=cid, kind="replay", site=gap.site, gateway=gap.gateway, target="*",
                               action="records", params=params, on_behalf_of=None, valid_until=valid_until, now=now,
                               envelope_validity=self.cfg.envelope_validity)
            await self.publisher.publish(signing.topic("replay", gap.site, gap.gateway), orjson.dumps(env))
        except (KeysError, MqttError) as exc:
            self.counters["errors"] += 1
            self._log("replay", "replay request for gap %s (%s/%s) not sent: %s", gap.id, gap.site, gap.gateway, exc)
            return False
        self._remember(gap.id, now)
        self.counters["requested"] += 1
        row = {"id": cid, "kind": "replay", "site": gap.site, "gateway": gap.gateway, "issuer": env["issuer"],
               "action": "records", "target": "*", "params": params, "created_at": now, "valid_until": valid_until,
               "status": "sent", "rank": rows.RANK["sent"], "envelope": env, "sent_at": now, "sends": 1,
               "intent": f"replay {gap.lane} seqs {gap.first_seq}-{gap.last_seq} of epoch {gap.epoch} (gap {gap.id})"}
        task = asyncio.create_task(self._record(row), name=f"replay-record-{cid}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _record(self, row: dict) -> None:
        try:
            async with write_transaction(self.centre.engine) as conn:
                await rows.record_replay(conn, row)
        except (sa.exc.SQLAlchemyError, OSError) as exc:
            log.warning("replay request %s went out but could not be recorded: %s", row["id"], exc)

    def _remember(self, gap_id: int, now: float) -> None:
        self.last.pop(gap_id, None)
        self.last[gap_id] = now
        while len(self.last) > MAX_REMEMBERED:
            self.last.pop(next(iter(self.last)))

    async def drain(self) -> None:
        """Wait for the recording tasks (tests, shutdown)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
