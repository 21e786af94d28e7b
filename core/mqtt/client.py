"""One asyncio MQTT client: how the gateway's uplink, every CLI command, the demo and the centre talk to a broker.

In the spirit of aiomqtt, on top of paho driven from the loop (``PahoOnLoop``)::

    async with MqttClient(endpoint, client_id="canopy-ack-gw-1") as client:
        await client.subscribe(topics.event)           # returns after SUBACK
        await client.publish(topics.alert_ack, body)   # returns after PUBACK (QoS 1)
        async for message in client.messages():        # what the broker delivers
            ...

One place decides how a connection is made (blocking TCP/TLS connect in a worker thread, CONNACK awaited
on the loop) and what a failure looks like (``MqttConnectError`` with the broker's reason, ``MqttCodeError``
for a refused subscription or publish, ``MqttDisconnectedError`` when the link drops while something waits);
an exception inside a paho callback is raised to whoever awaits, never only logged.  MQTT 5 by default, 3.1.1
through the same calls.  Every client announces a Maximum Packet Size and refuses a bigger packet from its
header, unread (``packet_guard``).  A receiver that acknowledges only after it committed (the centre's
ingest) takes ``manual_ack=True`` and calls :meth:`MqttClient.ack`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
from collections.abc import AsyncIterator, Callable

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from core.backoff import RateLimitedLog
from core.mqtt.endpoint import PAHO_PROTOCOL, BrokerEndpoint, Protocol
from core.mqtt.errors import (MqttCodeError, MqttConnectError, MqttDisconnectedError, MqttError,
                              describe_connect_failure, describe_refusal)
from core.mqtt.inbox import Inbox
from core.mqtt.lean_publish import raw_properties
from core.mqtt.messages import Message, Will
from core.mqtt.packet_guard import RECEIVER_MAX_PACKET_SIZE
from core.mqtt.paho_factory import connect_blocking, new_paho
from core.mqtt.paho_on_loop import PahoOnLoop
from core.mqtt.pending import Pending

log = logging.getLogger("canopy.mqtt")


def _guarded(callback):
    """A paho callback whose exception is raised to the awaiting caller instead of inside paho."""

    @functools.wraps(callback)
    def wrapper(self: MqttClient, client, *args) -> None:
        if client is not self._paho:
            return  # a callback of a connection we already let go of
        try:
            callback(self, client, *args)
        except Exception as exc:
            self._fail(exc)

    return wrapper


class MqttClient:
    """One connection to one broker, used from one event loop.

    ``client_id`` and ``keepalive`` default to the endpoint's (a random id when
    it has none).  ``max_queued_messages`` bounds the messages delivered but not
    yet read; past it the oldest are dropped and counted in ``dropped``; with
    ``on_message`` every message goes to that callback instead.  For many
    messages in flight at once (the uplink's pump), ``publish_nowait`` returns
    the mid and ``on_published(mid, reason_code)`` hears each acknowledgement.
    ``connect()`` again after the link dropped makes a fresh connection (a new
    paho client) with the same settings; ``endpoint``, ``will`` and ``clean_start`` may change in between.
    ``session_expiry`` (seconds) and ``receive_maximum`` (QoS 1 messages in
    flight to us) need MQTT 5.  ``on_lost(why)`` hears an accepted connection
    end without us ending it.  ``receive_guard=False`` passes every packet on
    whatever its size, for a receiver with a persistent session, to which a refused
    packet would come back on every reconnect.
    """

    def __init__(self, endpoint: BrokerEndpoint, *, client_id: str | None = None, protocol: Protocol | None = None,
                 keepalive: int | None = None, connect_timeout: float = 10.0, clean_start: bool = True,
                 will: Will | None = None, session_expiry: int | None = None, receive_maximum: int | None = None,
                 max_packet_size: int = RECEIVER_MAX_PACKET_SIZE, receive_guard: bool = True, manual_ack: bool = False,
                 max_queued_messages: int = 10_000, max_inflight: int = 20,
                 on_published: Callable[[int, ReasonCode], None] | None = None,
                 on_message: Callable[[Message], None] | None = None,
                 on_lost: Callable[[MqttError], None] | None = None):
        protocol = protocol or endpoint.protocol
        if protocol not in PAHO_PROTOCOL:
            raise ValueError(f"MQTT protocol {protocol!r}: expected one of {', '.join(PAHO_PROTOCOL)}")
        if session_expiry is not None and protocol != "5":
            raise ValueError("a session expiry needs MQTT 5 (3.1.1 has clean session true or false only)")
        if receive_maximum is not None and protocol != "5":
            raise ValueError("a receive maximum needs MQTT 5")
        self.endpoint = endpoint
        self.client_id = client_id or endpoint.client_id or f"canopy-{secrets.token_hex(4)}"
        self.protocol = protocol
        self.keepalive = endpoint.keepalive if keepalive is None else keepalive
        self.connect_timeout = connect_timeout
        self.clean_start = clean_start
        self.will = will
        self.session_expiry = session_expiry
        self.receive_maximum = receive_maximum
        self.max_packet_size = max_packet_size
        self.receive_guard = receive_guard
        self.manual_ack = manual_ack
        self.max_inflight = max_inflight
        self.on_published = on_published
        self.on_message = on_message
        self.on_lost = on_lost
        self.connection = 0  # 1 for the first connect, 2 after a reconnect, ...: what Message.connection says
        self.session_present = False
        self.connack_properties: Properties | None = None
        self.undecodable = 0  # messages dropped because their topic is not UTF-8
        self.refused_too_large = 0  # packets refused unread: bigger than max_packet_size
        self._refusals = RateLimitedLog(log)
        self._refused_reason: str | None = None  # why this connection ended, when we refused a packet
        self._paho: mqtt.Client | None = None
        self._adapter: PahoOnLoop | None = None
        self._connack: asyncio.Future | None = None
        self._closed: asyncio.Future | None = None  # why the connection ended: None (by us) or an MqttError
        self._closing = False
        self._accepted = False  # the broker accepted this connection (so losing it is news for on_lost)
        self._error: BaseException | None = None
        self._acks = Pending()
        self._inbox = Inbox(max_queued_messages)

    async def __aenter__(self) -> MqttClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.disconnect()

    @property
    def paho(self) -> mqtt.Client | None:
        """The underlying paho client while connected (for what this class does not wrap)."""
        return self._paho

    @property
    def dropped(self) -> int:
        """Messages dropped unread: nobody read them in time, or their topic is not UTF-8."""
        return self._inbox.dropped + self.undecodable

    @property
    def is_connected(self) -> bool:
        return (self._paho is not None and self._closed is not None and not self._closed.done()
                and self._connack is not None and self._connack.done() and not self._connack.cancelled()
                and self._connack.exception() is None)

    # -- connect / disconnect -------------------------------------------------------------
    async def connect(self) -> None:
        """Connect, and return once the broker accepted us; raises MqttConnectError otherwise."""
        if self._paho is not None:
            if self._closed is None or not self._closed.done():
                raise MqttError("already connected: one MqttClient holds one connection")
            self._release()  # the link dropped: connect again with the same settings
        loop = asyncio.get_running_loop()
        self.connection += 1
        self._error = None
        self._closing = False
        self._accepted = False
        self._refused_reason = None
        self._paho = self._new_paho()
        self._adapter = PahoOnLoop(loop, self._paho, on_error=self._fail)
        self._connack = loop.create_future()
        self._closed = loop.create_future()
        try:
            async with asyncio.timeout(self.connect_timeout):
                await asyncio.to_thread(connect_blocking, self._paho, self.endpoint, protocol=self.protocol,
                                        keepalive=self.keepalive, clean_start=self.clean_start,
                                        max_packet_size=self.max_packet_size, session_expiry=self.session_expiry,
                                        receive_maximum=self.receive_maximum)
                rc = await self._connack
        except (OSError, ValueError, MqttDisconnectedError) as exc:  # TimeoutError and ssl.SSLError are OSErrors
            self._release()
            raise MqttConnectError(describe_connect_failure(exc), timed_out=isinstance(exc, TimeoutError)) from None
        except BaseException:
            self._release()
            raise
        if rc.is_failure:
            self._release()
            raise MqttConnectError(describe_refusal(rc), rc=rc)
        log.debug("connected to %s as %s (MQTT %s)", self.endpoint, self.client_id, self.protocol)

    def _new_paho(self) -> mqtt.Client:
        client = new_paho(self.endpoint, client_id=self.client_id, protocol=self.protocol, clean_start=self.clean_start,
                          manual_ack=self.manual_ack, max_inflight=self.max_inflight,
                          connect_timeout=self.connect_timeout, will=self.will,
                          guard=(self.max_packet_size if self.receive_guard else None, self._refused))
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = client.on_unsubscribe = self._on_suback
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        return client

    def _refused(self, size: int) -> None:
        """The guard refused a packet unread (it has sent DISCONNECT 0x95 with MQTT 5 and shut the socket)."""
        self.refused_too_large += 1
        self._refused_reason = (f"refused a packet of {size} bytes unread: larger than the Maximum Packet Size "
                                f"{self.max_packet_size}")
        self._refusals("too_large", "broker %s sent a packet of %d bytes, over the Maximum Packet Size %d: refused unread, "
                       "disconnecting%s", self.endpoint, size, self.max_packet_size, " (reason 0x95)" if self.protocol == "5" else "")

    async def disconnect(self, timeout: float = 2.0) -> None:
        """Send DISCONNECT (so no last will), wait briefly until it is written, let the socket go."""
        client = self._paho
        if client is None:
            return
        self._closing = True
        if self._closed is not None and not self._closed.done() and client.is_connected():
            client.disconnect()
            try:
                async with asyncio.timeout(timeout):
                    await asyncio.shield(self._closed)
            except TimeoutError:
                pass
        self._release()

    def close(self) -> None:
        """Let the socket go at once, without DISCONNECT: to the broker the link died (will sent, session kept)."""
        self._closing = True
        self._release()

    def _release(self) -> None:
        client, self._paho = self._paho, None
        if self._connack is not None and not self._connack.done():  # a connect still waiting: let it go now
            self._connack.set_exception(MqttDisconnectedError("disconnected by the client"))
            self._connack.exception()  # retrieved: no "never retrieved" warning when nobody awaits it any more
        if self._adapter is not None:
            self._adapter.detach()
            self._adapter = None
        sock = client.socket() if client is not None else None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass
        self._end(None if self._closing else MqttDisconnectedError("connection closed"))

    def _end(self, why: MqttError | None) -> None:
        """The connection is over: wake every waiter (``why`` None when we ended it)."""
        lost = False
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(why)
            lost = why is not None and self._accepted
        self._acks.fail_all(MqttDisconnectedError(str(why) if why else "disconnected by the client"))
        self._inbox.wake()
        if lost and self.on_lost is not None:
            self.on_lost(why)  # type: ignore[arg-type]

    def _fail(self, exc: BaseException) -> None:
        """An exception in a paho callback or loop step: raised to every waiter and the next call.

        The connection is over for us (``wait_closed`` returns): its state is unknown.
        """
        log.debug("MQTT client error: %r", exc)
        if self._error is None:
            self._error = exc
        if self._connack is not None and not self._connack.done():
            self._connack.set_exception(exc)
        self._acks.fail_all(exc)
        self._end(MqttDisconnectedError(f"MQTT client error: {type(exc).__name__}: {exc}"))

    def _require(self) -> mqtt.Client:
        if self._error is not None:
            raise self._error
        if not self.is_connected:
            raise MqttDisconnectedError(f"not connected to {self.endpoint}")
        return self._paho  # type: ignore[return-value]

    # -- requests -------------------------------------------------------------------------
    async def subscribe(self, *topics: str, qos: int = 1, options: SubscribeOptions | None = None,
                        properties: Properties | None = None) -> list[ReasonCode]:
        """Subscribe to topics; returns the granted reason codes once the broker sent SUBACK."""
        if not topics:
            raise ValueError("subscribe needs at least one topic")
        client = self._require()
        if self.protocol == "5":
            opts = options or SubscribeOptions(qos=qos)
            result, mid = client.subscribe([(t, opts) for t in topics], properties=properties)
        else:
            result, mid = client.subscribe([(t, qos) for t in topics])
        if result != mqtt.MQTT_ERR_SUCCESS or mid is None:
            raise MqttCodeError(f"subscribe to {', '.join(topics)}", result)
        codes = list(await self._acks.wait(mid))
        for topic, rc in zip(topics, codes):
            if rc.is_failure:
                raise MqttCodeError(f"the broker refused the subscription to {topic}", rc)
        return codes

    async def unsubscribe(self, *topics: str) -> None:
        client = self._require()
        result, mid = client.unsubscribe(list(topics))
        if result != mqtt.MQTT_ERR_SUCCESS or mid is None:
            raise MqttCodeError(f"unsubscribe from {', '.join(topics)}", result)
        await self._acks.wait(mid)

    async def publish(self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False,
                      properties: Properties | None = None) -> ReasonCode:
        """Publish and return once the broker has it: PUBACK for QoS 1, PUBCOMP for QoS 2, written for QoS 0."""
        client = self._require()
        info = client.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise MqttCodeError(f"publish to {topic}", info.rc)
        return await self._acks.wait(info.mid)  # type: ignore[return-value]

    def publish_nowait(self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False,
                       properties: Properties | None = None) -> int:
        """Queue a message without waiting; its acknowledgement goes to ``on_published``.  Returns the mid."""
        info = self._require().publish(topic, payload, qos=qos, retain=retain, properties=properties)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise MqttCodeError(f"publish to {topic}", info.rc)
        return info.mid

    def ack(self, message: Message) -> bool:
        """Acknowledge a message (``manual_ack``), once the caller has committed it; False when its connection is gone.

        PUBACKs go out in the order of the calls, which should be the order of arrival (MQTT 5, 4.6).
        """
        if not self.manual_ack:
            raise ValueError("ack() is for a client made with manual_ack=True (paho acknowledges the others itself)")
        if message.qos == 0 or message.connection != self.connection or self._paho is None:
            return False
        return self._paho.ack(message.mid, message.qos) == mqtt.MQTT_ERR_SUCCESS

    def pause_reading(self) -> None:
        """Stop reading the socket (keepalive and writes go on) until :meth:`resume_reading`; a reconnect reads again."""
        if self._adapter is not None:
            self._adapter.pause_reading()

    def resume_reading(self) -> None:
        if self._adapter is not None:
            self._adapter.resume_reading()

    async def wait_closed(self) -> MqttError | None:
        """Until the connection ends: None when we ended it, else why it was lost."""
        if self._closed is None:
            raise MqttDisconnectedError("not connected")
        return await asyncio.shield(self._closed)

    async def messages(self) -> AsyncIterator[Message]:
        """What the broker delivers, in order, until we disconnect.

        Raises MqttDisconnectedError when the link drops (after the messages
        already received), and a callback's exception when one failed.
        """
        while True:
            message = self._inbox.pop()
            if message is not None:
                yield message
                continue
            if self._error is not None:
                raise self._error
            if self._closed is None:
                raise MqttDisconnectedError("not connected")
            if self._closed.done():
                why = self._closed.result()
                if why is None:
                    return
                raise why
            await self._inbox.wait()

    # -- paho callbacks (on the loop thread) --------------------------------------------
    @_guarded
    def _on_connect(self, client, userdata, flags, rc, properties) -> None:
        self.session_present = bool(flags.session_present)
        self.connack_properties = properties if self.protocol == "5" else None
        self._accepted = not rc.is_failure
        if self._connack is not None and not self._connack.done():
            self._connack.set_result(rc)

    @_guarded
    def _on_disconnect(self, client, userdata, flags, rc, properties) -> None:
        why = self._refused_reason or str(rc)
        if self._connack is not None and not self._connack.done():
            self._connack.set_exception(MqttDisconnectedError(f"disconnected before CONNACK ({why})"))
        self._end(None if self._closing else MqttDisconnectedError(f"connection to {self.endpoint} lost: {why}", reason=why))

    @_guarded
    def _on_suback(self, client, userdata, mid, reason_codes, properties) -> None:  # SUBACK and UNSUBACK
        fut = self._acks.waiter(mid)
        if fut is not None and not fut.done():
            fut.set_result(reason_codes)

    @_guarded
    def _on_publish(self, client, userdata, mid, rc, properties) -> None:
        fut = self._acks.waiter(mid)
        if fut is None:
            if self.on_published is not None:
                self.on_published(mid, rc)
            return
        if fut.done():
            return
        if rc.is_failure:
            fut.set_exception(MqttCodeError("the broker refused the message", rc))
        else:
            fut.set_result(rc)

    @_guarded
    def _on_message(self, client, userdata, msg) -> None:
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            if not self.manual_ack:
                self.undecodable += 1
                log.warning("dropped a message whose topic is not UTF-8")
                return
            topic = ""  # only the caller may acknowledge it: it gets it, as junk
        message = Message(topic, msg.payload, msg.qos, bool(msg.retain), raw_properties(msg), msg.mid, self.connection)
        if self.on_message is not None:
            self.on_message(message)
        else:
            self._inbox.put(message)
