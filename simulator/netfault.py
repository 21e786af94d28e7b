"""A loopback TCP fault proxy: put it between the gateway and the MQTT broker.

    client (gateway) --> FaultProxy(listen) --> target (broker)

Faults (switchable at any time; they apply to open connections at once):

* ``passthrough()``   forward bytes as they come
* ``delay(s)``        every chunk is forwarded ``s`` seconds after it arrived (each direction)
* ``throttle(bps)``   token bucket of ``bps`` bytes/s per direction and connection
* ``blackhole()``     nothing gets through, both ways, on open and new connections;
                      bytes are held (TCP backpressure), as when packets vanish and TCP
                      retransmits: when the hole closes they arrive in order, unless the
                      endpoints' own timeouts killed the connection meanwhile.  A proxy
                      that dropped bytes and resumed would corrupt the stream, which no
                      real network does to a live TCP connection.
* ``reset()``         every open connection is aborted with RST (SO_LINGER 0) on both
                      sides, then passthrough for new connections
* ``refuse(on)``      new connections are accepted by the kernel and closed at once with RST

Order is always preserved and memory is bounded: reads are at most 64 KiB and a
direction stops reading while more than 1 MiB is queued in it, so TCP
backpressure reaches the sender.  A half-close (EOF) is forwarded in order; it is
held (not lost) while blackholed.

For tests and benches only: the proxy refuses non-loopback listen or target
addresses.  ``FaultProxyThread`` runs one on its own loop for synchronous tests;
``python -m simulator.netfault`` is a small CLI driven by stdin commands.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import signal
import socket
import struct
import sys
import threading
from collections import deque
from typing import Any

CHUNK = 64 * 1024          # max bytes per read
MAX_BUFFERED = 1024 * 1024  # per direction: stop reading above this (delay/throttle queues)
CONNECT_TIMEOUT = 5.0
MODES = ("passthrough", "delay", "throttle", "blackhole")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _rst(writer: asyncio.StreamWriter | None) -> None:
    """Abort a stream so the peer sees RST (SO_LINGER on, 0 s)."""
    if writer is None:
        return
    transport = writer.transport
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


class _Pipe:
    """One direction of one connection: a reader task feeding a FIFO, a writer task draining it."""

    def __init__(self, proxy: FaultProxy, src: asyncio.StreamReader, dst: asyncio.StreamWriter, up: bool):
        self.proxy = proxy
        self.src = src
        self.dst = dst
        self.up = up
        self.queue: deque[tuple[float, bytes | None]] = deque()  # (arrival time, data); None = EOF
        self.buffered = 0
        self.wake = asyncio.Event()   # writer: queue or mode changed
        self.space = asyncio.Event()  # reader: buffered dropped below the limit
        self.space.set()
        self.tokens = 0.0
        self.token_time = 0.0
        self.bucket_gen = -1

    def poke(self) -> None:
        self.wake.set()

    def _consumed(self, n: int) -> None:
        self.buffered -= n
        if self.buffered < MAX_BUFFERED:
            self.space.set()

    async def _wait(self, timeout: float | None) -> None:
        self.wake.clear()
        if timeout is None:
            await self.wake.wait()
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wake.wait(), timeout)

    async def read_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while self.buffered >= MAX_BUFFERED:
                self.space.clear()
                await self.space.wait()
            data = await self.src.read(CHUNK)
            now = loop.time()
            if not data:
                self.queue.append((now, None))
                self.poke()
                return
            self.queue.append((now, data))
            self.buffered += len(data)
            self.poke()

    def _grant(self, want: int) -> tuple[int, float]:
        """Token bucket: (bytes allowed now, 0) or (0, seconds to wait)."""
        proxy = self.proxy
        rate = proxy._rate
        burst = max(1, min(CHUNK, rate // 20))
        now = asyncio.get_running_loop().time()
        if self.bucket_gen != proxy._generation:  # a new throttle setting starts with a full bucket
            self.bucket_gen = proxy._generation
            self.tokens, self.token_time = float(burst), now
        self.tokens = min(float(burst), self.tokens + (now - self.token_time) * rate)
        self.token_time = now
        n = min(want, burst)
        if self.tokens >= n:
            self.tokens -= n
            return n, 0.0
        return 0, (n - self.tokens) / rate

    async def write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        proxy = self.proxy
        while True:
            if not self.queue:
                await self._wait(None)
                continue
            arrived, data = self.queue[0]
            mode = proxy._mode
            if mode == "blackhole":
                # Packets vanish, TCP retransmits: nothing is delivered while the hole
                # lasts, then everything arrives in order (or the connection dies of
                # its own timeouts).  Bytes are held, never dropped from a live stream:
                # real TCP cannot lose bytes in the middle of a connection.
                await self._wait(None)
                continue
            if mode == "delay":
                wait = arrived + proxy._delay - loop.time()
                if wait > 0:
                    await self._wait(wait)
                    continue
            if data is None:
                self.queue.popleft()
                if self.dst.can_write_eof():
                    self.dst.write_eof()
                return
            n = len(data)
            if mode == "throttle":
                n, wait = self._grant(n)
                if not n:
                    await self._wait(wait)
                    continue
            if n < len(data):
                self.queue[0] = (arrived, data[n:])
                data = data[:n]
            else:
                self.queue.popleft()
            self._consumed(n)
            self.dst.write(data)
            if self.up:
                proxy._bytes_up += n
            else:
                proxy._bytes_down += n
            await self.dst.drain()


class _Conn:
    def __init__(self, client: asyncio.StreamWriter):
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.pipes: list[_Pipe] = []
        self.tasks: list[asyncio.Task] = []
        self.closed = False

    def abort(self, proxy: FaultProxy) -> None:
        """RST both sides; whatever was still queued counts as dropped."""
        if self.closed:
            return
        self.closed = True
        for pipe in self.pipes:
            proxy._dropped += pipe.buffered
            pipe.queue.clear()
            pipe.buffered = 0
        _rst(self.client)
        _rst(self.upstream)
        for task in self.tasks:
            task.cancel()


class FaultProxy:
    """Asyncio TCP proxy with switchable faults (see the module docstring). Loopback only."""

    def __init__(self, target_host: str, target_port: int, listen_host: str = "127.0.0.1", listen_port: int = 0):
        for what, host in (("target", target_host), ("listen", listen_host)):
            if not is_loopback(host):
                raise ValueError(f"netfault is loopback-only: {what} host {host!r} is not a loopback address")
        for what, port in (("target", target_port), ("listen", listen_port)):
            if not 0 <= int(port) <= 65535 or (what == "target" and int(port) == 0):
                raise ValueError(f"bad {what} port {port!r}")
        # "localhost" with port 0 would bind ::1 and 127.0.0.1 on two different ports
        self.listen_host = "127.0.0.1" if listen_host == "localhost" else listen_host.strip("[]")
        self.listen_port = int(listen_port)
        self.target_host = target_host.strip("[]")
        self.target_port = int(target_port)
        self.port: int | None = None
        self._server: asyncio.AbstractServer | None = None
        self._conns: set[_Conn] = set()
        self._handlers: set[asyncio.Task] = set()
        self._mode = "passthrough"
        self._delay = 0.0
        self._rate = 0
        self._generation = 0
        self._refusing = False
        self._accepted = 0
        self._refused = 0
        self._bytes_up = 0
        self._bytes_down = 0
        self._dropped = 0

    # -- lifecycle -----------------------------------------------------------
    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("already started")
        self._server = await asyncio.start_server(self._handle, self.listen_host, self.listen_port,
                                                  limit=CHUNK, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for conn in list(self._conns):
            conn.abort(self)
        handlers = list(self._handlers)
        for task in handlers:
            task.cancel()
        if handlers:
            await asyncio.gather(*handlers, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    async def __aenter__(self) -> FaultProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    # -- faults (call from the proxy's loop) -------------------------------
    def _set_mode(self, mode: str) -> None:
        self._mode = mode
        self._generation += 1
        for conn in self._conns:
            for pipe in conn.pipes:
                pipe.poke()

    def passthrough(self) -> None:
        self._set_mode("passthrough")

    def delay(self, seconds: float) -> None:
        seconds = float(seconds)
        if not seconds >= 0:
            raise ValueError("delay must be >= 0 seconds")
        self._delay = seconds
        self._set_mode("delay")

    def throttle(self, bytes_per_s: int) -> None:
        rate = int(bytes_per_s)
        if rate <= 0:
            raise ValueError("throttle must be > 0 bytes/s")
        self._rate = rate
        self._set_mode("throttle")

    def blackhole(self) -> None:
        self._set_mode("blackhole")

    def reset(self) -> None:
        for conn in list(self._conns):
            conn.abort(self)
        self._set_mode("passthrough")

    def refuse(self, on: bool = True) -> None:
        self._refusing = bool(on)

    @property
    def stats(self) -> dict[str, Any]:
        return {
            "connections": len(self._conns),
            "accepted": self._accepted,
            "refused": self._refused,
            "bytes_up": self._bytes_up,
            "bytes_down": self._bytes_down,
            "dropped_bytes": self._dropped,
            "buffered_up": sum(p.buffered for c in self._conns for p in c.pipes if p.up),
            "buffered_down": sum(p.buffered for c in self._conns for p in c.pipes if not p.up),
            "mode": self._mode,
            "delay": self._delay if self._mode == "delay" else None,
            "throttle": self._rate if self._mode == "throttle" else None,
            "refusing": self._refusing,
            "port": self.port,
            "target": f"{self.target_host}:{self.target_port}",
        }

    # -- connections ---------------------------------------------------------
    async def _handle(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        if self._refusing or self._server is None:
            self._refused += 1
            _rst(cwriter)
            return
        task = asyncio.current_task()
        self._handlers.add(task)
        conn = _Conn(cwriter)
        self._conns.add(conn)
        self._accepted += 1
        try:
            try:
                ureader, uwriter = await asyncio.wait_for(
                    asyncio.open_connection(self.target_host, self.target_port, limit=CHUNK), CONNECT_TIMEOUT)
            except (OSError, TimeoutError):
                conn.abort(self)
                return
            conn.upstream = uwriter
            if conn.closed:  # reset() while we were connecting
                _rst(uwriter)
                return
            conn.pipes = [_Pipe(self, creader, uwriter, up=True), _Pipe(self, ureader, cwriter, up=False)]
            conn.tasks = [asyncio.ensure_future(coro) for p in conn.pipes for coro in (p.read_loop(), p.write_loop())]
            try:
                await asyncio.gather(*conn.tasks)
            except asyncio.CancelledError:
                if not conn.closed:
                    raise
            except Exception:  # a peer reset or went away: pass the reset on
                conn.abort(self)
            else:
                for w in (cwriter, uwriter):
                    w.close()
        except asyncio.CancelledError:
            conn.abort(self)
        finally:
            for t in conn.tasks:
                t.cancel()
            self._conns.discard(conn)
            self._handlers.discard(task)


class FaultProxyThread:
    """A FaultProxy on its own event loop in a daemon thread, for synchronous tests.

    Started on construction. Each fault method returns once the fault is in
    force on the proxy's loop (``reset()`` returns after the sockets are closed).
    """

    def __init__(self, target_host: str, target_port: int, listen_host: str = "127.0.0.1", listen_port: int = 0):
        self.proxy = FaultProxy(target_host, target_port, listen_host, listen_port)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="netfault", daemon=True)
        self.thread.start()
        try:
            self._run(self.proxy.start())
        except BaseException:
            self.loop.call_soon_threadsafe(self.loop.stop)
            raise
        self.port: int = self.proxy.port

    def _run(self, coro, timeout: float = 10.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def _call(self, fn, *args):
        async def call():
            result = fn(*args)
            await asyncio.sleep(0)  # let aborted transports close their sockets
            await asyncio.sleep(0)
            return result
        return self._run(call())

    def passthrough(self) -> None:
        self._call(self.proxy.passthrough)

    def delay(self, seconds: float) -> None:
        self._call(self.proxy.delay, seconds)

    def throttle(self, bytes_per_s: int) -> None:
        self._call(self.proxy.throttle, bytes_per_s)

    def blackhole(self) -> None:
        self._call(self.proxy.blackhole)

    def reset(self) -> None:
        self._call(self.proxy.reset)

    def refuse(self, on: bool = True) -> None:
        self._call(self.proxy.refuse, on)

    @property
    def stats(self) -> dict[str, Any]:
        return self._call(lambda: self.proxy.stats)

    def stop(self) -> None:
        if not self.thread.is_alive():
            return
        try:
            self._run(self.proxy.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
            if not self.thread.is_alive():
                self.loop.close()

    def __enter__(self) -> FaultProxyThread:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


# -- CLI -------------------------------------------------------------------------
HELP = "commands: pass | delay SECONDS | throttle BYTES_PER_S | blackhole | reset | refuse on|off | stats | help | quit"


def apply_command(proxy: FaultProxy, line: str) -> str:
    """Run one stdin command; returns the line to print."""
    parts = line.split()
    if not parts:
        return ""
    cmd, args = parts[0].lower(), parts[1:]
    try:
        if cmd in ("pass", "passthrough") and not args:
            proxy.passthrough()
        elif cmd == "delay" and len(args) == 1:
            proxy.delay(float(args[0]))
        elif cmd == "throttle" and len(args) == 1:
            proxy.throttle(int(float(args[0])))
        elif cmd == "blackhole" and not args:
            proxy.blackhole()
        elif cmd == "reset" and not args:
            proxy.reset()
        elif cmd == "refuse" and len(args) <= 1 and (not args or args[0].lower() in ("on", "off")):
            proxy.refuse(not args or args[0].lower() == "on")
        elif cmd == "stats" and not args:
            return json.dumps(proxy.stats, separators=(",", ":"))
        elif cmd == "help":
            return HELP
        else:
            return f"error: unknown command {line.strip()!r}; {HELP}"
    except ValueError as e:
        return f"error: {e}"
    return f"ok mode={proxy.stats['mode']} refusing={'on' if proxy.stats['refusing'] else 'off'}"


def _hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad port in {text!r}") from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m simulator.netfault",
                                     description="Loopback TCP fault proxy (delay, throttle, blackhole, reset, refuse).",
                                     epilog=HELP)
    parser.add_argument("--target", type=_hostport, required=True, help="HOST:PORT to forward to (loopback)")
    parser.add_argument("--listen", type=_hostport, default=("127.0.0.1", 0),
                        help="HOST:PORT to listen on (loopback; port 0 picks a free one)")
    args = parser.parse_args(argv)
    for what in ("target", "listen"):
        host, port = getattr(args, what)
        if not is_loopback(host):
            parser.error(f"--{what} {host} is not a loopback address (netfault is for tests and benches only)")
        if not 0 <= port <= 65535 or (what == "target" and port == 0):
            parser.error(f"--{what}: bad port {port}")
    return args


async def run(args: argparse.Namespace) -> int:
    proxy = FaultProxy(*args.target, *args.listen)
    await proxy.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(json.dumps({"netfault": "listening", "host": proxy.listen_host, "port": proxy.port,
                      "target": f"{proxy.target_host}:{proxy.target_port}"}, separators=(",", ":")), flush=True)

    def on_line(line: str) -> None:
        if line.strip().lower() in ("quit", "exit"):
            stop.set()
            return
        out = apply_command(proxy, line)
        if out:
            print(out, flush=True)

    def read_stdin() -> None:  # a thread: works for ttys, pipes and files alike
        for line in sys.stdin:
            loop.call_soon_threadsafe(on_line, line)

    if sys.stdin is not None:
        threading.Thread(target=read_stdin, name="netfault-stdin", daemon=True).start()
    try:
        await stop.wait()
    finally:
        await proxy.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(run(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
