"""One MQTT connection of the centre: MQTT 5 (or 3.1.1), persistent session, acknowledgements after commit.

A thin policy over ``core.mqtt.MqttClient`` (the client the gateway uses too):
``manual_ack``, because paho would otherwise send the PUBACK when ``on_message``
returns, before the rows are committed; the session expiry and Receive Maximum
from centre.yaml; the endpoint read again at every connect.  Every delivered
message carries its ``connection``; :meth:`CentreMqtt.ack` ignores a message of an
earlier connection (its mid means nothing to the new one, and the broker sends it
again anyway).  PUBACKs go out in the order the caller gives, which is the order
of arrival (MQTT 5, 4.6).

No receive guard (``receive_guard=False``): the session is persistent, so a packet
refused unread would come back on every reconnect and stop ingest for every site;
an MQTT 5 broker drops an oversized packet for us (the announced Maximum Packet
Size), and ingest refuses an oversized payload as junk (``core.protocol.limits``).
"""

from __future__ import annotations

from collections.abc import Callable

from centre.config import Broker
from centre.mqtt.endpoint import broker_endpoint
from core.mqtt import BrokerEndpoint, Message, MqttClient, MqttConnectError, MqttError


class CentreMqtt:
    """One connection at a time; :meth:`connect` again after it dropped makes a fresh one (generation + 1)."""

    def __init__(self, broker: Broker, client_id: str, *, on_message: Callable[[Message], None],
                 on_lost: Callable[[str], None] | None = None, clean_start: bool = False, base_dir: str = "."):
        self.broker = broker
        self.client_id = client_id
        self.base_dir = base_dir
        v5 = broker.protocol == "5"
        self.client = MqttClient(
            BrokerEndpoint(broker.host, broker.port, protocol=broker.protocol), client_id=client_id,
            keepalive=broker.keepalive, clean_start=clean_start, manual_ack=True, receive_guard=False,
            session_expiry=broker.session_expiry if v5 else None, receive_maximum=broker.receive_maximum if v5 else None,
            max_inflight=64, on_message=on_message,
            on_lost=None if on_lost is None else lambda why: on_lost(str(why)))

    @property
    def connected(self) -> bool:
        return self.client.is_connected

    @property
    def generation(self) -> int:
        return self.client.connection

    @property
    def session_present(self) -> bool:
        return self.client.session_present

    async def connect(self, timeout: float = 10.0) -> None:
        """Raises MqttError (unreachable, refused, password file not 0600), OSError and ssl.SSLError (files)."""
        self.close()
        b = self.broker
        self.client.endpoint = broker_endpoint(b, self.client_id, self.base_dir)
        self.client.connect_timeout = timeout
        try:
            await self.client.connect()
        except MqttConnectError as exc:
            if exc.refused:
                raise MqttError(f"the broker refused the connection: {exc.rc}") from None
            raise MqttError(f"cannot connect to {b.host}:{b.port}: {exc.reason}") from None

    async def subscribe(self, topics: list[str]) -> None:
        """Subscribe at QoS 1; returns after SUBACK, raises MqttError for a refused topic."""
        await self.client.subscribe(*topics, qos=1)

    async def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """QoS 1; returns after PUBACK."""
        await self.client.publish(topic, payload, qos=1, retain=retain)

    def ack(self, msg: Message) -> bool:
        """PUBACK one message after its rows are committed; False when its connection is gone."""
        return self.client.ack(msg)

    def pause_reading(self) -> None:
        self.client.pause_reading()

    def resume_reading(self) -> None:
        self.client.resume_reading()

    async def disconnect(self) -> None:
        """A clean DISCONNECT (the session stays on the broker for session_expiry)."""
        await self.client.disconnect()

    def close(self) -> None:
        """Drop the socket at once, like kill -9 as far as the broker can tell (nothing more is acknowledged)."""
        self.client.close()
