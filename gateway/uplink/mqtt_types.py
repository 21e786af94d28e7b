"""The values the asyncio MQTT client takes and hands out: protocol names, a last will, a delivered message."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties

from core.protocol.limits import BATCH, KIB

Protocol = Literal["3.1.1", "5"]
PAHO_PROTOCOL = {"3.1.1": mqtt.MQTTv311, "5": mqtt.MQTTv5}
# What a receiver of gateway messages takes by default: the largest batch (docs/protocol.md#limits)
# plus topic, properties and header.  The gateway's own uplink announces far less (limits.MAX_PACKET_SIZE).
RECEIVER_MAX_PACKET_SIZE = BATCH.max_bytes + 8 * KIB


@dataclass(frozen=True, slots=True)
class Will:
    """The last will: published by the broker if the connection dies without a DISCONNECT."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


@dataclass(frozen=True, slots=True)
class Message:
    """One message the broker delivered (``properties`` with MQTT 5 only)."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: Properties | None = None

    def matches(self, pattern: str) -> bool:
        """Whether the topic matches a subscription pattern with ``+`` and ``#``."""
        return mqtt.topic_matches_sub(pattern, self.topic)
