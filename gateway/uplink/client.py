"""Old import path of the asyncio MQTT client, which now lives in ``core.mqtt`` (shared with the centre).

Kept only until ``gateway/uplink/uplink.py``, ``gateway/ops/doctor_net.py`` and the
uplink tests import ``core.mqtt``; then delete this file.
"""

from core.mqtt import Message, MqttClient, MqttCodeError, MqttConnectError, MqttDisconnectedError, MqttError, Will

__all__ = ["Message", "MqttClient", "MqttCodeError", "MqttConnectError", "MqttDisconnectedError", "MqttError", "Will"]
