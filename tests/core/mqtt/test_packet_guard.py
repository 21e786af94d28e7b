"""The receive guard (core/mqtt/packet_guard.py): an oversized packet is refused from its fixed header.

Pure tests of the header scanner, the socket wrapper on a socketpair, and the
asyncio client against a scripted broker that ignores the announced Maximum
Packet Size (a real mosquitto honours it in MQTT 5: test_receive_guard.py).
"""

from __future__ import annotations

import asyncio
import socket
import struct

import pytest

from core.mqtt import BrokerEndpoint, MqttClient, MqttConnectError
from core.mqtt.packet_guard import DISCONNECT_TOO_LARGE, FrameScanner, GuardedSocket


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def publish_header(body_len: int) -> bytes:
    return b"\x30" + varint(body_len)


def packet(body_len: int) -> bytes:
    return publish_header(body_len) + b"x" * body_len


# --------------------------------------------------------------------------- the header scanner


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 1000])
def test_scanner_follows_boundaries_across_any_read_sizes(chunk):
    stream = packet(0) + packet(127) + packet(128) + packet(16383) + packet(16384) + b"\xd0\x00"  # PINGRESP
    scanner = FrameScanner(limit=20_000)
    for i in range(0, len(stream), chunk):
        assert scanner.feed(stream[i:i + chunk]) is None
    assert scanner.at_boundary


@pytest.mark.parametrize("chunk", [1, 2, 5])
def test_scanner_reports_the_first_packet_over_the_limit_from_its_header_alone(chunk):
    stream = packet(10) + publish_header(10 * 1024 * 1024)  # the 10 MB body never needs to arrive
    scanner = FrameScanner(limit=1000)
    sizes = [scanner.feed(stream[i:i + chunk]) for i in range(0, len(stream), chunk)]
    found = [s for s in sizes if s is not None]
    assert found == [1 + 4 + 10 * 1024 * 1024]  # type byte + 4 length bytes + body


def test_scanner_at_the_limit_is_fine_one_byte_over_is_not():
    assert FrameScanner(limit=3 + 200).feed(publish_header(200)) is None  # 1 + 2 + 200 bytes
    assert FrameScanner(limit=3 + 199).feed(publish_header(200)) == 203


def test_scanner_without_a_limit_only_tracks_boundaries():
    scanner = FrameScanner()
    assert scanner.feed(publish_header(300) + b"x" * 100) is None
    assert not scanner.at_boundary
    scanner.feed(b"x" * 200)
    assert scanner.at_boundary


# --------------------------------------------------------------------------- the socket wrapper


def read_like_paho(sock) -> bytes:
    """One byte at a time (as paho reads a fixed header) until end-of-stream."""
    seen = b""
    while byte := sock.recv(1):
        seen += byte
    return seen


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


@pytest.mark.parametrize("mqtt5", [True, False])
def test_guarded_socket_refuses_reads_no_body_and_says_0x95_in_mqtt5(pair, mqtt5):
    mine, broker = pair
    refused: list[int] = []
    guarded = GuardedSocket(mine, 1000, mqtt5=mqtt5, on_refused=refused.append)
    broker.sendall(packet(5) + publish_header(50_000) + b"y" * 2000)
    assert guarded.recv(1) == b"\x30" and guarded.recv(1) == b"\x05" and guarded.recv(5) == b"xxxxx"
    seen = read_like_paho(guarded)  # the type byte, then the length byte by byte: its last byte ends the stream
    assert seen == publish_header(50_000)[:-1], "paho saw no byte of the body, nor the length's last byte"
    assert refused == [1 + 3 + 50_000] and guarded.refused == 50_004
    assert guarded.pending() == 0
    broker.settimeout(2)
    said = broker.recv(100)
    assert said == (DISCONNECT_TOO_LARGE if mqtt5 else b"")  # 3.1.1 has no reason codes: just closed


def test_guarded_socket_never_cuts_into_a_half_written_packet(pair):
    mine, broker = pair
    guarded = GuardedSocket(mine, 1000, mqtt5=True, on_refused=lambda size: None)
    half = packet(100)[:50]
    assert guarded.send(half) == 50  # paho wrote half a PUBLISH (a partial send)
    broker.sendall(publish_header(5000))
    assert read_like_paho(guarded) == publish_header(5000)[:-1]
    broker.settimeout(2)
    assert broker.recv(1000) == half, "a DISCONNECT inside a packet would corrupt the stream: only closed"


def test_guarded_socket_passes_everything_else_through(pair):
    mine, broker = pair
    guarded = GuardedSocket(mine, 1000, mqtt5=True, on_refused=lambda size: None)
    assert guarded.fileno() == mine.fileno()
    guarded.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    assert guarded.send(b"\xc0\x00") == 2 and broker.recv(2) == b"\xc0\x00"


# --------------------------------------------------------------------------- the client, against a broker that ignores the limit


class ScriptedBroker:
    """Accepts one MQTT 5 or 3.1.1 connection, answers CONNACK, then sends what the test gives it."""

    def __init__(self, mqtt5: bool):
        self.mqtt5 = mqtt5
        self.connect_packet = b""
        self.received = bytearray()  # what the client sent after CONNECT
        self.connected = asyncio.Event()
        self.closed = asyncio.Event()
        self._writer: asyncio.StreamWriter | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        head = await reader.readexactly(2)
        length, shift, byte = head[1] & 0x7F, 7, head[1]
        while byte & 0x80:
            byte = (await reader.readexactly(1))[0]
            length |= (byte & 0x7F) << shift
            shift += 7
        self.connect_packet = await reader.readexactly(length)
        writer.write(b"\x20\x03\x00\x00\x00" if self.mqtt5 else b"\x20\x02\x00\x00")  # CONNACK, accepted
        await writer.drain()
        self.connected.set()
        try:
            while data := await reader.read(4096):
                self.received += data
        except ConnectionError:
            pass
        self.closed.set()

    async def send(self, data: bytes) -> None:
        self._writer.write(data)
        try:
            await self._writer.drain()
        except ConnectionError:
            pass

    def close(self) -> None:
        self.server.close()


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_client_refuses_an_oversized_publish_counts_it_and_ends_the_connection(protocol):
    broker = ScriptedBroker(mqtt5=protocol == "5")
    port = await broker.start()
    try:
        client = MqttClient(BrokerEndpoint("127.0.0.1", port, protocol=protocol), max_packet_size=270336)
        await client.connect()
        await broker.connected.wait()
        if protocol == "5":  # Maximum Packet Size (0x27) announced in CONNECT's properties
            assert b"\x27" + struct.pack(">I", 270336) in broker.connect_packet
        await broker.send(publish_header(10 * 1024 * 1024) + b"\x00\x05canop" + b"z" * 65536)
        async with asyncio.timeout(5):
            why = await client.wait_closed()
            await broker.closed.wait()
        assert client.refused_too_large == 1
        assert "refused a packet of 10485765 bytes unread" in str(why) and "270336" in str(why)
        assert bytes(broker.received) == (DISCONNECT_TOO_LARGE if protocol == "5" else b"")
        await client.disconnect()
    finally:
        broker.close()


async def test_client_defaults_to_the_endpoints_protocol_and_refuses_a_3_1_1_session_expiry():
    assert MqttClient(BrokerEndpoint("h", 1)).protocol == "5"
    assert MqttClient(BrokerEndpoint("h", 1, protocol="3.1.1")).protocol == "3.1.1"
    assert MqttClient(BrokerEndpoint("h", 1, protocol="3.1.1"), protocol="5").protocol == "5"
    with pytest.raises(ValueError, match="session expiry needs MQTT 5"):
        MqttClient(BrokerEndpoint("h", 1, protocol="3.1.1"), session_expiry=3600)


async def test_a_connect_that_stop_abandons_returns_at_once():
    silent = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)  # accepts, never sends CONNACK
    port = silent.sockets[0].getsockname()[1]
    try:
        client = MqttClient(BrokerEndpoint("127.0.0.1", port), connect_timeout=30)
        connecting = asyncio.create_task(client.connect())
        await asyncio.sleep(0.3)
        await client.disconnect()
        with pytest.raises(MqttConnectError, match="disconnected by the client"):
            async with asyncio.timeout(2):
                await connecting
    finally:
        silent.close()


# --------------------------------------------------------------------------- chunked reads


class CountingSocket:
    """A socket that counts its recv calls."""

    def __init__(self, sock):
        self.sock = sock
        self.recvs = 0

    def recv(self, n: int) -> bytes:
        self.recvs += 1
        return self.sock.recv(n)

    def __getattr__(self, name):
        return getattr(self.sock, name)


def read_packet_like_paho(sock) -> bytes:
    """One packet as paho reads it: the type byte, the length byte by byte, then the body (in as many recvs as it takes)."""
    seen = sock.recv(1)
    length, shift = 0, 0
    while True:
        byte = sock.recv(1)
        seen += byte
        length |= (byte[0] & 0x7F) << shift
        shift += 7
        if not byte[0] & 0x80:
            break
    while length:
        data = sock.recv(length)
        seen += data
        length -= len(data)
    return seen


def test_one_recv_serves_many_packets_to_paho_like_reads(pair):
    mine, broker = pair
    counting = CountingSocket(mine)
    guarded = GuardedSocket(counting, 1000, mqtt5=True, on_refused=lambda size: None)
    packets = [packet(n) for n in (0, 5, 127, 300)]
    broker.sendall(b"".join(packets))
    assert [read_packet_like_paho(guarded) for _ in packets] == packets
    assert counting.recvs == 1 and guarded.pending() == 0


def test_take_packet_returns_whole_packets_only(pair):
    mine, broker = pair
    guarded = GuardedSocket(mine, 1000, mqtt5=True, on_refused=lambda size: None)
    broker.sendall(packet(3) + packet(200)[:50])
    assert guarded.take_packet() is None, "nothing read yet: the reader reads with recv, which fills the buffer"
    assert guarded.recv(1) == b"\x30"
    assert guarded.recv(4) == b"\x03xxx"
    assert guarded.pending() == 50
    assert guarded.take_packet() is None, "the second packet is not all there"
    assert guarded.recv(1) + guarded.recv(1) + guarded.recv(1) == packet(200)[:3]  # type, two length bytes
    broker.sendall(packet(200)[50:] + packet(4))
    assert guarded.recv(200) == packet(200)[3:50]  # what the buffer still had
    assert guarded.recv(153) == packet(200)[50:]
    assert guarded.take_packet() == (0x30, b"xxxx")
    assert guarded.pending() == 0
    broker.sendall(packet(1) + b"\x00\x02ab")  # then the reserved type 0: left to paho, which refuses it
    assert guarded.recv(1) + guarded.recv(1) + guarded.recv(1) == packet(1)
    assert guarded.take_packet() is None and guarded.recv(4) == b"\x00\x02ab"


def test_packets_before_an_oversized_one_in_the_same_chunk_are_delivered_first(pair):
    mine, broker = pair
    refused: list[int] = []
    guarded = GuardedSocket(mine, 1000, mqtt5=True, on_refused=refused.append)
    broker.sendall(packet(10) + packet(20) + publish_header(50_000) + b"y" * 3000)
    assert guarded.recv(1) + guarded.recv(1) + guarded.recv(10) == packet(10)
    assert guarded.take_packet() == (0x30, b"x" * 20)
    assert refused == [] and guarded.pending() > 0, "the refusal is due: the reader must come back for it"
    assert guarded.take_packet() is None
    assert read_like_paho(guarded) == publish_header(50_000)[:-1]
    assert refused == [50_004] and guarded.pending() == 0


async def test_a_burst_larger_than_one_loop_turn_is_delivered_whole_and_in_order():
    broker = ScriptedBroker(mqtt5=True)
    port = await broker.start()
    got = []
    try:
        client = MqttClient(BrokerEndpoint("127.0.0.1", port), on_message=got.append)
        await client.connect()
        await broker.connected.wait()
        n = 3000  # more than MAX_READS_PER_TURN, in a few 64 KiB chunks
        await broker.send(b"".join(b"\x30" + varint(len(body)) + body
                                   for body in (b"\x00\x01t\x00" + b"%d" % i for i in range(n))))
        async with asyncio.timeout(10):
            while len(got) < n:
                await asyncio.sleep(0.01)
        assert [m.payload for m in got] == [b"%d" % i for i in range(n)]
        await client.disconnect()
    finally:
        broker.close()
