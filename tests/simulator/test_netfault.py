"""The fault proxy forwards, delays, throttles, swallows, resets and refuses, against an echo server and a real mosquitto."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from simulator.netfault import CHUNK, MAX_BUFFERED, FaultProxy, FaultProxyThread, parse_args
from tests.support import Subscriber, wait_until

ROOT = Path(__file__).resolve().parents[2]


class Echo:
    """Echoes everything back; counts what actually reached it."""

    def __init__(self):
        self.received = 0
        self.server: asyncio.AbstractServer | None = None
        self.port = 0

    async def start(self) -> "Echo":
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _handle(self, reader, writer) -> None:
        try:
            while data := await reader.read(65536):
                self.received += len(data)
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()


@pytest.fixture
async def echo():
    e = await Echo().start()
    yield e
    e.server.close()


@pytest.fixture
async def proxy(echo):
    p = FaultProxy("127.0.0.1", echo.port)
    await p.start()
    yield p
    await p.stop()


async def connect(port: int):
    return await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 2)


async def roundtrip(reader, writer, payload: bytes, timeout: float = 5.0) -> tuple[bytes, float]:
    """Send ``payload`` and read as many bytes back (concurrently, so large payloads don't deadlock)."""
    t0 = time.monotonic()

    async def send():
        writer.write(payload)
        await writer.drain()

    sender = asyncio.ensure_future(send())
    data = await asyncio.wait_for(reader.readexactly(len(payload)), timeout)
    await sender
    return data, time.monotonic() - t0


async def dead(reader, timeout: float = 1.0) -> bool:
    """True if the connection ends (EOF or reset) within ``timeout``."""
    try:
        return await asyncio.wait_for(reader.read(100), timeout) == b""
    except ConnectionError:
        return True


# -- echo server -------------------------------------------------------------------

def test_refuses_non_loopback():
    with pytest.raises(ValueError, match="loopback"):
        FaultProxy("10.1.2.3", 1883)
    with pytest.raises(ValueError, match="loopback"):
        FaultProxy("127.0.0.1", 1883, listen_host="0.0.0.0")
    with pytest.raises(ValueError, match="loopback"):
        FaultProxy("broker.example.com", 1883)
    FaultProxy("::1", 1883, listen_host="localhost")  # loopback in any spelling is fine
    with pytest.raises(SystemExit):
        parse_args(["--target", "192.168.1.10:1883"])
    with pytest.raises(SystemExit):
        parse_args(["--target", "127.0.0.1:1883", "--listen", "0.0.0.0:18830"])


async def test_passthrough_roundtrips_bytes(proxy, echo):
    r, w = await connect(proxy.port)
    payload = os.urandom(300_000)
    data, _ = await roundtrip(r, w, payload)
    assert data == payload
    s = proxy.stats
    assert (s["mode"], s["connections"], s["bytes_up"], s["bytes_down"], s["dropped_bytes"]) == \
        ("passthrough", 1, len(payload), len(payload), 0)
    # a half-close travels through and the connection winds down on both sides
    w.write_eof()
    assert await asyncio.wait_for(r.read(), 2) == b""
    w.close()
    await asyncio.wait_for(_until(lambda: proxy.stats["connections"] == 0), 2)


async def _until(cond, interval: float = 0.01):
    while not cond():
        await asyncio.sleep(interval)


async def test_delay_applies_to_open_connections_and_keeps_order(proxy):
    r, w = await connect(proxy.port)
    _, fast = await roundtrip(r, w, b"x")
    proxy.delay(0.2)
    data, slow = await roundtrip(r, w, b"y")
    assert data == b"y"
    assert slow >= 0.4 - 0.01, slow  # 0.2 s each way
    # chunks sent 20 ms apart come back complete and in order
    for i in range(5):
        w.write(b"%d;" % i)
        await w.drain()
        await asyncio.sleep(0.02)
    assert await asyncio.wait_for(r.readexactly(10), 3) == b"0;1;2;3;4;"
    proxy.passthrough()
    _, again = await roundtrip(r, w, b"z")
    assert again < 0.2, (fast, again)
    w.close()


async def test_throttle_caps_throughput(proxy):
    r, w = await connect(proxy.port)
    proxy.throttle(100_000)
    payload = os.urandom(200_000)
    data, elapsed = await roundtrip(r, w, payload, timeout=8)
    assert data == payload
    assert elapsed >= 1.6, elapsed
    assert proxy.stats["throttle"] == 100_000
    w.close()


async def test_memory_is_bounded_under_backpressure(proxy):
    r, w = await connect(proxy.port)
    proxy.throttle(1000)
    block = b"\0" * (1 << 20)
    sent = 0

    async def flood():
        nonlocal sent
        for _ in range(64):
            w.write(block)
            await w.drain()
            sent += len(block)

    task = asyncio.ensure_future(flood())
    await asyncio.sleep(0.7)
    s = proxy.stats
    assert s["buffered_up"] <= MAX_BUFFERED + CHUNK, s
    assert not task.done() and sent < 64 * len(block)  # the sender is held back by TCP
    proxy.reset()
    with pytest.raises(ConnectionError):
        await asyncio.wait_for(task, 2)
    w.close()


async def test_blackhole_holds_everything_then_delivers_in_order(proxy, echo):
    r1, w1 = await connect(proxy.port)
    assert (await roundtrip(r1, w1, b"ping"))[0] == b"ping"
    before = echo.received
    proxy.blackhole()
    w1.write(b"hello")
    await w1.drain()
    # new connections are accepted, and held as well
    r2, w2 = await connect(proxy.port)
    w2.write(b"world")
    await w2.drain()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(r1.read(100), 0.3)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(r2.read(100), 0.05)
    assert echo.received == before
    s = proxy.stats
    assert s["mode"] == "blackhole" and s["dropped_bytes"] == 0 and s["connections"] == 2
    proxy.passthrough()
    # like TCP after an outage: what was sent arrives, in order, nothing lost or corrupted
    assert await asyncio.wait_for(r1.readexactly(5), 2) == b"hello"
    assert await asyncio.wait_for(r2.readexactly(5), 2) == b"world"
    assert (await roundtrip(r1, w1, b"again"))[0] == b"again"
    for w in (w1, w2):
        w.close()


async def test_blackhole_holds_bytes_already_queued(proxy, echo):
    r, w = await connect(proxy.port)
    proxy.delay(0.3)
    w.write(b"abc")
    await w.drain()
    await asyncio.sleep(0.1)
    proxy.blackhole()  # the queued bytes wait in the hole too
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(r.read(100), 0.4)
    assert echo.received == 0 and proxy.stats["dropped_bytes"] == 0
    proxy.passthrough()
    assert await asyncio.wait_for(r.readexactly(3), 2) == b"abc"
    w.close()


async def test_reset_aborts_connections_then_passes(proxy):
    r, w = await connect(proxy.port)
    assert (await roundtrip(r, w, b"ping"))[0] == b"ping"
    proxy.delay(5)
    t0 = time.monotonic()
    proxy.reset()
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(r.read(100), 1)
    assert time.monotonic() - t0 < 0.5
    w.close()
    assert proxy.stats["mode"] == "passthrough"
    r2, w2 = await connect(proxy.port)
    assert (await roundtrip(r2, w2, b"pong"))[0] == b"pong"
    w2.close()


async def test_refuse_closes_new_connections(proxy):
    proxy.refuse()
    try:
        r, w = await connect(proxy.port)
    except ConnectionError:
        pass
    else:
        assert await dead(r)
        w.close()
    assert proxy.stats["refused"] >= 1 and proxy.stats["connections"] == 0
    proxy.refuse(False)
    r, w = await connect(proxy.port)
    assert (await roundtrip(r, w, b"ok"))[0] == b"ok"
    w.close()


async def test_unreachable_target_resets_client(echo):
    port = echo.port
    echo.server.close()
    await echo.server.wait_closed()
    async with FaultProxy("127.0.0.1", port) as p:
        r, w = await connect(p.port)
        assert await dead(r)
        w.close()


# -- real mosquitto, via the thread wrapper -------------------------------------------

class Pub:
    """A paho publisher that reconnects quickly and counts connects/disconnects."""

    def __init__(self, port: int):
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"netfault-pub-{time.monotonic_ns()}")
        self.client.reconnect_delay_set(0.1, 0.3)
        self.connects = 0
        self.disconnects = 0
        self.lock = threading.Lock()
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.connect_async("127.0.0.1", port, keepalive=5)
        self.client.loop_start()

    def _on_connect(self, c, u, flags, rc, props):
        if not rc.is_failure:
            with self.lock:
                self.connects += 1

    def _on_disconnect(self, c, u, flags, rc, props):
        with self.lock:
            self.disconnects += 1

    def publish(self, n: int, qos: int = 1):
        return self.client.publish("canopy/v1/netfault/test", orjson.dumps({"n": n}), qos=qos)

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def fault(broker):
    p = FaultProxyThread("127.0.0.1", broker.port)
    yield p
    p.stop()


@pytest.fixture
def sub(broker):
    s = Subscriber(broker.port)
    yield s
    s.client.disconnect()  # first, so the network thread ends at once (close() alone waits out a 1 s select)
    s.close()


@pytest.fixture
def pubs():
    made = []
    yield lambda port: made.append(Pub(port)) or made[-1]
    for p in made:
        p.close()


def got(sub: Subscriber, n: int) -> bool:
    return any(m["n"] == n for m in sub.of("test"))


def test_mqtt_passthrough_and_delay(fault, sub, pubs):
    pub = pubs(fault.port)
    wait_until(lambda: pub.connects == 1, 5, what="connect through the proxy")
    pub.publish(1).wait_for_publish(5)
    wait_until(lambda: got(sub, 1), 5, what="message 1")
    fault.delay(0.15)
    t0 = time.monotonic()
    pub.publish(2).wait_for_publish(5)  # PUBLISH up + PUBACK down
    assert time.monotonic() - t0 >= 0.3 - 0.01
    wait_until(lambda: got(sub, 2), 5, what="message 2")
    s = fault.stats
    assert s["mode"] == "delay" and s["bytes_up"] > 0 and s["bytes_down"] > 0


def test_mqtt_reset_then_paho_reconnects_and_publishes(fault, sub, pubs):
    pub = pubs(fault.port)
    wait_until(lambda: pub.connects == 1, 5, what="connect through the proxy")
    fault.reset()
    wait_until(lambda: pub.disconnects >= 1, 2, what="paho to see the reset")
    wait_until(lambda: pub.connects >= 2, 5, what="paho to reconnect")
    pub.publish(3).wait_for_publish(5)
    wait_until(lambda: got(sub, 3), 5, what="message after reconnect")
    assert fault.stats["connections"] == 1


def test_mqtt_blackhole_then_passthrough(fault, sub, pubs):
    pub = pubs(fault.port)
    wait_until(lambda: pub.connects == 1, 5, what="connect through the proxy")
    fault.blackhole()
    pub.publish(4, qos=1)
    time.sleep(0.4)
    assert not got(sub, 4), "nothing crosses a blackhole"
    fault.passthrough()
    wait_until(lambda: got(sub, 4), 5, what="the held message, once the hole closes")
    fresh = pubs(fault.port)
    wait_until(lambda: fresh.connects == 1, 5, what="a new connection after the blackhole")
    fresh.publish(5).wait_for_publish(5)
    wait_until(lambda: got(sub, 5), 5, what="message after the blackhole")


def test_mqtt_refuse(fault, sub, pubs):
    fault.refuse(True)
    pub = pubs(fault.port)
    wait_until(lambda: fault.stats["refused"] >= 2, 5, what="paho to be refused (and retry)")
    assert pub.connects == 0
    fault.refuse(False)
    wait_until(lambda: pub.connects == 1, 5, what="paho to connect once the proxy accepts")
    pub.publish(6).wait_for_publish(5)
    wait_until(lambda: got(sub, 6), 5, what="message after refuse off")


# -- CLI --------------------------------------------------------------------------------

def test_cli(broker):
    proc = subprocess.Popen([sys.executable, "-m", "simulator.netfault", "--target", f"127.0.0.1:{broker.port}",
                             "--listen", "127.0.0.1:0"], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, bufsize=1)
    try:
        hello = json.loads(proc.stdout.readline())
        assert hello["port"] > 0 and hello["target"] == f"127.0.0.1:{broker.port}"

        def say(line: str) -> str:
            proc.stdin.write(line + "\n")
            proc.stdin.flush()
            return proc.stdout.readline().strip()

        assert say("delay 0.2") == "ok mode=delay refusing=off"
        stats = json.loads(say("stats"))
        assert stats["mode"] == "delay" and stats["delay"] == 0.2
        assert say("throttle 10000") == "ok mode=throttle refusing=off"
        assert say("refuse on") == "ok mode=throttle refusing=on"
        assert say("blackhole").startswith("ok mode=blackhole")
        assert say("reset") == "ok mode=passthrough refusing=on"
        assert say("refuse off").endswith("refusing=off")
        assert say("pass") == "ok mode=passthrough refusing=off"
        assert say("delay -1").startswith("error:")
        assert say("bogus").startswith("error: unknown command")
        proc.stdin.write("quit\n")
        proc.stdin.flush()
        assert proc.wait(5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
