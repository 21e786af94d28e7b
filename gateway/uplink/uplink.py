"""The uplink: outbox -> MQTT broker, QoS 1, a record leaves only after PUBACK.

Each connection gets a fresh paho client, so nothing paho queued for a dead
connection is replayed behind our back: after a reconnect the outbox itself
is read again from its oldest unacknowledged record.  Alarms go first, then
events, then telemetry; some of the in-flight window is kept free for alarms.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import ssl
from collections.abc import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from core.backoff import Backoff, FailureLog
from core.protocol.topics import Topics
from core.records import LANES, Lane
from gateway.config.broker import BrokerConfig
from gateway.outbox.store import Outbox, Row
from gateway.uplink.batch import compose, cut_at_topic, fit, topic_for
from gateway.uplink.broker_auth import broker_password, tls_context
from gateway.uplink.mqtt import PahoOnLoop
from gateway.uplink.state import state_payload
from gateway.uplink.window import RESERVED_SLOTS, InFlight, QueueDelayWindow, RateLimit

log = logging.getLogger("canopy.uplink")


class Uplink:
    """One broker connection at a time; publishes the outbox's lanes and routes inbound messages to handlers."""

    def __init__(
        self,
        broker: BrokerConfig,
        topics: Topics,
        outbox: Outbox,
        *,
        base_dir: str = ".",
        batch_max_records: int = 500,
        batch_max_bytes: int = 128 * 1024,
        state: Callable[[], dict] | None = None,
        max_messages_per_s: float | None = None,
        max_bytes_per_s: float | None = None,
        max_inflight_bytes: int = 1024 * 1024,
        queue_delay_target: float | None = 0.03,
    ):
        self.broker = broker
        self.topics = topics
        self.outbox = outbox
        self.base_dir = base_dir
        self.batch_max_records = batch_max_records
        self.batch_max_bytes = batch_max_bytes
        self.state = state or (lambda: {})
        self.connected = asyncio.Event()
        self.published = {lane: 0 for lane in LANES}  # messages sent (including re-sends)
        self.acked_records = {lane: 0 for lane in LANES}
        self.connects = 0
        self.last_error: str | None = None
        self._client: mqtt.Client | None = None
        self._adapter: PahoOnLoop | None = None
        self._inflight: dict[int, InFlight] = {}
        self._inflight_bytes = 0  # of events and telemetry: what an alarm may queue behind
        self.max_inflight_bytes = max_inflight_bytes
        self.window = QueueDelayWindow(max_inflight_bytes, queue_delay_target)
        self._last_size = 0  # of the last event/telemetry message: the next one is probably alike
        self._msg_rate = RateLimit(max_messages_per_s)
        self._byte_rate = RateLimit(max_bytes_per_s)
        self._wake = asyncio.Event()
        self._stopping = False
        self._connack: asyncio.Future | None = None
        self._gone: asyncio.Future | None = None
        self._password = broker_password(broker, self._path)
        self._tls = tls_context(broker.tls, self._path) if broker.tls is not None else None
        self._handlers: dict[str, Callable[[str, bytes], None]] = {}
        self.on_link: list[Callable[[bool], None]] = []  # told when the broker link comes and goes
        self.on_acked: list[Callable[[str, int, int], None]] = []  # (lane, first, last) of each PUBACKed message

    # -- configuration -------------------------------------------------------
    def _path(self, p: str) -> str:
        return p if os.path.isabs(p) else os.path.join(self.base_dir, p)

    def subscribe(self, topic: str, handler: Callable[[str, bytes], None]) -> None:
        """Route messages of one topic to a handler (subscribed on every connect)."""
        self._handlers[topic] = handler

    def wake(self) -> None:
        self._wake.set()

    # -- connection loop ------------------------------------------------------
    def _new_client(self) -> mqtt.Client:
        loop = asyncio.get_running_loop()
        cid = self.broker.client_id or f"canopy-{self.topics.site}-{self.topics.gateway}"
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cid, clean_session=True)
        client.max_inflight_messages_set(self.broker.max_inflight)
        client.max_queued_messages_set(0)
        if self._tls is not None:
            client.tls_set_context(self._tls)
        if self.broker.username:
            client.username_pw_set(self.broker.username, self._password)
        client.will_set(self.topics.state, self._state_payload("offline", reason="connection lost"), qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        self._adapter = PahoOnLoop(loop, client)
        return client

    async def run(self) -> None:
        backoff = Backoff(self.broker.backoff_initial, self.broker.backoff_max)
        fail = FailureLog(log, f"broker {self.broker.host}:{self.broker.port}")
        loop = asyncio.get_running_loop()
        while not self._stopping:
            client = self._new_client()
            self._client = client
            self._connack = loop.create_future()
            self._gone = loop.create_future()
            try:
                await asyncio.wait_for(
                    asyncio.to_thread(client.connect, self.broker.host, self.broker.port, self.broker.keepalive),
                    timeout=self.broker.connect_timeout,
                )
                reason = await asyncio.wait_for(asyncio.shield(self._connack), timeout=self.broker.connect_timeout)
            except (OSError, asyncio.TimeoutError, ssl.SSLError, ValueError) as exc:
                self.last_error = _describe(exc)
                fail.failed(f"cannot connect: {self.last_error}")
                self._drop(client)
                await self._pause(backoff.next())
                continue
            if reason.is_failure:
                self.last_error = _refusal(reason)
                fail.failed(f"broker refused the connection: {self.last_error}")
                self._drop(client)
                await self._pause(backoff.next())
                continue
            fail.recovered()
            backoff.reset()
            self.connects += 1
            self.last_error = None
            log.info("connected to broker %s:%s%s", self.broker.host, self.broker.port, " (TLS)" if self._tls else "")
            self.connected.set()
            self._tell_link(True)
            self.publish_state()
            for topic in self._handlers:
                client.subscribe(topic, qos=1)
            pump = asyncio.create_task(self._pump(client), name="uplink-pump")
            try:
                await asyncio.shield(self._gone)
            finally:
                pump.cancel()
                self.connected.clear()
                self._tell_link(False)
                self._inflight.clear()
                self._inflight_bytes = 0
                self.window.reset()
            if not self._stopping:
                fail.failed(f"connection lost: {self._gone.result()}")
                self._drop(client)
                await self._pause(backoff.next())

    def _tell_link(self, up: bool) -> None:
        for cb in self.on_link:
            try:
                cb(up)
            except Exception:
                log.exception("link callback failed")

    async def _pause(self, seconds: float) -> None:
        if not self._stopping:
            await asyncio.sleep(seconds)

    def _drop(self, client: mqtt.Client) -> None:
        try:
            client.disconnect()
        except Exception:
            pass
        try:
            client.loop_read()  # let paho notice and close the socket
        except Exception:
            pass
        if self._adapter is not None:
            self._adapter.detach()
        sock = client.socket()
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    async def drain(self, timeout: float) -> None:
        """Give pending records a last chance to reach the broker (clean shutdown)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.connected.is_set() and loop.time() < deadline:
            if not self._inflight:
                unsent = [lane for lane in LANES if await self.outbox.fetch(lane, 0, 1)]
                if not unsent:
                    return
            await asyncio.sleep(0.02)

    async def stop(self, timeout: float = 2.0) -> None:
        """Publish a clean 'offline' state and disconnect (no last will)."""
        self._stopping = True
        client = self._client
        if client is not None and self.connected.is_set():
            info = client.publish(self.topics.state, self._state_payload("offline", reason="shutdown"), qos=1, retain=True)
            deadline = asyncio.get_running_loop().time() + timeout
            while not info.is_published() and asyncio.get_running_loop().time() < deadline and self.connected.is_set():
                await asyncio.sleep(0.02)
            client.disconnect()
            await asyncio.sleep(0.05)
        if self._gone is not None and not self._gone.done():
            self._gone.set_result("stopped")
        if client is not None:
            self._drop(client)

    # -- paho callbacks (on the loop thread) -------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if self._connack is not None and not self._connack.done():
            self._connack.set_result(reason_code)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if client is not self._client:
            return
        if self._connack is not None and not self._connack.done():
            self._connack.set_exception(ConnectionError(f"disconnected before CONNACK ({reason_code})"))
        if self._gone is not None and not self._gone.done():
            self._gone.set_result(str(reason_code))
        self._wake.set()

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        if client is not self._client:
            return
        entry = self._inflight.pop(mid, None)
        if entry is None:
            return
        if entry.lane != "alarm":
            self._inflight_bytes -= entry.size
            now = asyncio.get_running_loop().time()
            self.window.on_ack(now, now - entry.sent, entry.size)
        self.outbox.ack(entry.lane, entry.first, entry.last)
        self.acked_records[entry.lane] += entry.count
        for cb in self.on_acked:
            try:
                cb(entry.lane, entry.first, entry.last)
            except Exception:
                log.exception("PUBACK callback failed")
        self._wake.set()

    def _on_message(self, client, userdata, msg) -> None:
        handler = self._handlers.get(msg.topic)
        if handler is not None:
            try:
                handler(msg.topic, msg.payload)
            except Exception:  # a bad message must never take the uplink down
                log.exception("handler for %s failed", msg.topic)

    # -- sending ----------------------------------------------------------------
    def publish_state(self, status: str = "online") -> None:
        client = self._client
        if client is not None and self.connected.is_set():
            client.publish(self.topics.state, self._state_payload(status), qos=1, retain=True)

    def _state_payload(self, status: str, **extra) -> bytes:
        return state_payload(self.topics, status, boot=self.outbox.boot, health=self.state, **extra)

    async def _pump(self, client: mqtt.Client) -> None:
        """Publish pending records, highest lane first, within the in-flight window.

        Events and telemetry also respect the replay rate limits and the
        in-flight byte cap; alarms are exempt and have slots kept for them.
        """
        cursor = {lane: 0 for lane in LANES}
        while True:
            self._wake.clear()
            sent = False
            retry_in: float | None = None
            for lane in LANES:
                lane_sent, hold = await self._send_lane(client, lane, cursor)
                if lane_sent is None:
                    return  # the connection is going away; _on_disconnect follows
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

    async def _send_lane(self, client: mqtt.Client, lane: Lane, cursor: dict[str, int]) -> tuple[bool | None, float | None]:
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
            if client is not self._client or not self.connected.is_set():
                return None, None
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

    def _hold(self, lane: Lane, now: float) -> float:
        """0 if an event/telemetry message may go now; else seconds of rate limit, or inf until a PUBACK."""
        if lane == "alarm":
            return 0.0
        # the next message must fit in the window (one is always allowed)
        if self._inflight_bytes and self._inflight_bytes + self._last_size > self.window.bytes:
            return math.inf
        return max(self._msg_rate.delay(now), self._byte_rate.delay(now))

    def _publish(self, client: mqtt.Client, lane: Lane, rows: list[Row]) -> int | None:
        """Publish the first message's worth of rows; returns the last seq sent, None if paho refused."""
        rows = fit(rows, self.batch_max_bytes if lane == "alarm" else self.window.message_bytes(self.batch_max_bytes))
        if lane != "telemetry":
            rows = cut_at_topic(rows)
        payload = self._compose(lane, rows)
        info = client.publish(topic_for(self.topics, lane, rows[0][2]), payload, qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            return None
        self._inflight[info.mid] = InFlight(lane, rows[0][0], rows[-1][0], len(rows), len(payload), asyncio.get_running_loop().time())
        if lane != "alarm":
            self._inflight_bytes += len(payload)
            self._last_size = len(payload)
            self._msg_rate.charge(1)
            self._byte_rate.charge(len(payload))
        self.published[lane] += 1
        return rows[-1][0]

    def _compose(self, lane: str, rows: list[Row]) -> bytes:
        return compose(self.topics, self.outbox.epoch, lane, rows)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate rejected: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is the broker running and the port right?)"
    return f"{type(exc).__name__}: {exc}"


def _refusal(reason) -> str:
    text = str(reason)
    low = text.lower()
    if "not authori" in low or "bad user" in low or "password" in low:
        return f"{text}: check broker.username and the password"
    return text
