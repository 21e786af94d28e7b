"""A real serial line for simulated devices: a Linux pseudo-terminal pair served by a thread.

The gateway opens the pty's slave side (``path``) exactly like a USB adapter;
the simulator reads and writes the master side.  A pty delivers bytes at once,
so subclasses impose the wire's timing themselves; the serving thread sleeps
with ``select`` (microsecond timeouts, not the event loop's millisecond ticks),
so replies leave when the wire would have delivered them.

``link`` gives the line a stable name (a symlink to ``/dev/pts/N``), like
``/dev/serial/by-id/...``: ``vanish()`` closes the pty (the gateway's reads
fail with EIO, the path disappears) and ``restore()`` creates a new pty and
points the link at it, as an unplugged and replugged adapter does.

ptys carry no parity: Linux drops PARENB.  ``master_settings()`` reads what
the gateway configured (baud, character length), so a line can refuse a
master speaking at the wrong speed or character format.
"""

from __future__ import annotations

import os
import pty
import queue
import select
import termios
import threading
import time
import tty
from collections.abc import Callable

from drivers.serial_line.settings import SerialSettings

_BAUDS = {getattr(termios, f"B{b}"): b for b in (50, 75, 110, 134, 150, 200, 300, 600, 1200, 1800, 2400, 4800, 9600,
                                                 19200, 38400, 57600, 115200, 230400, 460800, 921600)
          if hasattr(termios, f"B{b}")}


class PtyLine:
    """Owns a pty pair and a serving thread.  Subclasses implement ``on_bytes`` and ``on_timer``."""

    name = "pty-line"

    def __init__(self, settings: SerialSettings | None = None, link: str | None = None, spin: float = 0.0):
        self.settings = settings or SerialSettings()
        self.link = link
        # ``spin``: seconds before a deadline (or input expected) the thread stops sleeping and polls,
        # yielding the CPU between polls: a test instrument's precision (bench/rtu_bus.py), where a VM
        # wakes a sleeper 0.1-0.5 ms late; hardware slaves have a UART.  0 (the default): only ``select``.
        self.spin = spin
        self.master_fd: int | None = None
        self.slave_fd: int | None = None
        self.pts: str | None = None
        self.vanished = False
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._calls: queue.Queue = queue.Queue()
        self.lock = threading.RLock()  # held while the thread touches device models

    # -- the pty ---------------------------------------------------------------------------
    @property
    def path(self) -> str:
        """What the gateway opens: the stable link if any, else /dev/pts/N."""
        return self.link or self.pts or ""

    def _open_pty(self) -> None:
        master, slave = pty.openpty()
        tty.setraw(slave)  # no echo, no line editing, no CR/LF translation
        os.set_blocking(master, False)
        self.master_fd, self.slave_fd = master, slave  # we keep the slave open: no EIO when the gateway closes it
        self.pts = os.ttyname(slave)
        if self.link:
            tmp = f"{self.link}.tmp{os.getpid()}"
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            os.symlink(self.pts, tmp)
            os.replace(tmp, self.link)
        self.vanished = False

    def _close_pty(self) -> None:
        for fd in (self.master_fd, self.slave_fd):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.master_fd = self.slave_fd = None
        if self.link:
            try:
                os.unlink(self.link)
            except FileNotFoundError:
                pass

    def master_settings(self) -> tuple[int | None, int]:
        """(baud, bits per character) as the gateway set them on its side of the pty."""
        if self.master_fd is None:
            return None, 0
        try:
            attrs = termios.tcgetattr(self.master_fd)
        except termios.error:
            return None, 0
        cflag, ospeed = attrs[2], attrs[5]
        size = {termios.CS5: 5, termios.CS6: 6, termios.CS7: 7, termios.CS8: 8}[cflag & termios.CSIZE]
        bits = 1 + size + (1 if cflag & termios.PARENB else 0) + (2 if cflag & termios.CSTOPB else 1)
        return _BAUDS.get(ospeed), bits

    def settings_match(self) -> bool:
        baud, bits = self.master_settings()
        return baud == self.settings.baudrate and bits == self.settings.char_bits

    def write(self, data: bytes) -> None:
        fd = self.master_fd
        if fd is None:
            return
        view = memoryview(data)
        while view:
            try:
                n = os.write(fd, view)
            except BlockingIOError:
                n = 0
                time.sleep(0.0002)
            except OSError:
                return
            view = view[n:]

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> "PtyLine":
        self._open_pty()
        self._thread = threading.Thread(target=self._serve, name=self.name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        self._close_pty()
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def vanish(self) -> None:
        """Unplug: close the pty, remove the link (the gateway's port read fails)."""
        self.call(self._vanish)

    def restore(self) -> None:
        """Plug back in: a new pty behind the same link."""
        self.call(self._restore)

    def _vanish(self) -> None:
        self.reset()
        self._close_pty()
        self.vanished = True

    def _restore(self) -> None:
        if self.master_fd is None:
            self._open_pty()

    def call(self, fn: Callable[[], object], timeout: float = 5.0):
        """Run ``fn`` on the serving thread (between frames) and return its result."""
        if self._thread is None or threading.current_thread() is self._thread:
            return fn()
        done = threading.Event()
        box: list = []
        self._calls.put((fn, done, box))
        self._wake()
        if not done.wait(timeout):
            raise TimeoutError("simulator thread did not answer")
        if box and isinstance(box[0], BaseException):
            raise box[0]
        return box[0] if box else None

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    # -- the serving thread ----------------------------------------------------------------
    def _serve(self) -> None:
        while not self._stop.is_set():
            while True:
                try:
                    fn, done, box = self._calls.get_nowait()
                except queue.Empty:
                    break
                try:
                    box.append(fn())
                except BaseException as exc:  # handed back to the caller
                    box.append(exc)
                done.set()
            now = time.monotonic()
            deadline = self.next_deadline()
            timeout = 0.2 if deadline is None else max(0.0, deadline - now - self.spin)
            watch = self.input_expected() if self.spin else None
            if watch is not None:  # stamp the input's arrival precisely too: poll from a little before
                timeout = min(timeout, max(0.0, watch[0] - now - self.spin))
            fds = [self._wake_r] + ([self.master_fd] if self.master_fd is not None else [])
            try:
                readable, _, _ = select.select(fds, [], [], min(timeout, 0.2))
                if not readable and self.spin and (deadline is not None or watch is not None):
                    until = min(t for t in (deadline, watch and watch[1]) if t is not None)
                    readable = self._poll_until(until, fds)
            except (OSError, ValueError):  # fd closed under us by vanish()
                continue
            if self._wake_r in readable:
                try:
                    os.read(self._wake_r, 4096)
                except OSError:
                    pass
            if self.master_fd is not None and self.master_fd in readable:
                try:
                    data = os.read(self.master_fd, 4096)
                except (BlockingIOError, InterruptedError):
                    data = b""
                except OSError:
                    data = b""
                    time.sleep(0.01)  # nobody on the other side right now
                if data:
                    with self.lock:
                        self.on_bytes(data, time.monotonic())
            with self.lock:
                self.on_timer(time.monotonic())

    @staticmethod
    def _poll_until(deadline: float, fds: list[int]) -> list[int]:
        """The last ``spin`` seconds before a deadline: poll, yielding between polls; stop early on input."""
        while time.monotonic() < deadline:
            readable = select.select(fds, [], [], 0)[0]
            if readable:
                return readable
            os.sched_yield()
        return []

    # -- for subclasses --------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        """Monotonic time of the next thing to do (None: nothing scheduled)."""
        return None

    def input_expected(self) -> tuple[float, float] | None:
        """(from, until): when the gateway's next bytes are expected, so that with ``spin`` their
        arrival is stamped without a sleeper's wake-up delay; None: not expected now."""
        return None

    def on_bytes(self, data: bytes, t: float) -> None:
        """Bytes the gateway wrote, received at ``t``."""

    def on_timer(self, now: float) -> None:
        """Called after every wake-up: send what is due."""

    def reset(self) -> None:
        """Forget frames in progress (the line was unplugged)."""

