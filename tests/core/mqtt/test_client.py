"""The one asyncio MQTT client (core/mqtt/client.py) against a real mosquitto."""

from __future__ import annotations

import asyncio

import pytest

from core.mqtt import BrokerEndpoint, MqttClient, MqttConnectError, MqttDisconnectedError, Will
from tests.support import Mosquitto, free_port, make_password_file


def endpoint(port: int, **kw) -> BrokerEndpoint:
    return BrokerEndpoint("127.0.0.1", port, **kw)


async def take(client: MqttClient, n: int, timeout: float = 5.0) -> list:
    got = []
    async with asyncio.timeout(timeout):
        async for msg in client.messages():
            got.append(msg)
            if len(got) == n:
                return got
    return got


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
async def test_subscribe_publish_and_read_messages_in_order(broker, protocol):
    async with MqttClient(endpoint(broker.port), protocol=protocol) as client:
        codes = await client.subscribe("t/a/#", "t/b")  # returns after SUBACK, with what was granted
        assert [c.is_failure for c in codes] == [False, False]
        for i in range(50):
            rc = await client.publish("t/a/x" if i % 2 else "t/b", b"%d" % i, qos=1)  # returns after PUBACK
            assert not rc.is_failure
        got = await take(client, 50)
        assert [m.payload for m in got] == [b"%d" % i for i in range(50)]
        assert got[1].topic == "t/a/x" and got[1].matches("t/a/+") and not got[0].matches("t/a/#")
        assert (got[0].properties is not None) == (protocol == "5")
    assert not client.is_connected


async def test_retained_message_and_a_clean_exit_ends_the_stream(broker):
    async with MqttClient(endpoint(broker.port)) as pub:
        await pub.publish("t/state", b"online", retain=True)
    client = MqttClient(endpoint(broker.port))
    async with client:
        await client.subscribe("t/state")
        (msg,) = await take(client, 1)
        assert msg.retain and msg.payload == b"online"
    assert [m async for m in client.messages()] == []  # ended by us: the iterator just stops


async def test_unreachable_broker_is_a_typed_error():
    with pytest.raises(MqttConnectError) as err:
        async with MqttClient(endpoint(free_port()), connect_timeout=3):
            pass
    assert not err.value.refused and not err.value.timed_out
    assert "connection refused" in err.value.reason


async def test_a_broker_that_never_answers_times_out():
    silent = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)  # accepts, never sends CONNACK
    port = silent.sockets[0].getsockname()[1]
    try:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(MqttConnectError) as err:
            await MqttClient(endpoint(port), connect_timeout=0.5).connect()
        assert err.value.timed_out and loop.time() - t0 < 3
    finally:
        silent.close()


async def test_wrong_password_is_refused_with_the_brokers_reason(tmp_path):
    broker = Mosquitto(tmp_path, password_file=make_password_file(tmp_path, "ops", "right")).start()
    try:
        with pytest.raises(MqttConnectError) as err:
            await MqttClient(endpoint(broker.port, username="ops", password="wrong")).connect()
        assert err.value.refused and "check broker.username and the password" in err.value.reason
        async with MqttClient(endpoint(broker.port, username="ops", password="right")) as client:
            await client.publish("t/x", b"1")
    finally:
        broker.stop()


async def test_an_exception_in_a_paho_callback_reaches_the_awaiting_caller(broker, monkeypatch):
    async with MqttClient(endpoint(broker.port)) as client:
        await client.subscribe("t/#")

        def broken(*args, **kw):
            raise RuntimeError("message handling failed")

        monkeypatch.setattr("core.mqtt.client.Message", broken)  # fails inside paho's on_message
        async with MqttClient(endpoint(broker.port)) as other:
            await other.publish("t/x", b"1")
        with pytest.raises(RuntimeError, match="message handling failed"):
            await take(client, 1)
        with pytest.raises(RuntimeError, match="message handling failed"):  # and every later call, not only the first
            await client.publish("t/x", b"2")


async def test_an_exception_while_paho_reads_fails_the_pending_publish(broker):
    async with MqttClient(endpoint(broker.port)) as client:
        def boom():
            raise ValueError("corrupt packet")

        client.paho.loop_read = boom  # what PahoOnLoop calls when the socket is readable
        with pytest.raises(ValueError, match="corrupt packet"):
            async with asyncio.timeout(5):
                await client.publish("t/x", b"1")  # the PUBACK can only be read by the failing reader


async def test_losing_the_broker_ends_the_stream_and_fails_waiters(tmp_path):
    broker = Mosquitto(tmp_path).start()
    try:
        async with MqttClient(endpoint(broker.port)) as client:
            await client.subscribe("t/#")
            await client.publish("t/x", b"before")
            await asyncio.to_thread(broker.stop)
            with pytest.raises(MqttDisconnectedError):
                async with asyncio.timeout(10):
                    async for msg in client.messages():  # what arrived first is still delivered
                        assert msg.payload == b"before"
            with pytest.raises(MqttDisconnectedError):
                await client.publish("t/x", b"after")
            broker.start()  # the same client connects again once its link is gone
            await client.connect()
            await client.publish("t/x", b"again")
    finally:
        broker.stop()


async def test_messages_nobody_reads_are_bounded_and_counted(broker):
    async with MqttClient(endpoint(broker.port), max_queued_messages=5) as client:
        await client.subscribe("t/#")
        for i in range(20):
            await client.publish("t/x", b"%d" % i)
        async with asyncio.timeout(5):
            while client.dropped < 15:
                await asyncio.sleep(0.01)
        got = await take(client, 5)
        assert client.dropped == 15 and [m.payload for m in got] == [b"%d" % i for i in range(15, 20)]


async def test_last_will_only_when_the_link_dies(broker):
    will = Will("t/status", b"gone", qos=1, retain=False)
    async with MqttClient(endpoint(broker.port)) as watcher:
        await watcher.subscribe("t/status")
        async with MqttClient(endpoint(broker.port), will=will):
            pass  # a clean DISCONNECT: no will
        dying = MqttClient(endpoint(broker.port), will=will, keepalive=5)
        await dying.connect()
        dying.paho.socket().close()  # the link dies without DISCONNECT
        (msg,) = await take(watcher, 1)
        assert msg.payload == b"gone"
        await dying.disconnect()


def test_bad_options_are_refused_at_once():
    with pytest.raises(ValueError, match="MQTT protocol"):
        MqttClient(endpoint(1883), protocol="4")  # type: ignore[arg-type]


async def test_many_in_flight_with_publish_nowait_and_on_published(broker):
    """What the uplink's pump needs: queue without awaiting each message, hear each PUBACK by mid."""
    acked: list[int] = []
    async with MqttClient(endpoint(broker.port), max_inflight=50, on_published=lambda mid, rc: acked.append(mid)) as client:
        mids = [client.publish_nowait("t/x", b"%d" % i) for i in range(200)]
        async with asyncio.timeout(5):
            while len(acked) < 200:
                await asyncio.sleep(0.01)
        assert sorted(acked) == sorted(mids)
        await client.unsubscribe("t/x")
        waiting = asyncio.create_task(client.wait_closed())
        await asyncio.sleep(0)
        assert not waiting.done()
    assert await waiting is None  # ended by us
