"""Drive a paho-mqtt client from the asyncio event loop, without a network thread.

paho exposes socket callbacks for external event loops; we register the
socket with the loop's reader/writer so every paho callback runs on the loop
thread.  Only the blocking TCP/TLS connect runs in a worker thread, before
the socket is handed to the loop.  The socket paho reads from is a
``packet_guard.GuardedSocket`` (the asyncio client makes it one): it reads in
chunks, so after a read event the packets it holds are handed to paho in the
same turn, without waiting on the selector.

An exception raised while paho reads, writes or keeps the link alive goes to
``on_error`` when one is given (the asyncio client re-raises it to whoever
awaits), else to the loop's exception handler.

``pause_reading``/``resume_reading``: a receiver whose queue of uncommitted
messages is full (the centre's ingest) stops reading the socket, so a broker that
ignores Receive Maximum cannot grow that queue; keepalive and writes go on.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from collections.abc import Callable

import paho.mqtt.client as mqtt

MAX_READS_PER_TURN = 256  # paho reads (a packet each) per event-loop turn: a flood cannot hold the loop (~5 ms)


class PahoOnLoop:
    """Attach one paho client to one asyncio loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, client: mqtt.Client,
                 on_error: Callable[[BaseException], None] | None = None):
        self.loop = loop
        self.client = client
        self.on_error = on_error
        self._loop_thread = threading.get_ident()
        self._sock: socket.socket | None = None
        self._misc: asyncio.Task | None = None
        self._detached = False
        self._paused = False
        client.on_socket_open = self._on_open
        client.on_socket_close = self._on_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write

    def _call(self, fn, *args) -> None:
        if threading.get_ident() == self._loop_thread:
            fn(*args)
            return
        try:  # paho calls these from inside connect(), which runs in a worker thread
            self.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop has closed: a connect that finished after its caller gave up
            pass

    def _guarded(self, fn) -> None:
        """Run a paho loop step; its exception goes to ``on_error`` when there is one."""
        try:
            fn()
        except Exception as exc:
            if self.on_error is None:
                raise
            self.on_error(exc)

    def _on_open(self, client, userdata, sock) -> None:
        self._call(self._open, sock)

    def _open(self, sock) -> None:
        if self._detached:  # the connect finished after its caller gave up on it
            sock.close()
            return
        self._sock = sock
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        if not self._paused:
            self.loop.add_reader(sock, self._readable)
        self._misc = self.loop.create_task(self._misc_loop(), name="mqtt-misc")

    def _readable(self) -> None:
        self._guarded(self._read)

    def _read(self) -> None:
        """Hand paho what the socket has, and what a GuardedSocket or TLS holds that the selector cannot see.

        At most MAX_READS_PER_TURN packets in one loop turn; the rest on the next turn, after other work.
        """
        sock = self._sock
        if self._paused or sock is None:
            return
        client = self.client
        for _ in range(MAX_READS_PER_TURN):
            client.loop_read()
            if sock is not self._sock or self._paused or not _pending(sock):
                return
        self.loop.call_soon(self._readable)

    def _on_close(self, client, userdata, sock) -> None:
        self._call(self._close, sock)

    def _close(self, sock) -> None:
        try:
            self.loop.remove_reader(sock)
            self.loop.remove_writer(sock)
        except (ValueError, OSError):
            pass
        if self._misc:
            self._misc.cancel()
            self._misc = None
        if self._sock is sock:
            self._sock = None

    def _on_register_write(self, client, userdata, sock) -> None:
        self._call(self._add_writer, sock)

    def _add_writer(self, sock) -> None:
        if sock.fileno() != -1 and not self._detached:
            self.loop.add_writer(sock, self._guarded, self.client.loop_write)

    def _on_unregister_write(self, client, userdata, sock) -> None:
        self._call(self._remove_writer, sock)

    def _remove_writer(self, sock) -> None:
        try:
            self.loop.remove_writer(sock)
        except (ValueError, OSError):
            pass

    async def _misc_loop(self) -> None:
        # keepalive pings and timeouts
        while True:
            try:
                if self.client.loop_misc() != mqtt.MQTT_ERR_SUCCESS:
                    return
            except Exception as exc:
                if self.on_error is None:
                    raise
                self.on_error(exc)
                return
            await asyncio.sleep(1.0)

    def pause_reading(self) -> None:
        """Stop reading the socket (keepalive and writes go on) until :meth:`resume_reading`."""
        if not self._paused and self._sock is not None:
            self.loop.remove_reader(self._sock)
        self._paused = True

    def resume_reading(self) -> None:
        if self._paused and self._sock is not None and not self._detached:
            self.loop.add_reader(self._sock, self._readable)
            self.loop.call_soon(self._readable)  # bytes may already wait in a TLS buffer
        self._paused = False

    def detach(self) -> None:
        """Stop watching the socket; a socket that paho opens later is closed at once."""
        self._detached = True
        if self._sock is not None:
            self._close(self._sock)


def _pending(sock) -> int:
    """Bytes already decrypted inside a TLS socket (or its guard); 0 for plain TCP."""
    if isinstance(sock, ssl.SSLSocket) or hasattr(type(sock), "pending"):
        return sock.pending()
    return 0
