"""Read the broker's stream in big chunks, and refuse an oversized MQTT packet from its fixed header.

Two jobs of the one socket wrapper paho reads from (``GuardedSocket``):

- **One ``recv`` per read event, not four per packet.**  paho 2.2 reads a packet
  with ``recv(1)`` for the type byte, ``recv(1)`` per remaining-length byte and
  ``recv(n)`` for the body: three or four system calls, and one event-loop turn,
  per packet.  Under a flood of small messages that was most of the receive cost
  (docs/performance.md, *Junk floods*).  The wrapper takes up to READ_SIZE bytes
  in one call and serves paho's small reads from that buffer; ``pending()`` tells
  the loop adapter that buffered packets wait, so it hands them all to paho in
  the same turn.
- **An oversized packet is refused before paho reads its body.**  paho reads
  every incoming packet whole before the application sees it (``_packet_read``
  appends with no size check), so a 10 MB publish would cost 10 MB however early
  it is rejected (docs/protocol.md, *Oversized packets are refused before they
  are read*).  The wrapper follows the packet boundaries of each chunk from the
  fixed headers alone (type byte + variable-length *remaining length*); when a
  header announces a packet bigger than the limit, paho gets the packets before
  it and then end-of-stream, which it takes as a lost connection.  The wrapper
  sends DISCONNECT with reason 0x95 (Packet too large; MQTT 5 only, 3.1.1 has
  no reason codes) and shuts the socket.  At most one chunk of that body is ever
  read.  The outgoing stream is followed the same way, so the DISCONNECT never
  lands in the middle of a half-written packet.

``GuardedPaho`` is the client with its socket wrapped: ``_create_socket`` is the
one place paho 2.2 (pinned in pyproject.toml) makes the socket it reads from, for
plain TCP, TLS and websockets alike.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode

from core.mqtt.lean_publish import LeanPaho
from core.protocol.limits import BATCH, KIB

# What a receiver of gateway messages takes by default: the largest batch (docs/protocol.md#limits)
# plus topic, properties and header.  The gateway's own uplink announces far less (limits.MAX_PACKET_SIZE).
RECEIVER_MAX_PACKET_SIZE = BATCH.max_bytes + 8 * KIB

# DISCONNECT, remaining length 2, reason 0x95 (Packet too large), no properties
DISCONNECT_TOO_LARGE = b"\xe0\x02\x95\x00"

READ_SIZE = 64 * KIB  # one recv: a few hundred small packets, and all a refused packet's body may cost


class FrameScanner:
    """Follows MQTT packet boundaries in a byte stream; reports the first packet over ``limit``.

    Only headers are looked at byte by byte; a body is skipped by arithmetic,
    so the cost is a few operations per packet, not per byte.  When ``feed``
    reports a packet, ``refused_at`` is the index, in that chunk, of the last
    byte of its header.
    """

    __slots__ = ("limit", "refused_at", "_body", "_header")

    def __init__(self, limit: int | None = None):
        self.limit = limit
        self.refused_at = -1
        self._body = 0  # bytes of the current packet's body still to come
        self._header = bytearray()  # type byte and remaining-length bytes read so far

    @property
    def at_boundary(self) -> bool:
        """Between two packets: nothing of the next one seen yet."""
        return not self._body and not self._header

    def feed(self, data: bytes | bytearray | memoryview) -> int | None:
        """Advance over ``data``; the total size of the first packet over the limit, else None."""
        i, n = 0, len(data)
        if self._body >= n:  # inside a body: nothing to look at
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
                self.refused_at = i - 1
                return total
            self._body = remaining  # (a fifth length byte is malformed: paho refuses the packet itself)
        return None


class GuardedSocket:
    """A socket read in chunks, whose reader never gets a packet bigger than ``limit``; the rest is the socket's.

    ``limit`` None: chunked reads only, every packet is passed on.
    """

    def __init__(self, sock, limit: int | None, *, mqtt5: bool, on_refused: Callable[[int], None]):
        self._sock = sock
        self._incoming = FrameScanner(limit)
        self._outgoing = FrameScanner()
        self._mqtt5 = mqtt5
        self._on_refused = on_refused
        self._tls_pending = getattr(sock, "pending", None)  # decrypted bytes a TLS socket holds
        self._buf = b""  # the last chunk read
        self._pos = 0  # what paho has taken of it
        self._end = 0  # what paho may take of it: all, or up to an oversized packet's last header byte
        self._oversized: int | None = None  # size of that packet: refused once paho reaches it
        self.refused: int | None = None  # size of the packet refused, once it happened

    def recv(self, bufsize: int) -> bytes:
        if self._pos == self._end and not self._fill():
            return b""  # end of stream, or refused: paho takes it as a lost connection
        pos = self._pos
        self._pos = end = min(self._end, pos + bufsize)
        return self._buf[pos:end]

    def _fill(self) -> bool:
        """Read the next chunk (raises BlockingIOError when there is none yet); False at end of stream or refusal."""
        if self._oversized is not None:
            self._refuse(self._oversized)
        if self.refused is not None:
            return False
        data = self._sock.recv(READ_SIZE)
        size = self._incoming.feed(data)
        self._buf, self._pos, self._end = data, 0, len(data)
        if size is not None:
            self._oversized, self._end = size, self._incoming.refused_at
            if not self._end:
                return self._fill()
        return bool(data)

    def take_packet(self) -> tuple[int, bytes] | None:
        """The next packet, if it lies whole in the buffer: (its first byte, what follows the remaining length).

        For a reader between two packets only; None when the packet is not all there, or its first byte is 0 (the
        reserved type, which paho would take for "no packet yet"): the reader then reads it with ``recv``, as paho
        does, and refuses it as paho does.
        """
        buf, pos, end = self._buf, self._pos, self._end
        length, shift, i = 0, 0, pos + 1
        while True:
            if i >= end or shift > 21:
                return None
            byte = buf[i]
            i += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        if i + length > end or not buf[pos]:
            return None
        self._pos = i + length
        return buf[pos], buf[i:self._pos]

    def send(self, data) -> int:
        sent = self._sock.send(data)
        self._outgoing.feed(memoryview(data)[:sent])
        return sent

    def pending(self) -> int:
        """What the reader should come back for without waiting on the selector.

        Buffered bytes, a refusal due (1), and the decrypted bytes a TLS socket holds.
        """
        if self.refused is not None:
            return 0
        waiting = self._end - self._pos or (self._oversized is not None)
        return waiting + (self._tls_pending() if self._tls_pending is not None else 0)

    def _refuse(self, size: int) -> None:
        self.refused, self._oversized, self._buf = size, None, b""
        try:
            if self._mqtt5 and self._outgoing.at_boundary:
                self._sock.send(DISCONNECT_TOO_LARGE)
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:  # includes ssl.SSLError and BlockingIOError: the link is being dropped anyway
            pass
        self._on_refused(size)

    def __getattr__(self, name: str):  # fileno, close, setsockopt, getpeercert, ...
        return getattr(self._sock, name)


class GuardedPaho(LeanPaho):
    """paho's client reading through a :class:`GuardedSocket` (``max_packet_size`` None: chunked reads only).

    A packet that lies whole in the socket's buffer skips paho's byte-wise read: ``_packet_read`` puts it in
    paho's ``_in_packet`` as read, and paho handles it from there, as any packet it has read itself.
    """

    def __init__(self, *args, max_packet_size: int | None, on_refused: Callable[[int], None], **kwargs):
        super().__init__(*args, **kwargs)
        self._canopy_max_packet = max_packet_size
        self._canopy_on_refused = on_refused

    def _create_socket(self):
        sock = super()._create_socket()
        return GuardedSocket(sock, self._canopy_max_packet, mqtt5=self.protocol == mqtt.MQTTv5,
                             on_refused=self._canopy_on_refused)

    def _packet_read(self) -> MQTTErrorCode:
        sock, state = self._sock, self._in_packet
        if isinstance(sock, GuardedSocket) and state["command"] == 0:
            whole = sock.take_packet()
            if whole is not None:
                state["command"], state["packet"] = whole
                state["remaining_length"], state["have_remaining"], state["to_process"] = len(whole[1]), 1, 0
        return super()._packet_read()
