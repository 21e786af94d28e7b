"""The lean PUBLISH decoder (core/mqtt/lean_publish.py): paho's fields, properties kept as bytes until asked.

Pure tests of ``decode_publish`` against paho's own decoder, then the client end to
end on a scripted broker: QoS 0 and 1, MQTT 5 properties read on demand, a
malformed PUBLISH ends the connection as paho's decoder would.
"""

from __future__ import annotations

import asyncio
import struct

import pytest
from paho.mqtt import _packet
from paho.mqtt.enums import MQTTProtocolVersion
from paho.mqtt.exception import MalformedPacket
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from core.mqtt import BrokerEndpoint, Message, MqttClient, MqttDisconnectedError
from core.mqtt.lean_publish import decode_publish
from tests.core.mqtt.test_packet_guard import ScriptedBroker, varint

TOPIC = b"canopy/v1/s/g/cmd"


def props_block(**values) -> bytes:
    props = Properties(PacketTypes.PUBLISH)
    for name, value in values.items():
        setattr(props, name, value)
    return props.pack()  # the property length first, then the properties


def body(qos: int, payload: bytes, props: bytes | None, mid: int = 7, topic: bytes = TOPIC) -> bytes:
    return struct.pack("!H", len(topic)) + topic + (struct.pack("!H", mid) if qos else b"") + (props or b"") + payload


def publish_packet(qos: int, payload: bytes, props: bytes | None, **kw) -> bytes:
    inner = body(qos, payload, props, **kw)
    return bytes([0x30 | (qos << 1)]) + varint(len(inner)) + inner


@pytest.mark.parametrize("qos", [0, 1])
@pytest.mark.parametrize("props", [b"\x00", None, "with"], ids=["v5-none", "v3", "v5-some"])
def test_decode_matches_paho(qos, props):
    if props == "with":
        props = props_block(ContentType="application/json", UserProperty=[("a", "1")], MessageExpiryInterval=30)
    mqtt5 = props is not None
    header = 0x30 | (qos << 1) | 0x01 | 0x08  # retain and dup set
    packet = body(qos, b'{"x": 1}', props)
    ours = decode_publish(header, packet, mqtt5)
    theirs = _packet.decode_publish(header, packet, MQTTProtocolVersion.MQTTv5 if mqtt5 else MQTTProtocolVersion.MQTTv311)
    assert (ours.topic, ours.payload, ours.qos, ours.mid, ours.retain, ours.dup) == (
        theirs.topic.decode(), theirs.payload, theirs.qos, theirs.mid, theirs.retain, theirs.dup)
    assert ours.raw_properties == props
    if mqtt5:
        lazy = Message("t", b"", qos, False, ours.raw_properties).properties
        assert lazy.pack() == theirs.properties.pack()


@pytest.mark.parametrize("packet, mqtt5", [
    (b"\x00", True),  # no room for the topic length
    (b"\x00\x09abc", True),  # topic longer than the packet
    (b"\x00\x00payload", False),  # empty topic in 3.1.1
    (struct.pack("!H", 3) + b"abc" + b"\x80\x80\x80\x80\x01", True),  # a five-byte property length
    (struct.pack("!H", 3) + b"abc" + b"\x05\x01", True),  # properties longer than the packet
])
def test_malformed_publish_raises_pahos_malformed_packet(packet, mqtt5):
    with pytest.raises(MalformedPacket):
        decode_publish(0x30, packet, mqtt5)


def test_a_packet_paho_assembled_itself_decodes_to_bytes():
    ours = decode_publish(0x30, bytearray(body(0, b"payload", b"\x00")), True)
    assert type(ours.payload) is bytes and ours.payload == b"payload" and type(ours.raw_properties) is bytes


def test_message_without_properties_has_none():
    assert Message("t", b"", 0, False).properties is None


# --------------------------------------------------------------------------- the client, end to end


async def connected(protocol: str, got: list[Message]) -> tuple[ScriptedBroker, MqttClient]:
    broker = ScriptedBroker(mqtt5=protocol == "5")
    port = await broker.start()
    client = MqttClient(BrokerEndpoint("127.0.0.1", port, protocol=protocol), on_message=got.append)
    await client.connect()
    await broker.connected.wait()
    return broker, client


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_client_gets_qos_0_and_1_and_acknowledges_qos_1(protocol):
    got: list[Message] = []
    broker, client = await connected(protocol, got)
    try:
        props = props_block(ContentType="text/plain") if protocol == "5" else None
        await broker.send(publish_packet(0, b"zero", props) + publish_packet(1, b"one", props, mid=0x1234))
        async with asyncio.timeout(5):
            while len(got) < 2 or b"\x40\x02\x12\x34" not in broker.received:  # PUBACK for mid 0x1234
                await asyncio.sleep(0.01)
        assert [(m.topic, m.payload, m.qos) for m in got] == [(TOPIC.decode(), b"zero", 0), (TOPIC.decode(), b"one", 1)]
        if protocol == "5":
            assert got[1].properties.ContentType == "text/plain"
        else:
            assert got[1].properties is None
        await client.disconnect()
    finally:
        broker.close()


async def test_a_malformed_publish_ends_the_connection():
    got: list[Message] = []
    broker, client = await connected("5", got)
    try:
        await broker.send(b"\x30\x06" + struct.pack("!H", 3) + b"abc\x05")  # properties overrun the packet
        async with asyncio.timeout(5):
            why = await client.wait_closed()
        assert isinstance(why, MqttDisconnectedError) and got == []
    finally:
        broker.close()
