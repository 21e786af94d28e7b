"""How a paho client is made and connected: login, TLS, last will, limits, the CONNECT properties.

Apart from the asyncio client so that what goes into a connection reads in one
place, while the client keeps what happens on it.  Protocol-specific choices:
MQTT 3.1.1 has a clean-session flag and no properties; MQTT 5 has clean start,
and announces the Maximum Packet Size (a broker then drops what is bigger for
us), the session expiry and the Receive Maximum.
"""

from __future__ import annotations

from collections.abc import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from core.mqtt.endpoint import PAHO_PROTOCOL, BrokerEndpoint, Protocol
from core.mqtt.messages import Will
from core.mqtt.packet_guard import GuardedPaho


def new_paho(endpoint: BrokerEndpoint, *, client_id: str, protocol: Protocol, clean_start: bool, manual_ack: bool,
             max_inflight: int, connect_timeout: float, will: Will | None,
             guard: tuple[int | None, Callable[[int], None]]) -> mqtt.Client:
    """A paho client ready to connect, reading through the packet guard: ``guard`` is (max packet size, on_refused).

    A max packet size of None passes every packet on (the guard then only reads in chunks).
    """
    client = GuardedPaho(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=PAHO_PROTOCOL[protocol],
                         clean_session=None if protocol == "5" else clean_start, manual_ack=manual_ack,
                         max_packet_size=guard[0], on_refused=guard[1])
    client.connect_timeout = connect_timeout  # bounds the worker thread, even after its caller gave up on it
    client.max_inflight_messages_set(max_inflight)
    if endpoint.username:
        client.username_pw_set(endpoint.username, endpoint.password)
    if endpoint.tls is not None:
        client.tls_set_context(endpoint.tls)
    if will is not None:
        client.will_set(will.topic, will.payload, will.qos, will.retain)
    return client


def connect_blocking(client: mqtt.Client, endpoint: BrokerEndpoint, *, protocol: Protocol, keepalive: int,
                     clean_start: bool, max_packet_size: int, session_expiry: int | None,
                     receive_maximum: int | None) -> None:
    """TCP (and TLS) connect plus CONNECT queued: blocks, so it runs in a worker thread."""
    if protocol != "5":
        client.connect(endpoint.host, endpoint.port, keepalive)
        return
    props = Properties(PacketTypes.CONNECT)
    props.MaximumPacketSize = max_packet_size
    if session_expiry:
        props.SessionExpiryInterval = session_expiry
    if receive_maximum:
        props.ReceiveMaximum = receive_maximum
    client.connect(endpoint.host, endpoint.port, keepalive, clean_start=clean_start, properties=props)
