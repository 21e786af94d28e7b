"""A 10 MB publish to …/cmd through a mosquitto with no message_size_limit (issue 11, acceptance).

The uplink runs in this process; the RSS it may grow by is read from
/proc/self/statm.  The 10 MB are published from a child process, and this
process subscribes only to what the gateway publishes, so nothing here but the
uplink could read them.  MQTT 3.1.1: the broker sends the packet, the guard
refuses it from its header, the uplink reconnects and keeps delivering.  MQTT 5:
the broker honours the announced Maximum Packet Size and never sends it; and
through a proxy that hides the announcement from the broker, the guard says
DISCONNECT 0x95 and the next session starts clean, so the broker cannot hand
the same packet over again.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import socket
import struct
import subprocess
import sys

import orjson
import pytest

from core.mqtt import BrokerEndpoint, MqttClient
from core.mqtt.packet_guard import DISCONNECT_TOO_LARGE
from core.protocol.limits import MAX_PACKET_SIZE
from core.protocol.topics import Topics
from core.records import event_body
from gateway.config.broker import BrokerConfig
from gateway.outbox.store import Outbox
from gateway.uplink.uplink import Uplink
from tests.support import until

TOPICS = Topics("s", "g")
TEN_MB = 10 * 1024 * 1024

PUBLISH_SCRIPT = """
import sys, paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
port, topic, size = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="big-publisher")
c.connect("127.0.0.1", port)
c.loop_start()
c.publish(topic, b"{" + b" " * (size - 2) + b"}", qos=1).wait_for_publish(30)
c.disconnect()
c.loop_stop()
"""


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def publish_from_another_process(port: int, topic: str, size: int = TEN_MB) -> None:
    proc = await asyncio.to_thread(subprocess.run, [sys.executable, "-c", PUBLISH_SCRIPT, str(port), topic, str(size)],
                                   capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode()


class Watcher:
    """Collects what the gateway publishes on …/event and …/state (never …/cmd: that is the 10 MB)."""

    def __init__(self, port: int):
        self.messages: list[tuple[str, dict]] = []
        self.client = MqttClient(BrokerEndpoint("127.0.0.1", port), on_message=self._on_message)

    def _on_message(self, msg) -> None:
        self.messages.append((msg.topic, orjson.loads(msg.payload)))

    async def start(self) -> Watcher:
        await self.client.connect()
        await self.client.subscribe(TOPICS.event, TOPICS.state)
        return self

    def states(self) -> list[dict]:
        return [m for t, m in self.messages if t == TOPICS.state]

    def alarms(self) -> list[dict]:
        return [r for t, m in self.messages if t == TOPICS.event and m["lane"] == "alarm" for r in m["records"]]


@pytest.fixture
async def gateway(tmp_path):
    """An outbox and an uplink in this process (the uplink started by the test)."""
    made: list[tuple[Uplink, asyncio.Task | None, Outbox]] = []

    async def make(port: int, protocol: str) -> Uplink:
        outbox = Outbox(str(tmp_path / f"outbox-{len(made)}.sqlite"), commit_interval=0.05)
        await outbox.open()
        uplink = Uplink(BrokerConfig(host="127.0.0.1", port=port, protocol=protocol, backoff_initial=0.1, backoff_max=0.3),
                        TOPICS, outbox)
        outbox.on_commit.append(uplink.committed)
        uplink.subscribe(TOPICS.cmd, lambda topic, payload: None)
        task = asyncio.create_task(uplink.run())
        made.append((uplink, task, outbox))
        return uplink

    yield make
    for uplink, task, outbox in made:
        await uplink.stop()
        task.cancel()
        await outbox.close()


async def assert_still_delivering(uplink: Uplink, watcher: Watcher, n: int) -> None:
    await uplink.outbox.put("alarm", [event_body(1.0, "smoke", n=n)], wait_commit=True)
    await until(lambda: any(r.get("n") == n for r in watcher.alarms()), 15, what=f"alarm {n} after the refusal")


async def test_mqtt_3_1_1_a_10_mb_command_is_refused_unread_and_the_gateway_reconnects(broker, gateway):
    watcher = await Watcher(broker.port).start()
    uplink = await gateway(broker.port, "3.1.1")
    await until(uplink.online.is_set, what="online")
    await assert_still_delivering(uplink, watcher, 0)
    gc.collect()
    before = rss_bytes()
    for i in range(1, 4):  # three times: without the guard that is 30 MB or more
        await publish_from_another_process(broker.port, TOPICS.cmd)
        await until(lambda: uplink.client.refused_too_large == i, 15, what=f"refusal {i}")
        await until(lambda: uplink.online.is_set() and uplink.connects == i + 1, 15, what=f"reconnect {i}")
    grown = rss_bytes() - before
    assert grown < 2 * 1024 * 1024, f"RSS grew by {grown / 1e6:.1f} MB for three 10 MB packets"
    await assert_still_delivering(uplink, watcher, 1)
    state = await until(lambda: [s for s in watcher.states() if s["status"] == "online"
                                 and s["uplink"]["refused_too_large"] == 3], 10, what="the refusals in …/state")
    assert state[-1]["uplink"]["connects"] == 4
    await watcher.client.disconnect()


async def test_mqtt_5_the_broker_honours_the_announced_maximum_packet_size(broker, gateway):
    watcher = await Watcher(broker.port).start()
    uplink = await gateway(broker.port, "5")
    await until(uplink.online.is_set, what="online")
    gc.collect()
    before = rss_bytes()
    await publish_from_another_process(broker.port, TOPICS.cmd)
    await assert_still_delivering(uplink, watcher, 1)
    grown = rss_bytes() - before
    assert grown < 2 * 1024 * 1024, f"RSS grew by {grown / 1e6:.1f} MB"
    assert uplink.client.refused_too_large == 0 and uplink.connects == 1, "mosquitto dropped it for us: nothing to refuse"
    await watcher.client.disconnect()


class ForgetfulProxy:
    """Forwards TCP to the broker, but rewrites the CONNECT's Maximum Packet Size to the largest there is.

    So the broker sends what the gateway said it will not take, like a broker that ignores the property.
    It records what the client sent after CONNECT (to see the DISCONNECT 0x95).  Raw sockets, one task
    per direction: a failed write towards the client never stops the reading of what the client said.
    """

    ANNOUNCED = b"\x27" + struct.pack(">I", MAX_PACKET_SIZE)
    FORGOTTEN = b"\x27" + struct.pack(">I", 268_435_455)

    def __init__(self, broker_port: int):
        self.broker_port = broker_port
        self.from_client: list[bytearray] = []  # per connection
        self.rewrites = 0
        self._tasks: set[asyncio.Task] = set()
        self._sockets: list[socket.socket] = []

    async def start(self) -> int:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.setblocking(False)
        self._tasks.add(asyncio.create_task(self._accept()))
        return self.listener.getsockname()[1]

    async def _accept(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            client, _ = await loop.sock_accept(self.listener)
            upstream = socket.create_connection(("127.0.0.1", self.broker_port))
            for sock in (client, upstream):
                sock.setblocking(False)
                self._sockets.append(sock)
            said = bytearray()
            self.from_client.append(said)
            self._tasks.add(asyncio.create_task(self._pipe(client, upstream, said)))
            self._tasks.add(asyncio.create_task(self._pipe(upstream, client, None)))

    async def _pipe(self, src: socket.socket, dst: socket.socket, record: bytearray | None) -> None:
        loop = asyncio.get_running_loop()
        first = record is not None
        try:
            while data := await loop.sock_recv(src, 65536):
                if first:
                    data, n = data.replace(self.ANNOUNCED, self.FORGOTTEN), data.count(self.ANNOUNCED)
                    self.rewrites += n
                    first = False
                elif record is not None:
                    record.extend(data)
                await loop.sock_sendall(dst, data)  # waits while the other side does not read: bounded
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for sock in (self.listener, *self._sockets):
            sock.close()


async def test_mqtt_5_a_broker_that_ignores_the_limit_gets_disconnect_0x95_and_a_clean_session(broker, gateway):
    proxy = ForgetfulProxy(broker.port)
    port = await proxy.start()
    try:
        watcher = await Watcher(broker.port).start()
        uplink = await gateway(port, "5")
        await until(uplink.online.is_set, what="online")
        assert proxy.rewrites == 1
        gc.collect()
        before = rss_bytes()
        await publish_from_another_process(broker.port, TOPICS.cmd)
        await until(lambda: uplink.client.refused_too_large == 1, 15, what="the refusal")
        await until(lambda: uplink.online.is_set() and uplink.connects == 2, 15, what="the reconnect")
        assert DISCONNECT_TOO_LARGE in bytes(proxy.from_client[0]), "the broker was told why: DISCONNECT 0x95"
        await assert_still_delivering(uplink, watcher, 1)
        await asyncio.sleep(1.0)  # a resumed session would hand the same 10 MB over again, and again
        assert uplink.client.refused_too_large == 1 and uplink.connects == 2
        grown = rss_bytes() - before
        assert grown < 2 * 1024 * 1024, f"RSS grew by {grown / 1e6:.1f} MB"
        await watcher.client.disconnect()
    finally:
        proxy.close()
