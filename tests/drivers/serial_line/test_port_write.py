"""AsyncSerialPort.write on a real pty whose other end stops reading: the output buffer fills.

The write must wait on the loop's writer readiness, never by sleeping: the
event loop keeps serving other tasks, and the write either completes once
the reader drains the buffer or fails with PortError after ``write_timeout``.
"""

from __future__ import annotations

import asyncio
import os
import pty
import time
import tty

import pytest

from drivers.serial_line.port import AsyncSerialPort, PortError
from drivers.serial_line.settings import SerialSettings

BIG = bytes(range(256)) * 2048  # 512 KiB: far more than a pty buffers (~64 KiB)


@pytest.fixture
def pty_pair():
    master, slave = pty.openpty()
    tty.setraw(slave)
    os.set_blocking(master, False)
    path = os.ttyname(slave)
    yield master, path
    for fd in (master, slave):
        os.close(fd)


async def max_loop_lag(stop: asyncio.Event, tick: float = 0.005) -> float:
    """The worst lateness of a 5 ms ticker while the write runs: what a blocked loop would show."""
    worst = 0.0
    while not stop.is_set():
        t0 = time.monotonic()
        await asyncio.sleep(tick)
        worst = max(worst, time.monotonic() - t0 - tick)
    return worst


async def test_stalled_write_keeps_the_loop_responsive_and_fails_cleanly_after_the_timeout(pty_pair):
    master, path = pty_pair
    lost: list[str] = []
    port = AsyncSerialPort(path, SerialSettings(38400, 8, "N", 1), on_data=lambda d, t: None,
                           on_lost=lost.append, write_timeout=0.4)
    port.open()
    stop = asyncio.Event()
    ticker = asyncio.create_task(max_loop_lag(stop))
    t0 = time.monotonic()
    with pytest.raises(PortError, match="stalled"):
        await port.write(BIG)  # nobody reads the master: the buffer fills and stays full
    took = time.monotonic() - t0
    stop.set()
    lag = await ticker
    assert 0.35 < took < 2.0, took
    assert lag < 0.1, f"event loop blocked for {lag * 1000:.0f} ms during the write"
    assert lost and "stalled" in lost[0] and not port.is_open
    with pytest.raises(PortError):
        await port.write(b"\x01")  # a lost port refuses further writes at once
    port.close()


async def test_stalled_write_completes_when_the_reader_drains_the_buffer(pty_pair):
    master, path = pty_pair
    port = AsyncSerialPort(path, SerialSettings(38400, 8, "N", 1), on_data=lambda d, t: None, write_timeout=5.0)
    port.open()
    received = bytearray()
    loop = asyncio.get_running_loop()

    def drain():
        try:
            while chunk := os.read(master, 65536):
                received.extend(chunk)
        except BlockingIOError:
            pass

    loop.call_later(0.2, loop.add_reader, master, drain)  # the reader resumes after 200 ms
    stop = asyncio.Event()
    ticker = asyncio.create_task(max_loop_lag(stop))
    t0 = time.monotonic()
    try:
        t_last = await port.write(BIG)
        took = time.monotonic() - t0
        stop.set()
        lag = await ticker
        while len(received) < len(BIG) and time.monotonic() - t0 < 5:
            await asyncio.sleep(0.01)
    finally:
        loop.remove_reader(master)
        port.close()
    assert 0.15 < took < 4.0, took
    assert t_last >= t0 + 0.15  # the time the last byte was handed over, not when the write began
    assert lag < 0.1, f"event loop blocked for {lag * 1000:.0f} ms during the write"
    assert bytes(received) == BIG and port.tx_bytes == len(BIG)


async def test_closing_the_port_ends_a_waiting_write_with_port_error(pty_pair):
    master, path = pty_pair
    port = AsyncSerialPort(path, SerialSettings(38400, 8, "N", 1), on_data=lambda d, t: None, write_timeout=5.0)
    port.open()
    write = asyncio.create_task(port.write(BIG))
    await asyncio.sleep(0.05)
    assert not write.done()
    port.close()
    with pytest.raises(PortError, match="closed"):
        await asyncio.wait_for(write, 1.0)
