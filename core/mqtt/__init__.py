"""MQTT on asyncio, for the gateway and the centre alike: paho driven from the loop, one client, typed errors.

The gateway's uplink and operator commands and the centre's ingest and publisher
all connect through :class:`MqttClient`; each builds its :class:`BrokerEndpoint`
from its own config (``gateway.uplink.broker_auth``, ``centre.mqtt.endpoint``).
"""

from core.mqtt.client import MqttClient
from core.mqtt.endpoint import BrokerEndpoint, Protocol
from core.mqtt.errors import MqttCodeError, MqttConnectError, MqttDisconnectedError, MqttError
from core.mqtt.messages import Message, Will
from core.mqtt.packet_guard import RECEIVER_MAX_PACKET_SIZE

__all__ = ["BrokerEndpoint", "Message", "MqttClient", "MqttCodeError", "MqttConnectError", "MqttDisconnectedError",
           "MqttError", "Protocol", "RECEIVER_MAX_PACKET_SIZE", "Will"]
