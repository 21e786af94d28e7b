"""One MQTT connection of the centre: MQTT 5 (or 3.1.1), persistent session, acknowledgements after commit.

``manual_ack=True``: paho would otherwise send the PUBACK when ``on_message`` returns,
before the rows are committed.  Every delivered message carries the connection's
``generation``; :meth:`ack` ignores a message of an earlier connection (its mid
means nothing to the new one, and the broker sends it again anyway).  PUBACKs go out
in the order the caller gives, which is the order of arrival (MQTT 5, 4.6).
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from centre.config import Broker
from centre.mqtt.loop import PahoOnLoop
from core.protocol.limits import BATCH, KIB

log = logging.getLogger("centre.mqtt")

MAX_PACKET_SIZE = BATCH.max_bytes + 8 * KIB  # the largest batch a gateway may send, plus topic and header


class MqttError(Exception):
    """The connection failed, was refused, or ended while something waited on it."""


@dataclass(frozen=True, slots=True)
class Delivered:
    topic: str
    payload: bytes
    mid: int
    qos: int
    retain: bool
    generation: int


def read_password(broker: Broker, base_dir: str = ".") -> str | None:
    """The broker password: from a 0600 file when configured, else the (``${ENV}``-expanded) literal."""
    if not broker.password_file:
        return broker.password
    path = os.path.join(base_dir, broker.password_file)
    if os.stat(path).st_mode & 0o077:
        raise MqttError(f"{path}: the password file must be mode 0600 (chmod 600 {path})")
    with open(path, encoding="utf-8") as f:
        return f.read().strip()


def tls_context(broker: Broker, base_dir: str = ".") -> ssl.SSLContext | None:
    if broker.tls is None:
        return None
    t = broker.tls
    ctx = ssl.create_default_context(cafile=os.path.join(base_dir, t.ca) if t.ca else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if t.cert and t.key:
        ctx.load_cert_chain(os.path.join(base_dir, t.cert), os.path.join(base_dir, t.key))
    ctx.check_hostname = t.verify_hostname
    return ctx


class CentreMqtt:
    """One connection at a time; :meth:`connect` again after it dropped makes a fresh one (generation + 1)."""

    def __init__(self, broker: Broker, client_id: str, *, on_message: Callable[[Delivered], None],
                 on_lost: Callable[[str], None] | None = None, clean_start: bool = False, base_dir: str = "."):
        self.broker = broker
        self.client_id = client_id
        self.on_message = on_message
        self.on_lost = on_lost
        self.clean_start = clean_start
        self.base_dir = base_dir
        self.v5 = broker.protocol == "5"
        self.generation = 0
        self.session_present = False
        self._paho: mqtt.Client | None = None
        self._adapter: PahoOnLoop | None = None
        self._connack: asyncio.Future | None = None
        self._acks: dict[int, asyncio.Future] = {}

    @property
    def connected(self) -> bool:
        return self._paho is not None and self._paho.is_connected()

    async def connect(self, timeout: float = 10.0) -> None:
        self.close()
        loop = asyncio.get_running_loop()
        self.generation += 1
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, manual_ack=True,
                             protocol=mqtt.MQTTv5 if self.v5 else mqtt.MQTTv311,
                             clean_session=None if self.v5 else self.clean_start)
        client.max_inflight_messages_set(64)
        if self.broker.username:
            client.username_pw_set(self.broker.username, read_password(self.broker, self.base_dir))
        if (ctx := tls_context(self.broker, self.base_dir)) is not None:
            client.tls_set_context(ctx)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_ack
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        self._paho = client
        self._adapter = PahoOnLoop(loop, client, on_error=lambda exc: self._lost(f"client error: {exc!r}"))
        self._connack = loop.create_future()
        try:
            async with asyncio.timeout(timeout):
                await asyncio.to_thread(self._connect_blocking, client)
                rc = await self._connack
        except (OSError, MqttError) as exc:
            self.close()
            raise MqttError(f"cannot connect to {self.broker.host}:{self.broker.port}: {exc or type(exc).__name__}") from None
        if rc.is_failure:
            self.close()
            raise MqttError(f"the broker refused the connection: {rc}")

    def _connect_blocking(self, client: mqtt.Client) -> None:
        b = self.broker
        if self.v5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = b.session_expiry
            props.ReceiveMaximum = b.receive_maximum
            props.MaximumPacketSize = MAX_PACKET_SIZE
            client.connect(b.host, b.port, b.keepalive, clean_start=self.clean_start, properties=props)
        else:
            client.connect(b.host, b.port, b.keepalive)

    async def subscribe(self, topics: list[str]) -> None:
        """Subscribe at QoS 1; returns after SUBACK, raises MqttError for a refused topic."""
        client = self._require()
        if self.v5:
            result, mid = client.subscribe([(t, SubscribeOptions(qos=1)) for t in topics])
        else:
            result, mid = client.subscribe([(t, 1) for t in topics])
        if result != mqtt.MQTT_ERR_SUCCESS or mid is None:
            raise MqttError(f"subscribe failed: {mqtt.error_string(result)}")
        codes = await self._wait(mid)
        for topic, rc in zip(topics, codes):
            if rc.is_failure:
                raise MqttError(f"the broker refused the subscription to {topic}: {rc}")

    async def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """QoS 1; returns after PUBACK."""
        info = self._require().publish(topic, payload, qos=1, retain=retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise MqttError(f"publish to {topic} failed: {mqtt.error_string(info.rc)}")
        rc = await self._wait(info.mid)
        if rc is not None and getattr(rc, "is_failure", False):
            raise MqttError(f"the broker refused the message on {topic}: {rc}")

    def ack(self, msg: Delivered) -> bool:
        """PUBACK one message after its rows are committed; False when its connection is gone."""
        if msg.qos == 0 or msg.generation != self.generation or self._paho is None:
            return False
        return self._paho.ack(msg.mid, msg.qos) == mqtt.MQTT_ERR_SUCCESS

    def pause_reading(self) -> None:
        if self._adapter is not None:
            self._adapter.pause_reading()

    def resume_reading(self) -> None:
        if self._adapter is not None:
            self._adapter.resume_reading()

    async def disconnect(self) -> None:
        """A clean DISCONNECT (the session stays on the broker for session_expiry)."""
        if self._paho is not None and self._paho.is_connected():
            self._paho.disconnect()
            await asyncio.sleep(0.05)
        self.close()

    def close(self) -> None:
        client, self._paho = self._paho, None
        if self._adapter is not None:
            self._adapter.detach()
            self._adapter = None
        if client is not None and (sock := client.socket()) is not None:
            try:
                sock.close()
            except OSError:
                pass
        self._fail_waiters("connection closed")

    # -- internals -------------------------------------------------------------------------------
    def _require(self) -> mqtt.Client:
        if self._paho is None:
            raise MqttError("not connected")
        return self._paho

    async def _wait(self, mid: int):
        fut = asyncio.get_running_loop().create_future()
        self._acks[mid] = fut
        try:
            return await fut
        finally:
            self._acks.pop(mid, None)

    def _fail_waiters(self, why: str) -> None:
        if self._connack is not None and not self._connack.done():
            self._connack.set_exception(MqttError(why))
        acks, self._acks = self._acks, {}
        for fut in acks.values():
            if not fut.done():
                fut.set_exception(MqttError(why))

    def _lost(self, why: str) -> None:
        self._fail_waiters(why)
        if self.on_lost is not None:
            self.on_lost(why)

    def _on_connect(self, client, userdata, flags, rc, properties) -> None:
        if client is not self._paho:
            return
        self.session_present = bool(flags.session_present)
        if self._connack is not None and not self._connack.done():
            self._connack.set_result(rc)

    def _on_disconnect(self, client, userdata, flags, rc, properties) -> None:
        if client is self._paho:
            self._lost(f"connection lost: {rc}")

    def _on_ack(self, client, userdata, mid, reason_codes, properties) -> None:
        fut = self._acks.get(mid)
        if client is self._paho and fut is not None and not fut.done():
            fut.set_result(reason_codes)

    def _on_publish(self, client, userdata, mid, rc, properties) -> None:
        fut = self._acks.get(mid)
        if client is self._paho and fut is not None and not fut.done():
            fut.set_result(rc)

    def _on_message(self, client, userdata, msg) -> None:
        if client is not self._paho:
            return
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            topic = ""  # counted as junk by the caller, and acknowledged
        self.on_message(Delivered(topic, msg.payload, msg.mid, msg.qos, bool(msg.retain), self.generation))
