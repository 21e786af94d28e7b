"""The ingest loop: receive -> parse -> commit many messages in one transaction -> PUBACK each, in order.

Nothing is acknowledged before its rows are committed (paho ``manual_ack``), so a kill -9
at any moment loses nothing the broker held: the broker sends the unacknowledged messages
again (to this instance when it comes back with the same client id, or -- after its
session expires -- not at all, which the gap tracker then sees).  The queue between the
socket and the writer is bounded: past ``ingest.queue_max_messages`` the socket is not
read until the writer has caught up (MQTT 5 Receive Maximum bounds it first).

A batch that the database refuses is retried; when the refusal is about the data (not
the connection), its messages are committed one by one and a message the store refuses
on its own is counted as junk (``store_refused``) and acknowledged, so one poison
message never stops a site's data.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque

from sqlalchemy import exc as sa_exc

from centre.ingest.gaps import GapTracker
from centre.ingest.parse import Parsed, parse_message
from centre.ingest.retention import run_retention
from centre.ingest.writer import Written, write
from centre.mqtt.client import CentreMqtt
from centre.store.engine import write_transaction
from core.backoff import Backoff, FailureLog, RateLimitedLog
from core.mqtt import Message as Delivered
from core.mqtt import MqttError

log = logging.getLogger("centre.ingest")

DATA_LEAVES = ("telemetry", "event", "alert/+", "cmd/result")  # shared: the load is split between instances
RETAINED_LEAVES = ("state", "meta")  # plain: retained messages never reach a shared subscription


def subscriptions(protocol: str, group: str) -> list[str]:
    root = "canopy/v1/+/+"
    if protocol == "5":
        return [f"$share/{group}/{root}/{leaf}" for leaf in DATA_LEAVES] + [f"{root}/{leaf}" for leaf in RETAINED_LEAVES]
    return [f"{root}/{leaf}" for leaf in DATA_LEAVES + RETAINED_LEAVES]


class Ingest:
    def __init__(self, centre, *, clock=time.time):
        self.centre = centre
        self.cfg = centre.cfg.ingest
        self.engine = centre.engine
        self.clock = clock
        self.counters: Counter = Counter()  # messages, records, stored, duplicates, commits, junk.{reason}, ...
        self.queue: deque[Delivered] = deque()
        self._arrived = asyncio.Event()
        self._paused = False
        self._stopping = False
        self.mqtt = CentreMqtt(centre.cfg.broker, centre.cfg.client_id, on_message=self._on_message,
                               on_lost=self._on_lost)
        self.gaps = GapTracker(centre)
        self._lost = asyncio.Event()
        self._junk_log = RateLimitedLog(log)
        self.connected = False
        centre.components["ingest"] = self

    # -- receiving ---------------------------------------------------------------------------------
    def _on_message(self, msg: Delivered) -> None:
        self.queue.append(msg)
        self._arrived.set()
        if len(self.queue) >= self.cfg.queue_max_messages and not self._paused:
            self._paused = True
            self.mqtt.pause_reading()
            self.counters["paused"] += 1

    def _on_lost(self, why: str) -> None:
        self.connected = False
        self._lost.set()

    async def _connection(self, stop: asyncio.Event) -> None:
        """Connect, subscribe, stay connected; reconnect for ever with jittered backoff."""
        b = self.centre.cfg.broker
        backoff, fails = Backoff(b.backoff_initial, b.backoff_max), FailureLog(log, f"broker {b.host}:{b.port}")
        while not stop.is_set():
            try:
                self._lost.clear()
                await self.mqtt.connect()
                await self.mqtt.subscribe(subscriptions(b.protocol, b.share_group))
            except (MqttError, OSError) as exc:  # OSError: password file, TLS files
                fails.failed(str(exc))
                self.mqtt.close()
                await _sleep_or(stop, backoff.next())
                continue
            fails.recovered()
            backoff.reset()
            self.connected = True
            self.counters["connects"] += 1
            log.info("ingest connected to %s:%s as %s (MQTT %s, session %s)", b.host, b.port, self.mqtt.client_id,
                     b.protocol, "resumed" if self.mqtt.session_present else "new")
            await _first(stop.wait(), self._lost.wait())
            self.connected = False

    # -- writing -----------------------------------------------------------------------------------
    async def _take(self) -> list[tuple[Delivered, Parsed]]:
        """The next batch: at least one message, up to batch_max_records records, waiting at most batch_max_delay."""
        while not self.queue:
            if self._stopping:
                return []
            self._arrived.clear()
            await self._arrived.wait()
        batch, records = [], 0
        deadline = time.monotonic() + self.cfg.batch_max_delay
        while records < self.cfg.batch_max_records:
            if not self.queue:
                left = deadline - time.monotonic()
                if left <= 0 or self._stopping:
                    break
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), left)
                except TimeoutError:
                    break
                continue
            msg = self.queue.popleft()
            parsed = parse_message(msg.topic, msg.payload)
            batch.append((msg, parsed))
            records += max(1, len(parsed.records))
        if self._paused and len(self.queue) < self.cfg.queue_max_messages // 2:
            self._paused = False
            self.mqtt.resume_reading()
        return batch

    async def _writer(self) -> None:
        """Commit batch after batch; the next batch is taken (and parsed) while the current one commits."""
        nxt = asyncio.ensure_future(self._take())
        try:
            while batch := await nxt:
                nxt = asyncio.ensure_future(self._take())
                await self.commit(batch)
        finally:
            nxt.cancel()

    async def commit(self, batch: list[tuple[Delivered, Parsed]]) -> None:
        """Store a batch (retrying for ever on a broken database), then acknowledge every message in order."""
        self._count_parsed([p for _, p in batch])
        items = [p for _, p in batch if p.kind in ("batch", "state", "meta")]
        backoff, fails = Backoff(0.2, 10.0), FailureLog(log, "store")
        while items:
            try:
                await self._store(items)
                fails.recovered()
                break
            except (sa_exc.DataError, sa_exc.IntegrityError, sa_exc.ProgrammingError) as exc:
                log.warning("store refused a batch of %d messages (%s): committing them one by one", len(items), _short(exc))
                await self._one_by_one(items)
                break
            except (sa_exc.SQLAlchemyError, OSError) as exc:
                fails.failed(_short(exc))
                self.counters["store_errors"] += 1
                await asyncio.sleep(backoff.next())
        for msg, _ in batch:
            if self.mqtt.ack(msg):
                self.counters["acked"] += 1

    async def _store(self, items: list[Parsed]) -> Written:
        async with write_transaction(self.engine) as conn:
            written = await write(conn, items, self.clock(), readings=self.centre.hub.wants("reading"))
        self.counters["commits"] += 1
        self.counters["stored"] += written.stored
        self.counters["duplicates"] += written.duplicates
        self.centre.hub.publish(written.changes)
        return written

    async def _one_by_one(self, items: list[Parsed]) -> None:
        for p in items:
            try:
                await self._store([p])
            except (sa_exc.DataError, sa_exc.IntegrityError, sa_exc.ProgrammingError) as exc:
                self._junk(p, "store_refused", _short(exc))

    def _count_parsed(self, parsed: list[Parsed]) -> None:
        for p in parsed:
            self.counters["messages"] += 1
            self.counters["records"] += len(p.records)
            if p.kind == "junk":
                self._junk(p, p.problem or "junk", p.detail or "")
            elif p.bad_records:
                self.counters["junk.bad_record"] += p.bad_records
                self._junk_log("bad_record", "%d malformed record(s) from %s/%s on …/%s dropped", p.bad_records,
                               p.site, p.gateway, p.topic)

    def _junk(self, p: Parsed, reason: str, detail: str) -> None:
        self.counters[f"junk.{reason}"] += 1
        self._junk_log(reason, "refused a message from %s/%s on …/%s: %s: %s", p.site or "?", p.gateway or "?",
                       p.topic or "?", reason, detail[:300])

    # -- running -----------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        conn_task = asyncio.create_task(self._connection(stop), name="ingest-mqtt")
        writer = asyncio.create_task(self._writer(), name="ingest-writer")
        gaps = asyncio.create_task(self.gaps.run(), name="ingest-gaps")
        retention = asyncio.create_task(run_retention(self.centre), name="retention")
        try:
            await _first(stop.wait(), writer, conn_task)
            for t in (writer, conn_task):  # a crashed task is a bug: say so loudly
                if t.done() and t.exception() is not None:
                    raise t.exception()
            # stop reading, commit and acknowledge what was received, then say goodbye to the broker
            self.mqtt.pause_reading()
            self._stopping = True
            self._arrived.set()
            try:
                await asyncio.wait_for(asyncio.shield(writer), 15)
            except TimeoutError:
                log.warning("store too slow at shutdown: %d messages left unacknowledged (the broker keeps them)",
                            len(self.queue))
            await self.mqtt.disconnect()
        finally:
            for t in (conn_task, writer, gaps, retention):
                t.cancel()
            await asyncio.gather(conn_task, writer, gaps, retention, return_exceptions=True)
            self.mqtt.close()


async def run_ingest(centre, stop: asyncio.Event) -> None:
    await Ingest(centre).run(stop)


async def _first(*aws) -> None:
    tasks = [a if isinstance(a, asyncio.Task) else asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t, a in zip(tasks, aws):
            if t is not a:
                t.cancel()


async def _sleep_or(stop: asyncio.Event, delay: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), delay)
    except TimeoutError:
        pass


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
