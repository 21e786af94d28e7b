"""What the centre needs from the one client (core/mqtt): acks after commit, flow control, a lost-link callback.

Against a real mosquitto, MQTT 5 with a persistent session (clean start false, a
session expiry), as the centre's ingest connects.
"""

from __future__ import annotations

import asyncio

import pytest

from core.mqtt import BrokerEndpoint, Message, MqttClient
from tests.support import Mosquitto


def endpoint(port: int, **kw) -> BrokerEndpoint:
    return BrokerEndpoint("127.0.0.1", port, **kw)


def receiver(port: int, got: list[Message], **kw) -> MqttClient:
    return MqttClient(endpoint(port), client_id="centre-test", clean_start=False, session_expiry=600,
                      manual_ack=True, on_message=got.append, **kw)


async def until(cond, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.01)


async def publish(port: int, topic: str, n: int) -> None:
    async with MqttClient(endpoint(port)) as pub:
        for i in range(n):
            await pub.publish(topic, b"%d" % i)


async def test_an_unacknowledged_message_comes_again_after_a_reconnect_an_acknowledged_one_does_not(broker):
    got: list[Message] = []
    client = receiver(broker.port, got)
    await client.connect()
    await client.subscribe("t/#")
    await publish(broker.port, "t/x", 2)
    await until(lambda: len(got) == 2)
    assert [m.connection for m in got] == [1, 1] and all(m.mid for m in got)
    assert client.ack(got[0]) is True  # committed: PUBACK
    await asyncio.sleep(0.2)  # written
    client.close()  # dies like kill -9 before the second one was committed
    stale = got[1]
    got.clear()
    await client.connect()
    assert client.session_present and client.connection == 2
    await until(lambda: len(got) == 1)
    assert got[0].payload == b"1" and got[0].connection == 2
    assert client.ack(stale) is False, "a mid of an earlier connection means nothing to this one"
    assert client.ack(got[0]) is True
    await client.disconnect()
    got.clear()
    await client.connect()
    await asyncio.sleep(0.3)
    assert got == [], "everything was acknowledged: nothing comes again"
    await client.disconnect()


async def test_receive_maximum_bounds_what_is_in_flight_to_an_unacknowledging_receiver(broker):
    got: list[Message] = []
    client = receiver(broker.port, got, receive_maximum=3)
    async with client:
        await client.subscribe("t/#")
        await publish(broker.port, "t/x", 10)
        await until(lambda: len(got) == 3)
        await asyncio.sleep(0.3)
        assert len(got) == 3, "the broker holds the rest until we acknowledge"
        for msg in list(got):
            client.ack(msg)
        await until(lambda: len(got) > 3)  # acknowledged: the broker sends more


async def test_paused_reading_delivers_nothing_until_resumed(broker):
    got: list[Message] = []
    client = receiver(broker.port, got)
    async with client:
        await client.subscribe("t/#")
        client.pause_reading()
        await publish(broker.port, "t/x", 3)
        await asyncio.sleep(0.3)
        assert got == []
        client.resume_reading()
        await until(lambda: len(got) == 3)
        assert [m.payload for m in got] == [b"0", b"1", b"2"]
        for msg in got:
            client.ack(msg)


async def test_on_lost_hears_a_lost_link_but_not_our_own_disconnect(tmp_path):
    broker = Mosquitto(tmp_path).start()
    lost: list[str] = []
    client = MqttClient(endpoint(broker.port), on_lost=lambda why: lost.append(str(why)))
    try:
        await client.connect()
        await client.disconnect()
        assert lost == []
        await client.connect()
        await asyncio.to_thread(broker.stop)
        await until(lambda: lost, 10)
        assert len(lost) == 1 and "lost" in lost[0]
    finally:
        client.close()
        broker.stop()


async def test_manual_ack_options_are_checked():
    with pytest.raises(ValueError, match="receive maximum needs MQTT 5"):
        MqttClient(endpoint(1, protocol="3.1.1"), receive_maximum=10)
    with pytest.raises(ValueError, match="manual_ack=True"):
        MqttClient(endpoint(1)).ack(Message("t", b"", 1, False, mid=1, connection=0))


def test_client_id_and_keepalive_come_from_the_endpoint_unless_given():
    e = endpoint(1, client_id="canopy-centre-c1", keepalive=45)
    assert (MqttClient(e).client_id, MqttClient(e).keepalive) == ("canopy-centre-c1", 45)
    assert (MqttClient(e, client_id="other", keepalive=10).client_id, MqttClient(e, keepalive=10).keepalive) == ("other", 10)
    assert MqttClient(endpoint(1)).client_id.startswith("canopy-")
