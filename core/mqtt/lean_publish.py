"""An incoming PUBLISH decoded in a few slices; MQTT 5 properties are kept as bytes, decoded when asked.

Why hand-parse at all: paho 2.2 decodes the properties of every MQTT 5 PUBLISH
into a fresh ``Properties`` object, whose constructor and ``clear()`` walk
~30 property names with string operations: ~40-80 µs a message here, against
~4 µs for the rest of the packet (3.1.1).  Under a flood of junk on ``…/cmd``
that decoding was most of the gateway's receive cost (docs/performance.md,
*Junk floods*), and no receiver reads the properties of a command.  So
``LeanPaho._handle_publish`` splits the packet itself -- topic, packet id,
property block (MQTT 5), payload: four fields at fixed places -- and
``Message.properties`` decodes the block only when someone asks.  Every message
then goes straight to ``on_message``, without paho's per-topic matcher.

Scope, kept small on purpose: QoS 0 and 1.  QoS 2, which needs paho's
PUBREC/PUBREL state, goes through paho's own ``_handle_publish``.  A packet that
does not add up raises paho's ``MalformedPacket``, which paho turns into a
protocol error as for its own decoder.
"""

from __future__ import annotations

import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.exception import MalformedPacket


class LeanMessage(mqtt.MQTTMessage):
    """paho's message with ``raw_properties`` (MQTT 5: the encoded property block, its length first; 3.1.1: None).

    Incoming only: ``info`` (the publish handle of an outgoing message) is None.
    """

    __slots__ = ("raw_properties",)

    def __init__(self, mid: int, topic: bytes, qos: int, dup: bool, retain: bool, raw_properties: bytes | None,
                 payload: bytes):
        self.timestamp = time.monotonic()
        self.state = mqtt.mqtt_ms_invalid
        self.mid, self._topic, self.qos, self.dup, self.retain = mid, topic, qos, dup, retain
        self.payload = payload
        self.info = None
        self.properties = None
        self.raw_properties = raw_properties


def decode_publish(header: int, packet: bytes | bytearray, mqtt5: bool) -> LeanMessage:
    """A PUBLISH (``header``: its first byte; ``packet``: what follows the remaining length).

    Topic, payload and properties come out as ``bytes``, as from paho's decoder (paho reads a packet it
    assembled itself into a bytearray).
    """
    if not isinstance(packet, bytes):
        packet = bytes(packet)
    n = len(packet)
    if n < 2:
        raise MalformedPacket("PUBLISH too short for its topic length")
    pos = 2 + ((packet[0] << 8) | packet[1])
    if pos > n or (pos == 2 and not mqtt5):
        raise MalformedPacket("PUBLISH topic overruns the packet, or is empty (MQTT 3.1.1)")
    topic = packet[2:pos]
    qos = (header >> 1) & 0x03
    mid = 0
    if qos:
        if pos + 2 > n:
            raise MalformedPacket("PUBLISH too short for its packet id")
        mid = (packet[pos] << 8) | packet[pos + 1]
        pos += 2
    if not mqtt5:
        return LeanMessage(mid, topic, qos, bool(header & 0x08), bool(header & 0x01), None, packet[pos:])
    start, length, shift = pos, 0, 0
    while True:  # the property length: a Variable Byte Integer of at most four bytes
        if pos >= n or shift > 21:
            raise MalformedPacket("PUBLISH property length is truncated or longer than four bytes")
        byte = packet[pos]
        pos += 1
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    end = pos + length
    if end > n:
        raise MalformedPacket(f"PUBLISH properties of {length} bytes overrun the packet")
    return LeanMessage(mid, topic, qos, bool(header & 0x08), bool(header & 0x01), packet[start:end], packet[end:])


class LeanPaho(mqtt.Client):
    """paho's client whose QoS 0/1 PUBLISH skips the property decoding and the topic matcher (module docstring)."""

    def _handle_publish(self) -> MQTTErrorCode:
        header = self._in_packet["command"]
        qos = (header >> 1) & 0x03
        if qos > 1:
            return super()._handle_publish()
        message = decode_publish(header, self._in_packet["packet"], self._protocol == mqtt.MQTTv5)
        self._handle_on_message(message)
        if qos == 1 and not self._manual_ack:
            return self._send_puback(message.mid)
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _handle_on_message(self, message: mqtt.MQTTMessage) -> None:
        """Straight to ``on_message`` when no per-topic callback was added (the asyncio client adds none).

        paho's own walks its topic matcher and takes two locks for every message; an exception goes up as in paho's.
        """
        if self._on_message_filtered._root._children:
            return super()._handle_on_message(message)
        on_message = self._on_message
        if on_message is not None:
            on_message(self, self._userdata, message)


def raw_properties(msg: mqtt.MQTTMessage) -> bytes | None:
    """A delivered message's encoded property block: as the lean decoder kept it, re-encoded from paho's (QoS 2).

    None with MQTT 3.1.1, which has no properties.
    """
    raw = getattr(msg, "raw_properties", None)
    if raw is None and msg.properties is not None:
        raw = msg.properties.pack()
    return raw
