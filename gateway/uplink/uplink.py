"""The uplink: outbox -> MQTT broker, QoS 1, a record leaves only after PUBACK.

Each connection gets a fresh paho client, so nothing paho queued for a dead
connection is replayed behind our back: after a reconnect the outbox itself
is read again from its oldest unacknowledged record.  Alarms go first, then
events, then telemetry; some of the in-flight window is kept free for alarms.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from operator import itemgetter

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from core.backoff import Backoff, FailureLog
from core.protocol.topics import Topics
from core.records import LANES, Lane
from gateway.config.site import BrokerConfig
from gateway.outbox.store import Outbox
from gateway.uplink.broker_auth import broker_password, tls_context
from gateway.uplink.mqtt import PahoOnLoop

log = logging.getLogger("canopy.uplink")

# In-flight slots kept back from lower lanes, so an alarm never waits for a slot.
_RESERVED = {"alarm": 0, "event": 1, "telemetry": 2}


@dataclass(slots=True)
class _InFlight:
    lane: Lane
    first: int
    last: int
    count: int
    size: int
    sent: float = 0.0  # loop time of the publish call


class QueueDelayWindow:
    """How many event/telemetry bytes may be unacknowledged: delay-based (LEDBAT-like).

    Each PUBACK gives an RTT sample; the smallest over the last 5-10 s is the
    link's base RTT, and the smallest over the last base RTT (which filters
    out jitter) minus the base is queueing in front of us (socket buffers, a
    slow uplink, a proxy).  The window grows while that queueing is below
    ``target`` seconds and shrinks in proportion when above, so the pipe stays
    full but never holds much more than ``target`` of telemetry that a new
    alarm would have to wait behind.  Bounded by [one message, ``maximum``].
    ``target=None`` keeps the old fixed cap of ``maximum`` bytes.
    """

    START = 64 * 1024

    def __init__(self, maximum: int, target: float | None):
        self.maximum = maximum
        self.target = target
        self.reset()

    def reset(self) -> None:
        self.bytes = min(self.maximum, self.START) if self.target else self.maximum
        self._mins = [float("inf"), float("inf")]  # base RTT: min of this and the previous 5 s bucket
        self._bucket_end = 0.0
        self._next_cut = 0.0
        self.samples = 0  # RTT samples since the connection started
        self._recent: deque[tuple[float, float]] = deque()  # (time, rtt) over the last base RTT

    def on_ack(self, now: float, rtt: float, size: int) -> None:
        if not self.target:
            return
        self.samples += 1
        if now >= self._bucket_end:
            self._mins = [self._mins[1], float("inf")]
            self._bucket_end = now + 5.0
        self._mins[1] = min(self._mins[1], rtt)
        base = min(self._mins)
        recent = self._recent
        recent.append((now, rtt))
        while len(recent) > 1 and recent[0][0] < now - base:
            recent.popleft()
        queued = min(r for _, r in recent) - base
        if queued <= self.target:
            # additive increase, slower near the target: at most one message more per RTT
            self.bytes = int(min(self.maximum, self.bytes + (1 - queued / self.target) * size * size / max(self.bytes, size)))
        elif now >= self._next_cut:
            # multiplicative decrease in proportion to the excess, at most halving, once per RTT
            self.bytes = int(max(size, self.bytes * max(0.5, self.target / queued)))
            self._next_cut = now + rtt


class RateLimit:
    """Token bucket that may go briefly into debt (one message of burst)."""

    def __init__(self, rate: float | None):
        self.rate = rate
        self.tokens = rate or 0.0
        self._last = 0.0

    def delay(self, now: float) -> float:
        if not self.rate:
            return 0.0
        self.tokens = min(self.rate, self.tokens + (now - self._last) * self.rate)
        self._last = now
        return 0.0 if self.tokens > 0 else -self.tokens / self.rate

    def charge(self, amount: float) -> None:
        if self.rate:
            self.tokens -= amount


class Uplink:
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
        self._inflight: dict[int, _InFlight] = {}
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
        import os

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
        body = {"v": 1, "site": self.topics.site, "gateway": self.topics.gateway, "status": status, **extra}
        if status == "online":
            body.update(self.state())
        else:
            body["boot"] = self.outbox.boot
        return orjson.dumps(body)

    async def _pump(self, client: mqtt.Client) -> None:
        """Publish pending records, highest lane first, within the in-flight window.

        Events and telemetry also respect the replay rate limits and the
        in-flight byte cap; alarms are exempt and have slots kept for them.
        """
        cursor = {lane: 0 for lane in LANES}
        window = self.broker.max_inflight
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            sent = False
            retry_in: float | None = None
            for lane in LANES:
                limit = max(1, window - _RESERVED[lane])
                while len(self._inflight) < limit:
                    if lane != "alarm":
                        # the next message must fit in the window (one is always allowed)
                        if self._inflight_bytes and self._inflight_bytes + self._last_size > self.window.bytes:
                            break
                        now = loop.time()
                        delay = max(self._msg_rate.delay(now), self._byte_rate.delay(now))
                        if delay > 0:
                            retry_in = delay if retry_in is None else min(retry_in, delay)
                            break
                    if cursor[lane] >= self.outbox.counters[lane].last_seq:
                        break  # nothing newer was ever committed in this lane: skip the SQLite round trip
                    rows = await self.outbox.fetch(lane, cursor[lane], self.batch_max_records)
                    if client is not self._client or not self.connected.is_set():
                        return
                    if not rows:
                        break
                    if lane != "alarm" and self.window.samples:
                        # no bigger than half the window: on a slow link messages get small,
                        # so an alarm never waits behind one long telemetry message
                        rows = self._fit(rows, min(self.batch_max_bytes, max(4096, self.window.bytes // 2)))
                    else:
                        rows = self._fit(rows)
                    topic = self.topics.for_lane(lane)
                    if lane != "telemetry":
                        topic, rows = self._route(topic, rows)
                    payload = self._compose(lane, rows)
                    info = client.publish(topic, payload, qos=1)
                    if info.rc != mqtt.MQTT_ERR_SUCCESS:
                        return  # connection is going away; _on_disconnect follows
                    self._inflight[info.mid] = _InFlight(lane, rows[0][0], rows[-1][0], len(rows), len(payload), loop.time())
                    if lane != "alarm":
                        self._inflight_bytes += len(payload)
                        self._last_size = len(payload)
                        self._msg_rate.charge(1)
                        self._byte_rate.charge(len(payload))
                    cursor[lane] = rows[-1][0]
                    self.published[lane] += 1
                    sent = True
                    if lane != "alarm" and self._wake.is_set():
                        break  # something new arrived (maybe an alarm): look at the higher lanes again
                if sent and self._wake.is_set():
                    break
            if not sent:
                if retry_in is not None:
                    try:
                        await asyncio.wait_for(self._wake.wait(), timeout=retry_in)
                    except asyncio.TimeoutError:
                        pass
                else:
                    await self._wake.wait()

    def _route(self, default: str, rows: list[tuple[int, bytes]]) -> tuple[str, list[tuple[int, bytes]]]:
        """Event/alarm records may name their own topic suffix (``"topic": "cmd/result"``).

        A message carries records of one topic only: the batch is cut where
        the topic changes.
        """
        def topic_of(body: bytes) -> str:
            if b'"topic":' not in body:
                return default
            suffix = orjson.loads(body).get("topic")
            return f"{self.topics.base}/{suffix}" if isinstance(suffix, str) and suffix else default

        first = topic_of(rows[0][1])
        for i in range(1, len(rows)):
            if topic_of(rows[i][1]) != first:
                return first, rows[:i]
        return first, rows

    def _fit(self, rows: list[tuple[int, bytes]], max_bytes: int | None = None) -> list[tuple[int, bytes]]:
        max_bytes = self.batch_max_bytes if max_bytes is None else max_bytes
        if sum(map(len, map(itemgetter(1), rows))) + 16 * len(rows) <= max_bytes:
            return rows  # the whole page fits (the usual case): one pass in C
        total = 0
        for i, (_, body) in enumerate(rows):
            total += len(body) + 16
            if total > max_bytes and i > 0:
                return rows[:i]
        return rows

    def _compose(self, lane: str, rows: list[tuple[int, bytes]]) -> bytes:
        head = b'{"v":1,"site":%s,"gateway":%s,"epoch":"%s","lane":"%s","seq":[%d,%d],"records":[' % (
            orjson.dumps(self.topics.site),
            orjson.dumps(self.topics.gateway),
            self.outbox.epoch.encode(),
            lane.encode(),
            rows[0][0],
            rows[-1][0],
        )
        return head + b",".join(b'{"seq":%d,%s' % (seq, body[1:]) for seq, body in rows) + b"]}"


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
