"""What the asyncio MQTT client hands out and takes besides its endpoint: a delivered message, a last will."""

from __future__ import annotations

from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


@dataclass(frozen=True, slots=True)
class Will:
    """The last will: published by the broker if the connection dies without a DISCONNECT."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


@dataclass(frozen=True, slots=True)
class Message:
    """One message the broker delivered (``raw_properties`` and ``properties`` with MQTT 5 only).

    ``mid`` and ``connection`` (1 for the client's first connection, 2 after a
    reconnect, ...) are what ``MqttClient.ack`` needs: a mid means nothing to a
    later connection, so a message of an earlier one is never acknowledged.
    """

    topic: str
    payload: bytes
    qos: int
    retain: bool
    raw_properties: bytes | None = None  # the encoded property block, its length first
    mid: int = 0
    connection: int = 0

    @property
    def properties(self) -> Properties | None:
        """The MQTT 5 properties, decoded when asked: paho's decoder costs more than all the rest of a message."""
        if self.raw_properties is None:
            return None
        props = Properties(PacketTypes.PUBLISH)
        props.unpack(self.raw_properties)
        return props

    def matches(self, pattern: str) -> bool:
        """Whether the topic matches a subscription pattern with ``+`` and ``#``."""
        return mqtt.topic_matches_sub(pattern, self.topic)
