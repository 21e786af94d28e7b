"""The uplink: outbox -> MQTT broker, QoS 1, a record leaves only after PUBACK (docs/protocol.md).

One ``MqttClient`` (the client every CLI uses), a fresh paho connection each time, so nothing
queued for a dead connection is replayed behind our back: after a reconnect the outbox is read
again from its oldest unacknowledged record; reconnects come at a steady pace (``resume.py``).
MQTT 5 with a session the broker keeps for an hour (what is sent to the gateway while it is away
waits for it), or 3.1.1 with a clean session; a Maximum Packet Size is announced and enforced.
On each connection: the retained documents (``…/meta``), every subscription, and "online" only
after every SUBACK.  Alarms go first, then events, then telemetry; some of the in-flight window
is kept free for alarms.  A message whose rows name several topics is published on each, and its
rows leave the outbox once every copy is acknowledged.  While the outbox cannot commit, the alarms
and events it holds in memory go first in their lane, under the memory epoch
(docs/protocol.md#records-published-from-memory).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
from collections.abc import Callable

from paho.mqtt.reasoncodes import ReasonCode

from core.backoff import Backoff, FailureLog, RateLimitedLog
from core.protocol.limits import MAX_PACKET_SIZE
from core.protocol.topics import Topics
from core.records import LANES, Lane
from gateway.config.broker import BrokerConfig
from gateway.outbox.store import Outbox, Row
from gateway.uplink.batch import compose, cut_at_topic, fit, topics_for
from gateway.uplink.broker_auth import broker_endpoint
from core.mqtt import MqttClient, MqttConnectError, MqttError, Will
from gateway.uplink.state import state_payload
from gateway.uplink.resume import RetryPace, drop_when_stalled, retry_interval
from gateway.uplink.subscriptions import Handler, Subscriptions, capability_of
from gateway.uplink.window import RESERVED_SLOTS, Batch, InFlight, MemoryBatch, QueueDelayWindow, RateLimit

log = logging.getLogger("canopy.uplink")


def _notify(callbacks: list[Callable[..., None]], what: str, *args) -> None:
    """Tell every callback; one that raises is logged and never stops the uplink."""
    for cb in callbacks:
        try:
            cb(*args)
        except Exception:
            log.exception("%s callback failed", what)


# MQTT 5 session expiry: the longest validity a command may have (commands.max_validity), so what is
# sent to the gateway while it is away waits that long for it (docs/protocol.md#connection).
SESSION_EXPIRY = 3600


class Uplink:
    """One broker connection at a time; publishes the outbox's lanes and routes inbound messages to handlers."""

    def __init__(self, broker: BrokerConfig, topics: Topics, outbox: Outbox, *, base_dir: str = ".",
                 batch_max_records: int = 500, batch_max_bytes: int = 128 * 1024, state: Callable[[], dict] | None = None,
                 max_messages_per_s: float | None = None, max_bytes_per_s: float | None = None,
                 max_inflight_bytes: int = 1024 * 1024, queue_delay_target: float | None = 0.03):
        self.broker = broker
        self.topics = topics
        self.outbox = outbox
        self.base_dir = base_dir
        self.batch_max_records = batch_max_records
        self.batch_max_bytes = batch_max_bytes
        self.state = state or (lambda: {})
        self.connected = asyncio.Event()  # the broker accepted the connection (CONNACK)
        self.online = asyncio.Event()  # every subscription acknowledged and "online" published
        self.published = {lane: 0 for lane in LANES}  # messages sent (including re-sends and copies)
        self.acked_records = {lane: 0 for lane in LANES}
        self.puback_refused = 0  # copies the broker refused in their PUBACK (MQTT 5): their records stay
        self.connects = 0
        self.attempts = 0  # connection attempts since start (each a TCP connection to the broker)
        self.last_error: str | None = None
        self._inflight: dict[int, InFlight] = {}
        self._inflight_bytes = 0  # of events and telemetry: what an alarm may queue behind
        self.max_inflight_bytes = max_inflight_bytes
        self.window = QueueDelayWindow(max_inflight_bytes, queue_delay_target)
        self._last_size = 0  # of the last event/telemetry message: the next one is probably alike
        self._msg_rate = RateLimit(max_messages_per_s)
        self._byte_rate = RateLimit(max_bytes_per_s)
        self._wake = asyncio.Event()
        self._cursor: dict[str, int] = {}  # the pump's, while one runs (committed() sends alarms past it)
        self._stopping = False
        self._stop_requested = asyncio.Event()
        self._drop_session = False  # a packet was refused: start the next MQTT 5 session clean
        self._refusals = RateLimitedLog(log)
        self.subscriptions = Subscriptions()
        self._retained: dict[str, bytes] = {}  # topic -> document published (retained) on every connect
        self.on_link: list[Callable[[bool], None]] = []  # told when the broker link comes and goes
        self.on_acked: list[Callable[[str, int, int], None]] = []  # (lane, first, last) once every copy is PUBACKed
        v5 = broker.protocol == "5"
        self.client = MqttClient(
            broker_endpoint(broker, self._path), client_id=broker.client_id or f"canopy-{topics.site}-{topics.gateway}",
            keepalive=broker.keepalive, connect_timeout=broker.connect_timeout, clean_start=not v5,
            session_expiry=SESSION_EXPIRY if v5 else None, max_packet_size=MAX_PACKET_SIZE,
            max_inflight=broker.max_inflight, on_published=self._on_publish, on_message=self.subscriptions.route)

    # -- configuration -------------------------------------------------------
    def _path(self, p: str) -> str:
        return p if os.path.isabs(p) else os.path.join(self.base_dir, p)

    def subscribe(self, topic: str, handler: Handler) -> None:
        """Route messages of one topic to a handler (subscribed on every connect, before "online")."""
        self.subscriptions.add(topic, handler)

    def retain(self, topic: str, payload: bytes) -> None:
        """A retained document (``…/meta``): published now when connected, and on every connect before "online"."""
        self._retained[topic] = payload
        if self.connected.is_set():
            self._publish_retained(topic, payload)

    def wake(self) -> None:
        self._wake.set()

    def committed(self) -> None:
        """The outbox committed (its ``on_commit``): alarms it made durable leave now, from the commit's own rows.

        Each loop turn a flood keeps busy costs milliseconds; waking the pump, which then reads the rows back
        in the reader's thread, took two or three such turns (flood bench: 10 ms median, 40 ms worst, of an
        alarm's way).  Only when every earlier alarm was already sent on this connection (the pump's cursor
        is just before them): else the pump sends them in order, as always."""
        rows = self.outbox.take_fresh_alarms()
        client, cursor = self.client, self._cursor
        if rows and client.is_connected and cursor.get("alarm") == rows[0][0] - 1:
            while rows and len(self._inflight) < self.broker.max_inflight:
                last = self._publish(client, "alarm", rows)
                if last is None:
                    break
                cursor["alarm"] = last
                rows = [r for r in rows if r[0] > last]
        self._wake.set()

    def capabilities(self) -> set[str]:
        """What a centre may ask of this gateway now: granted subscriptions, and the retained documents it publishes."""
        return self.subscriptions.capabilities() | {cap for t in self._retained if (cap := capability_of(t))}

    def stats(self) -> dict:
        """The ``uplink`` section of ``…/state``."""
        return {"connects": self.connects, "attempts": self.attempts, "connected": self.connected.is_set(),
                "published": dict(self.published),
                "last_error": self.last_error, "refused_too_large": self.client.refused_too_large,
                "puback_refused": self.puback_refused}

    # -- connection loop ------------------------------------------------------
    async def run(self) -> None:
        """Connect, serve, and after a loss try again at a steady pace (gateway/uplink/resume.py)."""
        loop = asyncio.get_running_loop()
        pace = RetryPace(retry_interval(self.broker.backoff_max),
                         refusals=Backoff(self.broker.backoff_initial, self.broker.backoff_max))
        fail = FailureLog(log, f"broker {self.broker.host}:{self.broker.port}")
        client = self.client
        while not self._stopping:
            await self._pause(pace.wait(loop.time()))
            if self._stopping:
                break
            client.will = Will(self.topics.state, self._state_payload("offline", reason="connection lost"))
            client.clean_start = client.protocol != "5" or self._drop_session
            pace.started(loop.time())
            self.attempts += 1
            try:
                await client.connect()  # left pending until the broker answers or connect_timeout
            except MqttConnectError as exc:
                if self._stopping:
                    break  # stop() let the attempt go
                self.last_error = exc.reason
                fail.failed(f"{'broker refused the connection' if exc.refused else 'cannot connect'}: {exc.reason}")
                if exc.refused:
                    pace.refused(loop.time())
                continue
            if self._stopping:  # stop() came while connecting
                await client.disconnect()
                break
            fail.recovered()
            pace.connected()
            drop_when_stalled(client.paho.socket() if client.paho is not None else None)
            self.connects += 1
            self.last_error = None
            self._drop_session = False
            log.info("connected to broker %s:%s%s, MQTT %s%s", self.broker.host, self.broker.port,
                     " (TLS)" if client.endpoint.tls else "", client.protocol,
                     " (session resumed)" if client.session_present else "")
            why = await self._serve(client)
            if why is not None and not self._stopping:
                fail.failed(f"connection lost: {getattr(why, 'reason', why)}")

    async def _serve(self, client: MqttClient) -> MqttError | None:
        """One connection: publish, subscribe, go online; returns why it ended (None: we ended it)."""
        refused = client.refused_too_large
        self.connected.set()
        _notify(self.on_link, "link", True)
        pump = asyncio.create_task(self._pump(client), name="uplink-pump")
        online = asyncio.create_task(self._go_online(client), name="uplink-online")
        closed = asyncio.ensure_future(client.wait_closed())
        tasks = (pump, online, closed)
        try:
            waiting = set(tasks)
            while not closed.done():
                done, waiting = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                failed = next((t for t in done if t is not closed and not t.cancelled() and t.exception()), None)
                if failed is not None and not closed.done():  # no SUBACK in time, or a bug: drop this connection
                    problem = failed.exception()
                    if not isinstance(problem, MqttError):
                        log.error("%s failed", failed.get_name(), exc_info=problem)
                        problem = MqttError(f"{failed.get_name()} failed: {problem!r}")
                    await client.disconnect()
                    return problem
            return closed.result()
        finally:
            for task in tasks:
                if not task.done():
                    task.cancel()
                elif not task.cancelled():
                    task.exception()  # retrieved: a failure that came with the connection's end says nothing new
            self._cursor = {}
            self.connected.clear()
            self.online.clear()
            _notify(self.on_link, "link", False)
            self.subscriptions.reset()
            self._inflight.clear()
            self._inflight_bytes = 0
            self.window.reset()
            self._drop_session = client.refused_too_large > refused

    async def _go_online(self, client: MqttClient) -> None:
        """Retained documents, then every subscription; "online" once every SUBACK is in."""
        for topic, payload in self._retained.items():
            self._publish_retained(topic, payload)
        try:
            async with asyncio.timeout(self.broker.connect_timeout):
                await self.subscriptions.subscribe_all(client)
        except TimeoutError:
            raise MqttError(f"no SUBACK within {self.broker.connect_timeout:g} s") from None
        self.online.set()
        self.publish_state()

    def _publish_retained(self, topic: str, payload: bytes) -> None:
        with contextlib.suppress(MqttError):  # the link went away: it is published again on the next connect
            self.client.publish_nowait(topic, payload, qos=1, retain=True)

    async def _pause(self, seconds: float) -> None:
        """Until the next attempt's slot, or until stop()."""
        if seconds > 0 and not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_requested.wait(), timeout=seconds)

    async def drain(self, timeout: float) -> None:
        """Give pending records a last chance to reach the broker (clean shutdown)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.connected.is_set() and loop.time() < deadline:
            if not self._inflight:
                unsent = [lane for lane in LANES if self.outbox.memory_rows(lane, 0, 1) or await self.outbox.fetch(lane, 0, 1)]
                if not unsent:
                    return
            await asyncio.sleep(0.02)

    async def stop(self, timeout: float = 2.0) -> None:
        """Publish a clean 'offline' state and disconnect (no last will)."""
        self._stopping = True
        self._stop_requested.set()
        if self.connected.is_set():
            try:
                async with asyncio.timeout(timeout):
                    await self.client.publish(self.topics.state, self._state_payload("offline", reason="shutdown"),
                                              qos=1, retain=True)
            except (MqttError, TimeoutError):
                pass
        await self.client.disconnect()

    # -- acknowledgements (on the loop thread) ------------------------------------
    def _on_publish(self, mid: int, reason_code: ReasonCode) -> None:
        entry = self._inflight.pop(mid, None)
        if entry is None:
            return  # the state or a retained document
        batch = entry.batch
        if batch.lane != "alarm":
            self._inflight_bytes -= entry.size
            now = asyncio.get_running_loop().time()
            self.window.on_ack(now, now - entry.sent, entry.size)
        if reason_code.is_failure:
            batch.refused = True
            self.puback_refused += 1
            self._refusals("puback", "the broker refused a message on %s (%s): its records %d..%d stay in the outbox "
                           "and go again after the next reconnect", entry.topic, reason_code, batch.first, batch.last)
        batch.copies -= 1
        if batch.copies == 0 and not batch.refused and isinstance(batch, MemoryBatch):
            self.outbox.ack_memory(batch.epoch, batch.lane, batch.first, batch.last)
            self.acked_records[batch.lane] += batch.count  # not told on_acked: its seqs are the memory epoch's
        elif batch.copies == 0 and not batch.refused:
            self.outbox.ack(batch.lane, batch.first, batch.last)
            self.acked_records[batch.lane] += batch.count
            _notify(self.on_acked, "PUBACK", batch.lane, batch.first, batch.last)
        self._wake.set()

    # -- sending ----------------------------------------------------------------
    def publish_state(self, status: str = "online") -> None:
        """The retained state, once this connection is online (every SUBACK in)."""
        if self.online.is_set():
            with contextlib.suppress(MqttError):  # the link went away: "online" goes again on the next connect
                self.client.publish_nowait(self.topics.state, self._state_payload(status), qos=1, retain=True)

    def _state_payload(self, status: str, **extra) -> bytes:
        return state_payload(self.topics, status, boot=self.outbox.boot, health=self.state,
                             capabilities=self.capabilities(), uplink=self.stats(), **extra)

    async def _pump(self, client: MqttClient) -> None:
        """Publish pending records, highest lane first, within the in-flight window.

        Events and telemetry also respect the replay rate limits and the
        in-flight byte cap; alarms are exempt and have slots kept for them.
        """
        cursor = self._cursor = {lane: 0 for lane in LANES}  # last seq sent per lane on this connection
        memory: dict[tuple[str, str], int] = {}  # (memory epoch, lane) -> last seq sent
        while True:
            self._wake.clear()
            sent = False
            retry_in: float | None = None
            for lane in LANES:
                if lane != "telemetry" and self._send_memory(client, lane, memory):
                    sent = True
                lane_sent, hold = await self._send_lane(client, lane, cursor)
                if lane_sent is None:
                    return  # the connection is going away
                sent = sent or lane_sent
                if hold is not None:
                    retry_in = hold if retry_in is None else min(retry_in, hold)
                if sent and self._wake.is_set():
                    break  # something new arrived (maybe an alarm): look at the higher lanes again
            if not sent:
                if retry_in is not None:
                    try:
                        await asyncio.wait_for(self._wake.wait(), timeout=retry_in)
                    except asyncio.TimeoutError:
                        pass
                else:
                    await self._wake.wait()

    async def _send_lane(self, client: MqttClient, lane: Lane, cursor: dict[str, int]) -> tuple[bool | None, float | None]:
        """Send one lane's messages while the window allows.

        Returns (sent anything, seconds until a rate limit lets the next one go);
        sent is None when the connection went away meanwhile.
        """
        loop = asyncio.get_running_loop()
        limit = max(1, self.broker.max_inflight - RESERVED_SLOTS[lane])
        sent = False
        while len(self._inflight) < limit:
            hold = self._hold(lane, loop.time())
            if hold:
                return sent, None if hold == math.inf else hold
            if cursor[lane] >= self.outbox.counters[lane].last_seq:
                break  # nothing newer was ever committed in this lane: skip the SQLite round trip
            rows = await self.outbox.fetch(lane, cursor[lane], self.batch_max_records)
            if not client.is_connected:
                return None, None
            if rows and rows[0][0] <= cursor[lane]:  # committed() sent some while the page was read
                rows = [r for r in rows if r[0] > cursor[lane]]
            if not rows:
                break
            last = self._publish(client, lane, rows)
            if last is None:
                return None, None
            cursor[lane] = last
            sent = True
            if lane != "alarm" and self._wake.is_set():
                break
        return sent, None

    def _send_memory(self, client: MqttClient, lane: Lane, sent_to: dict[tuple[str, str], int]) -> bool:
        """What the outbox holds in memory for a lane (it cannot commit): at once, within the window."""
        epoch = self.outbox.memory.epoch
        first = after = sent_to.get((epoch, lane), 0) if epoch else 0
        limit = max(1, self.broker.max_inflight - RESERVED_SLOTS[lane])
        while epoch and len(self._inflight) < limit and not self._hold(lane, asyncio.get_running_loop().time()):
            rows = self.outbox.memory_rows(lane, after, self.batch_max_records)
            if not rows or (last := self._publish(client, lane, rows, epoch)) is None:
                break
            after = sent_to[(epoch, lane)] = last
        return after > first

    def _hold(self, lane: Lane, now: float) -> float:
        """0 if an event/telemetry message may go now; else seconds of rate limit, or inf until a PUBACK."""
        if lane == "alarm":
            return 0.0
        # the next message must fit in the window (one is always allowed)
        if self._inflight_bytes and self._inflight_bytes + self._last_size > self.window.bytes:
            return math.inf
        return max(self._msg_rate.delay(now), self._byte_rate.delay(now))

    def _publish(self, client: MqttClient, lane: Lane, rows: list[Row], memory_epoch: str | None = None) -> int | None:
        """Publish the first message's worth of rows on each of its topics; returns the last seq sent, None if the link is gone.

        ``memory_epoch``: the rows are held in memory by the outbox and carry that epoch.
        """
        rows = fit(rows, self.batch_max_bytes if lane == "alarm" else self.window.message_bytes(self.batch_max_bytes))
        if lane != "telemetry":
            rows = cut_at_topic(rows)
        payload = compose(self.topics, self.outbox.epoch if memory_epoch is None else memory_epoch, lane, rows)
        targets = topics_for(self.topics, lane, rows[0][2])
        span = (lane, rows[0][0], rows[-1][0], len(rows))
        batch = Batch(*span, copies=len(targets)) if memory_epoch is None else MemoryBatch(*span, copies=len(targets), epoch=memory_epoch)
        now = asyncio.get_running_loop().time()
        for topic in targets:
            try:
                mid = client.publish_nowait(topic, payload, qos=1)
            except MqttError:
                return None
            self._inflight[mid] = InFlight(batch, topic, len(payload), now)
            if lane != "alarm":
                self._inflight_bytes += len(payload)
                self._last_size = len(payload)
                self._msg_rate.charge(1)
                self._byte_rate.charge(len(payload))
            self.published[lane] += 1
        return rows[-1][0]
