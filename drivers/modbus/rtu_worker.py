"""A serial line's worker process (``process: true``): owns the port and keeps the wire's timing.

Why a process: the gateway's event loop also runs ingest, the uplink and
every other line, so a request that is due 1.75 ms after the last reply
leaves whenever the loop gets to it (p99 of a few ms on a busy board), and
a thread would queue behind the GIL (5 ms switch interval).  The unit
forbids real-time scheduling.  This worker has one job: a tight synchronous
loop (``select`` with sub-millisecond timeouts, never a busy spin) that
waits t3.5 of silence, writes the next request, and collects its reply.
It imports no asyncio and no pymodbus: little memory, fast start.

Protocol on a SOCK_SEQPACKET socket (one message per datagram):
  gateway -> worker  ``JOB`` header + the request frame;
  worker -> gateway  ``OPENED`` once the port is open; then per job a ``RESULT``
                     header + the reply bytes as they came (the gateway parses
                     and counts them, as in-process); or ``LOST`` with the
                     reason, after which the worker exits.
Jobs are run in the order they arrive; the gateway keeps about 20 ms of them
in the worker (``rtu_process.pipeline_depth``: 2 at 9600 baud, 5 at 115200), so a
stall of its loop does not idle the line, and a command waits behind those
only.  The worker exits when the socket closes (the gateway stopped or died),
at the latest after the transaction under way.
"""

from __future__ import annotations

import json
import os
import select
import socket
import struct
import sys
import time
from collections import deque

JOB = struct.Struct("<IBBBd")  # id, unit, function code, broadcast, reply timeout past the request's end
RESULT = struct.Struct("<IBddddBI")  # id, status, gap_end, t_send, last_rx, t_end, waited_for_gap, stale bytes
OK, LOST, OPENED = 0, 1, 2
EXIT_LOST = 3  # exit status after a port failure (1 is Python's for an uncaught exception: a death)
MAX_MSG = 4096
# A core idle for the whole gap (32 ms at 1200 baud) wakes ~0.2 ms later than one idle for 1 ms:
# the gap is slept in two parts, the last WAKE_EARLY on its own (one more wake-up, no spinning).
WAKE_EARLY = 0.001


class Lost(Exception):
    """The port failed; the reason goes to the gateway."""


class Worker:
    """One port, one request at a time, the gap kept from the last byte seen or the give-up time."""

    def __init__(self, sock: socket.socket, fd: int, cfg: dict):
        from drivers.modbus import framing  # pure: no asyncio, no pymodbus

        self.sock, self.fd = sock, fd
        self.gap, self.char_time, self.floor = cfg["gap"], cfg["char_time"], cfg["floor"]
        self.parse = framing.parse_rtu_reply if cfg["framer"] == "rtu" else framing.parse_ascii_reply
        self.jobs: deque[tuple[float, bytes]] = deque()
        self.last_rx = self.tx_end = self.gave_up = time.monotonic()
        self.stale = 0

    def run(self) -> None:
        """Idle: wait for a job (or line noise).  With a job: wait for the gap, run it, then take the
        jobs that came meanwhile; the socket is not watched while a job waits, so a job arriving
        then (it would wait its turn anyway) costs no wake-up of its own."""
        while True:
            if not self.jobs:
                ready, _, _ = select.select([self.sock, self.fd], [], [])
                if self.fd in ready:
                    self.stale += len(self.read())  # noise, or a reply given up on: pushes the gap back
                if self.sock in ready and not self.receive():
                    return
                continue
            due = max(self.last_rx, self.tx_end, self.gave_up) + self.gap
            wait = due - time.monotonic()
            if wait > 0:
                if wait > WAKE_EARLY:
                    wait -= WAKE_EARLY  # a long sleep wakes late (an idle core): wake early, then sleep the rest
                if select.select([self.fd], [], [], wait)[0]:
                    self.stale += len(self.read())
                continue
            self.transact(due)
            if not self.receive():
                return

    def receive(self) -> bool:
        """Queue every job waiting on the socket; False when the gateway has gone."""
        while True:
            try:
                msg = self.sock.recv(MAX_MSG, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return True
            if not msg:
                return False
            self.jobs.append((time.monotonic(), msg))

    def read(self) -> bytes:
        try:
            data = os.read(self.fd, 4096)
        except BlockingIOError:
            return b""
        except OSError as exc:
            raise Lost(f"read failed: {exc.strerror or exc}") from None
        if not data:
            raise Lost("device reported end of file (unplugged?)")
        self.last_rx = time.monotonic()
        return data

    def write(self, frame: bytes) -> float:
        view, deadline = memoryview(frame), time.monotonic() + 1.0
        while True:
            try:
                view = view[os.write(self.fd, view):]
            except BlockingIOError:
                pass
            except OSError as exc:
                raise Lost(f"write failed: {exc.strerror or exc}") from None
            if not view:
                return time.monotonic()
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([], [self.fd], [], left)[1]:
                raise Lost("write stalled for 1 s (output buffer full)")

    def transact(self, gap_end: float) -> None:
        received, msg = self.jobs.popleft()
        job_id, unit, fc, broadcast, timeout = JOB.unpack_from(msg)
        frame = msg[JOB.size:]
        t_send = self.write(frame)
        self.tx_end = t_send + len(frame) * self.char_time
        buf = bytearray()
        if broadcast:
            self.sleep_until(self.tx_end)
        else:
            self.collect(buf, unit, fc, self.tx_end + timeout)
        stale, self.stale = self.stale, 0
        head = RESULT.pack(job_id, OK, gap_end, t_send, self.last_rx, time.monotonic(), received <= gap_end, stale)
        self.sock.send(head + bytes(buf))

    def collect(self, buf: bytearray, unit: int, fc: int, deadline: float) -> None:
        """Bytes of the reply until it is complete or broken, or the timeout (a reply still arriving
        then gets the floor's time past its last byte, as in-process)."""
        while True:
            now = time.monotonic()
            until = max(deadline, self.last_rx + self.floor) if buf else deadline
            if now >= until:
                self.gave_up = now
                return
            if select.select([self.fd], [], [], until - now)[0]:
                buf += self.read()
                if buf and self.parse(buf, unit, fc) is not None:
                    return

    def sleep_until(self, t: float) -> None:
        while (left := t - time.monotonic()) > 0:
            if select.select([self.fd], [], [], left)[0]:
                self.stale += len(self.read())


def open_port(path: str, cfg: dict) -> int:
    """The port as a non-blocking fd, opened exclusively (as ``AsyncSerialPort.open``)."""
    from drivers.serial_line.opening import OpenFailed, open_nonblocking
    from drivers.serial_line.settings import SerialSettings

    try:
        ser = open_nonblocking(path, SerialSettings(**cfg["settings"]), exclusive=True)
    except OpenFailed as exc:
        raise Lost(str(exc)) from None
    fd = ser.fileno()
    _keep.append(ser)  # the fd lives as long as the process
    return fd


_keep: list = []


def tight_timers() -> None:
    """Ask for 1 us timer slack (the default 50 us is how late ``select`` may wake): not real-time
    scheduling, which the unit forbids, only precision; any user may set it for its own process."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_TIMERSLACK, 1000, 0, 0, 0)
    except (OSError, AttributeError):
        pass


PR_SET_TIMERSLACK = 29
SLICE_NS = 100_000  # the shortest slice the kernel grants (0.1 ms)
_SCHED_SETATTR = {"x86_64": 314, "aarch64": 274}  # syscall numbers; others: left as they are
_SCHED_ATTR = struct.Struct("<IIQiIQQQII")  # size, policy, flags, nice, priority, runtime, deadline, period, util


def short_slice() -> bool:
    """Ask for a 0.1 ms time slice (Linux >= 6.12, EEVDF): a fair-class task with a short slice gets an
    early deadline, so when its ``select`` wakes (the gap is over, the reply is in) it preempts the
    gateway's busy loop on the same core at once instead of after that task's slice (up to ~3 ms).
    Not real-time scheduling, which the unit forbids: the policy stays SCHED_OTHER at the inherited
    nice, any user may set it for its own process, and the worker never spins.  Older kernels keep
    the default slice (the call is then refused or the field ignored): nothing else changes."""
    number = _SCHED_SETATTR.get(os.uname().machine)
    if number is None:
        return False
    try:
        import ctypes

        attr = ctypes.create_string_buffer(_SCHED_ATTR.pack(_SCHED_ATTR.size, os.SCHED_OTHER, 0, os.nice(0), 0,
                                                            SLICE_NS, 0, 0, 0, 0))
        return ctypes.CDLL(None, use_errno=True).syscall(number, 0, attr, 0) == 0
    except (OSError, AttributeError):
        return False


def main(argv: list[str]) -> int:
    tight_timers()
    short_slice()
    sock = socket.socket(fileno=int(argv[1]))
    cfg = json.loads(argv[2])
    try:
        fd = open_port(cfg["port"], cfg)
        sock.send(RESULT.pack(0, OPENED, 0, 0, 0, 0, 0, 0))
        Worker(sock, fd, cfg).run()
    except Lost as exc:
        try:
            while sock.recv(MAX_MSG, socket.MSG_DONTWAIT):  # jobs left unread would turn our exit into a reset
                pass
        except OSError:
            pass
        try:
            sock.send(RESULT.pack(0, LOST, 0, 0, 0, 0, 0, 0) + str(exc).encode())
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        return EXIT_LOST
    except (KeyboardInterrupt, BrokenPipeError, ConnectionResetError):
        return 0  # the gateway has gone (its end of the socket closed under a reply)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
