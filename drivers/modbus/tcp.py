"""Modbus TCP: one connection per endpoint, shared by every unit behind it.

Requests are serialised with a lock (many TCP-to-RS-485 gateways cannot take
two at once).  A broken connection is reopened with jittered backoff; while
backing off, polls fail fast as "unreachable" instead of each waiting for a
connect timeout, so one dead endpoint costs nothing to the others.

A reply whose lengths do not add up (a byte count that disagrees with the
frame, a frame cut short, bytes that are not Modbus TCP) is a ``BadReply`` of
the request that got it, and the connection stays up: pymodbus would raise
inside ``data_received``, asyncio would log a ~1 KB traceback at ERROR and
drop the connection its neighbours share, and the device would look
unreachable (``guard_replies``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from core.backoff import Backoff, FailureLog
from core.clock import Clock
from drivers.errors import BadReply, DeviceTimeout, DeviceUnreachable

log = logging.getLogger("canopy.modbus.tcp")
T = TypeVar("T")

_MAX_LENGTH = 254  # MBAP length field: unit id + the longest PDU (253 bytes)
_COUNTED = (1, 2, 3, 4)  # reads: function, byte count, data


class MalformedReply(Exception):
    """A reply frame whose lengths do not add up; fails the request that was waiting for it."""


def reply_problem(data: bytes) -> str | None:
    """What is wrong with the Modbus TCP reply at the start of ``data``; None if it is right or still arriving."""
    if len(data) < 4:
        return None
    if pid := int.from_bytes(data[2:4], "big"):
        return f"not a Modbus TCP reply (protocol id {pid:#06x})"
    if len(data) < 6:
        return None
    length = int.from_bytes(data[4:6], "big")
    if not 2 <= length <= _MAX_LENGTH:
        return f"frame length {length} is outside Modbus's 2..{_MAX_LENGTH}"
    if len(data) < 6 + length:
        return None
    function = data[7]
    if function in _COUNTED:
        if length < 3:
            return f"function {function} reply without a byte count"
        if data[8] != length - 3:
            return f"byte count {data[8]} but {length - 3} data bytes follow"
    return None


def truncation(data: bytes) -> str | None:
    """The part of a reply that arrived when the wait ended, said as such; None if nothing arrived."""
    if not data:
        return None
    if len(data) >= 6:
        return f"truncated reply: {len(data)} of {6 + int.from_bytes(data[4:6], 'big')} bytes arrived"
    return f"truncated reply: {len(data)} bytes arrived, not even a header"


def guard_replies(client: AsyncModbusTcpClient) -> None:
    """Check each reply frame before pymodbus decodes it; a bad one fails its request with MalformedReply.

    pymodbus offers no hook for this: its transaction manager's ``callback_data``
    is wrapped on this one client.  The bad bytes are dropped (requests on an
    endpoint are serialised, so nothing else is in the buffer).
    """
    ctx = client.ctx
    decode = ctx.callback_data

    def callback_data(data: bytes, addr: tuple | None = None) -> int:
        problem = reply_problem(data)
        if problem is None:
            try:
                return decode(data, addr=addr)
            except ModbusException as exc:
                problem = f"undecodable reply ({exc})"
        future = ctx.response_future
        if not future.done():
            future.set_exception(MalformedReply(problem))
        return len(data)

    ctx.callback_data = callback_data


class ModbusTcpEndpoint:
    def __init__(self, host: str, port: int, *, timeout: float = 1.0, backoff_initial: float = 1.0,
                 backoff_max: float = 30.0, clock: Clock | None = None):
        self.host = host
        self.port = port
        self.timeout = timeout
        self.clock = clock or Clock()
        self._client: AsyncModbusTcpClient | None = None
        self._lock = asyncio.Lock()
        self._backoff = Backoff(backoff_initial, backoff_max)
        self._retry_at = 0.0
        self._fail = FailureLog(log, f"modbus tcp {host}:{port}")
        self.requests = 0
        self.errors = 0

    @property
    def name(self) -> str:
        return f"{self.host}:{self.port}"

    async def _connect(self) -> AsyncModbusTcpClient:
        if self._client is not None and self._client.connected:
            return self._client
        now = self.clock.monotonic()
        if now < self._retry_at:
            raise DeviceUnreachable(f"{self.name} unreachable, next attempt in {self._retry_at - now:.1f}s")
        if self._client is not None:
            self._client.close()
        client = AsyncModbusTcpClient(self.host, port=self.port, timeout=self.timeout, retries=0, reconnect_delay=0)
        guard_replies(client)
        try:
            ok = await asyncio.wait_for(client.connect(), timeout=self.timeout + 1)
        except (asyncio.TimeoutError, OSError) as exc:
            ok = False
            reason = str(exc) or type(exc).__name__
        else:
            reason = "connection refused or timed out"
        if not ok:
            client.close()
            self._retry_at = self.clock.monotonic() + self._backoff.next()
            self._fail.failed(reason)
            raise DeviceUnreachable(f"cannot connect to {self.name}: {reason}")
        # a silent unit must not make pymodbus drop the connection its neighbours share
        client.set_max_no_responses(10)
        self._backoff.reset()
        self._fail.recovered()
        self._client = client
        return client

    async def execute(self, request: Callable[[AsyncModbusTcpClient], Awaitable[T]], timeout: float | None = None) -> T:
        """Run one request on the shared connection, mapping transport failures."""
        timeout = timeout or self.timeout
        async with self._lock:
            client = await self._connect()
            self.requests += 1
            # pymodbus reads its reply timeout per request: honour each device's own
            client.ctx.comm_params.timeout_connect = timeout
            try:
                return await asyncio.wait_for(request(client), timeout=timeout + 0.5)
            except asyncio.TimeoutError:
                self.errors += 1
                raise DeviceTimeout(f"no reply within {timeout:.2f}s") from None
            except MalformedReply as exc:
                self.errors += 1
                raise BadReply(str(exc)) from None
            except ConnectionException as exc:
                self.errors += 1
                self._client = None
                client.close()
                raise DeviceUnreachable(f"connection to {self.name} lost: {exc}") from None
            except ModbusIOException:
                self.errors += 1
                if not client.connected:
                    self._client = None
                    raise DeviceUnreachable(f"connection to {self.name} lost") from None
                if cut_short := truncation(client.ctx.recv_buffer):
                    raise BadReply(f"{cut_short} within {timeout:.2f}s") from None
                raise DeviceTimeout(f"no reply within {timeout:.2f}s") from None
            except ModbusException as exc:
                self.errors += 1
                raise BadReply(f"invalid reply: {exc}") from None

    async def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
