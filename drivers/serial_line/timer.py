"""Sub-millisecond sleeps on the event loop: a Linux timerfd watched with ``loop.add_reader``.

``asyncio.sleep`` wakes in whole milliseconds: the loop's selector rounds its
timeout up to the next millisecond (epoll takes milliseconds), so a 1.75 ms
gap becomes 2-3 ms and every request on a fast RS-485 line leaves late.  A
timerfd is a kernel high-resolution timer delivered as a readable file
descriptor: the loop keeps sleeping in epoll (no spinning, no thread, no GIL
contention) and wakes within tens of microseconds of the deadline.

Python 3.13 has ``os.timerfd_create``; on 3.11/3.12 the two libc calls are
made through ``ctypes``.  Where there is no timerfd (not Linux), the timer
falls back to ``asyncio.sleep``.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import time

CLOCK_MONOTONIC = 1  # what time.monotonic() reads on Linux
TFD_TIMER_ABSTIME = 1


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


def _libc():
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.timerfd_create.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.timerfd_settime.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.POINTER(_Itimerspec), ctypes.c_void_p]
        return libc
    except (OSError, AttributeError):
        return None


_LIBC = _libc()


class PreciseTimer:
    """One timerfd for one owner task: ``await sleep_until(t)`` with ``t`` on ``time.monotonic()``'s clock.

    One sleeper at a time (the line's owner task).  ``precise`` is False when
    the platform has no timerfd and ``asyncio.sleep`` is used instead.
    """

    def __init__(self) -> None:
        self._fd: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiter: asyncio.Future | None = None
        self._spec = _Itimerspec()
        self._spec_ref = ctypes.byref(self._spec)  # built once: _arm runs before every request
        self.precise = _LIBC is not None  # until timerfd_create fails

    async def sleep_until(self, when: float) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop and self.precise:
            self._attach(loop)
        if self._fd is None:
            await asyncio.sleep(max(0.0, when - time.monotonic()))
            return
        waiter = self._waiter = loop.create_future()
        self._arm(when)
        try:
            await waiter
        finally:
            self._waiter = None
            if not waiter.done():  # cancelled: a later expiry must not wake the next sleeper early
                self._arm(0.0)

    def _arm(self, when: float) -> None:
        sec = int(when)
        value = self._spec.it_value
        value.tv_sec, value.tv_nsec = sec, int((when - sec) * 1e9)
        if when > 0 and sec == 0 and value.tv_nsec == 0:
            value.tv_nsec = 1  # zero would disarm
        if _LIBC.timerfd_settime(self._fd, TFD_TIMER_ABSTIME if when > 0 else 0, self._spec_ref, None) < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"timerfd_settime: {os.strerror(err)}")

    def _attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Created on first use (a line that never sleeps holds no descriptor), watched by ``loop``."""
        self._detach()
        if self._fd is None:
            fd = _LIBC.timerfd_create(CLOCK_MONOTONIC, os.O_NONBLOCK | os.O_CLOEXEC)
            if fd < 0:
                self.precise = False
                return
            self._fd = fd
        loop.add_reader(self._fd, self._fired)
        self._loop = loop

    def _detach(self) -> None:
        if self._loop is not None and self._fd is not None and not self._loop.is_closed():
            try:
                self._loop.remove_reader(self._fd)
            except (ValueError, OSError, RuntimeError):
                pass
        self._loop = None

    def _fired(self) -> None:
        try:
            os.read(self._fd, 8)
        except (BlockingIOError, InterruptedError):
            return
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def close(self) -> None:
        """Release the descriptor; a later sleep creates a new one."""
        self._detach()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
