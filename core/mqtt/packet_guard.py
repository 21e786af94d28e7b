"""Refuse an oversized MQTT packet from its fixed header, before a byte of its body is read.

paho-mqtt 2.2 reads every incoming packet whole before the application sees it
(``_packet_read`` appends with no size check), so a 10 MB publish costs 10 MB
however early it is rejected (docs/protocol.md, *Oversized packets are refused
before they are read*).  ``GuardedSocket`` sits between paho and the socket.  It
follows the packet boundaries of the incoming stream from the fixed headers alone
(type byte + variable-length *remaining length*), whatever size of reads paho
makes, and when a header announces a packet bigger than the limit it reads no
further: it sends DISCONNECT with reason 0x95 (Packet too large; MQTT 5 only,
3.1.1 has no reason codes), shuts the socket and answers end-of-stream, which
paho takes as a lost connection.  It follows the outgoing stream the same way,
so that DISCONNECT never lands in the middle of a half-written packet.

``GuardedPaho`` is paho's client with its socket wrapped: ``_create_socket`` is
the one place paho 2.2 (pinned in pyproject.toml) makes the socket it reads
from, for plain TCP, TLS and websockets alike.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

import paho.mqtt.client as mqtt

from core.protocol.limits import BATCH, KIB

# What a receiver of gateway messages takes by default: the largest batch (docs/protocol.md#limits)
# plus topic, properties and header.  The gateway's own uplink announces far less (limits.MAX_PACKET_SIZE).
RECEIVER_MAX_PACKET_SIZE = BATCH.max_bytes + 8 * KIB

# DISCONNECT, remaining length 2, reason 0x95 (Packet too large), no properties
DISCONNECT_TOO_LARGE = b"\xe0\x02\x95\x00"


class FrameScanner:
    """Follows MQTT packet boundaries in a byte stream; reports the first packet over ``limit``.

    Only headers are looked at byte by byte; a body is skipped by arithmetic,
    so the cost is a few operations per packet, not per byte.
    """

    __slots__ = ("limit", "_body", "_header")

    def __init__(self, limit: int | None = None):
        self.limit = limit
        self._body = 0  # bytes of the current packet's body still to come
        self._header = bytearray()  # type byte and remaining-length bytes read so far

    @property
    def at_boundary(self) -> bool:
        """Between two packets: nothing of the next one seen yet."""
        return not self._body and not self._header

    def feed(self, data: bytes | bytearray | memoryview) -> int | None:
        """Advance over ``data``; the total size of the first packet over the limit, else None."""
        i, n = 0, len(data)
        if self._body >= n:  # inside a body (how paho reads most bytes): nothing to look at
            self._body -= n
            return None
        while i < n:
            if self._body:
                step = min(self._body, n - i)
                self._body -= step
                i += step
                continue
            byte = data[i]
            i += 1
            header = self._header
            header.append(byte)
            if len(header) == 1 or (byte & 0x80 and len(header) < 5):
                continue  # the type byte, or a remaining-length byte with more to come
            remaining = sum((b & 0x7F) << (7 * k) for k, b in enumerate(header[1:]))
            total = len(header) + remaining
            header.clear()
            if self.limit is not None and total > self.limit:
                return total
            self._body = remaining  # (a fifth length byte is malformed: paho refuses the packet itself)
        return None


class GuardedSocket:
    """A socket whose reader never gets a packet bigger than ``limit``; everything else is the socket's."""

    def __init__(self, sock, limit: int, *, mqtt5: bool, on_refused: Callable[[int], None]):
        self._sock = sock
        self._incoming = FrameScanner(limit)
        self._outgoing = FrameScanner()
        self._mqtt5 = mqtt5
        self._on_refused = on_refused
        self.refused: int | None = None  # size of the packet refused, once it happened

    def recv(self, bufsize: int) -> bytes:
        if self.refused is not None:
            return b""
        data = self._sock.recv(bufsize)
        size = self._incoming.feed(data)
        if size is None:
            return data
        self._refuse(size)
        return b""  # paho: connection lost

    def send(self, data) -> int:
        sent = self._sock.send(data)
        self._outgoing.feed(memoryview(data)[:sent])
        return sent

    def pending(self) -> int:
        """Decrypted bytes a TLS socket holds that the selector cannot see (0 for plain TCP, or once refused)."""
        pending = getattr(self._sock, "pending", None)
        return pending() if pending is not None and self.refused is None else 0

    def _refuse(self, size: int) -> None:
        self.refused = size
        try:
            if self._mqtt5 and self._outgoing.at_boundary:
                self._sock.send(DISCONNECT_TOO_LARGE)
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:  # includes ssl.SSLError and BlockingIOError: the link is being dropped anyway
            pass
        self._on_refused(size)

    def __getattr__(self, name: str):  # fileno, close, setsockopt, getpeercert, ...
        return getattr(self._sock, name)


class GuardedPaho(mqtt.Client):
    """paho's client reading through a :class:`GuardedSocket` of ``max_packet_size`` bytes."""

    def __init__(self, *args, max_packet_size: int, on_refused: Callable[[int], None], **kwargs):
        super().__init__(*args, **kwargs)
        self._canopy_max_packet = max_packet_size
        self._canopy_on_refused = on_refused

    def _create_socket(self):
        sock = super()._create_socket()
        return GuardedSocket(sock, self._canopy_max_packet, mqtt5=self.protocol == mqtt.MQTTv5,
                             on_refused=self._canopy_on_refused)
