"""A pyserial port driven by the event loop: no threads, no polling.

The file descriptor is registered with ``loop.add_reader``; received bytes go
to a callback with their arrival time, and a vanished device (USB unplugged,
pty master closed: ``EIO``, end of file, ``ENXIO``) is reported once through
``on_lost`` so the owner can reopen with backoff.  Writes go straight to the
kernel; only when its output buffer is full does a write wait, on
``loop.add_writer``, for at most ``write_timeout``.

A pty is opened 8-bit without parity with the same character length
(``opening.termios_settings``: Linux ptys carry no parity).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable

import serial

from drivers.serial_line.opening import OpenFailed, open_nonblocking
from drivers.serial_line.opening import describe_open_error, is_pty, termios_settings  # noqa: F401 - re-exported
from drivers.serial_line.settings import SerialSettings

class PortError(OSError):
    """The port cannot be opened or has gone away."""


def _wake(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_result(None)


class AsyncSerialPort:
    """One open serial device.  ``on_data(bytes, t)`` and ``on_lost(reason)`` run on the loop."""

    def __init__(self, path: str, settings: SerialSettings, *, on_data: Callable[[bytes, float], None],
                 on_lost: Callable[[str], None] | None = None, exclusive: bool = True,
                 write_timeout: float = 1.0):
        self.path = path
        self.settings = settings
        self.on_data = on_data
        self.on_lost = on_lost
        self.exclusive = exclusive
        self.write_timeout = write_timeout
        self._write_waiter: asyncio.Future | None = None
        self._serial: serial.Serial | None = None
        self._fd: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.lost_reason: str | None = None
        self.rx_bytes = 0
        self.tx_bytes = 0

    @property
    def is_open(self) -> bool:
        return self._fd is not None and self.lost_reason is None

    def open(self) -> None:
        """Open and start reading; raises PortError with an installer-readable reason."""
        self._loop = asyncio.get_running_loop()
        try:
            ser = open_nonblocking(self.path, self.settings, exclusive=self.exclusive)
        except OpenFailed as exc:
            raise PortError(str(exc)) from None
        self._serial, self._fd, self.lost_reason = ser, ser.fileno(), None
        self._loop.add_reader(self._fd, self._readable)

    def _readable(self) -> None:
        fd = self._fd
        if fd is None:
            return
        try:
            data = os.read(fd, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lost(f"read failed: {exc.strerror or exc}")
            return
        if not data:
            self._lost("device reported end of file (unplugged?)")
            return
        self.rx_bytes += len(data)
        self.on_data(data, time.monotonic())

    async def write(self, data: bytes) -> float:
        """Hand ``data`` to the kernel; returns the time its last byte was handed over.

        A tty takes a frame at once.  Only a stalled adapter (a full output
        buffer: flow control, a wedged USB adapter) makes this wait, on the
        loop's writer readiness (``loop.add_writer``), never by sleeping: the
        event loop keeps running meanwhile.  After ``write_timeout`` seconds
        without the whole frame taken, the port counts as lost (PortError).
        One writer at a time (the line's owner task).
        """
        if self._fd is None or self.lost_reason is not None:
            raise PortError(self.lost_reason or f"{self.path} is not open")
        if self._write_waiter is not None:
            raise RuntimeError(f"{self.path}: concurrent write (one writer at a time)")
        t = time.monotonic()
        view = memoryview(data)[self._write_some(data):]
        deadline = t + self.write_timeout
        while view:
            if not await self._writable(deadline - time.monotonic()):
                self._lost(f"write stalled for {self.write_timeout:g} s (output buffer full)")
                raise PortError(self.lost_reason)
            if self._fd is None or self.lost_reason is not None:  # closed or lost while waiting
                raise PortError(self.lost_reason or f"{self.path} was closed during a write")
            view = view[self._write_some(view):]
            t = time.monotonic()
        self.tx_bytes += len(data)
        return t

    def _write_some(self, data: bytes | memoryview) -> int:
        """Bytes the kernel took now (0 if its buffer is full); a failed write loses the port."""
        try:
            return os.write(self._fd, data)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError as exc:
            self._lost(f"write failed: {exc.strerror or exc}")
            raise PortError(self.lost_reason) from None

    async def _writable(self, timeout: float) -> bool:
        """Until the fd can take more bytes (True), or ``timeout`` passes (False); also ends on close/loss."""
        if timeout <= 0:
            return False
        waiter = self._loop.create_future()
        self._write_waiter = waiter
        self._loop.add_writer(self._fd, _wake, waiter)
        try:
            async with asyncio.timeout(timeout):
                await waiter
            return True
        except TimeoutError:
            return False
        finally:
            self._write_waiter = None
            self._remove_writer()

    def _remove_writer(self) -> None:
        if self._fd is not None and self._loop is not None:
            try:
                self._loop.remove_writer(self._fd)
            except (ValueError, OSError, RuntimeError):
                pass

    def _lost(self, reason: str) -> None:
        if self.lost_reason is not None:
            return
        self.lost_reason = reason
        self._detach()
        if self.on_lost is not None:
            self.on_lost(reason)

    def _detach(self) -> None:
        self._remove_writer()
        if self._write_waiter is not None:
            _wake(self._write_waiter)  # the waiting write sees the port closed or lost
        if self._fd is not None and self._loop is not None:
            try:
                self._loop.remove_reader(self._fd)
            except (ValueError, OSError, RuntimeError):
                pass

    def close(self) -> None:
        self._detach()
        if self._serial is not None:
            try:
                self._serial.close()
            except (OSError, serial.SerialException):
                pass
        self._serial = None
        self._fd = None
