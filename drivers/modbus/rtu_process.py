"""The gateway's side of a line run by a worker process (``process: true``; the worker: ``rtu_worker``).

``WorkerPort`` stands where ``AsyncSerialPort`` stands in-process: opening it
starts the worker (which opens the serial port itself), and a port lost, a
worker that cannot open the port, or a worker that died all reach the line
through ``on_lost``, so the line's reopening with backoff covers them.
``WorkerWire`` is the wire with the gap and the reply's collection moved to
the worker: it sends the frame, gets back the reply's bytes and timestamps,
and then parses, counts and learns exactly as in-process (same parser, same
counters, same learned timeouts), so both modes report the same things.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from drivers.errors import BadReply, DeviceTimeout
from drivers.modbus.rtu_transaction import PendingReply, PortLost, RtuWire
from drivers.modbus.rtu_worker import EXIT_LOST, JOB, LOST, MAX_MSG, OPENED, RESULT
from drivers.serial_line.port import PortError
from drivers.serial_line.settings import SerialSettings

_ROOT = str(Path(__file__).resolve().parents[2])  # the directory holding the ``drivers`` package
EXIT_POLL_S = 0.005  # how often a stopping worker's exit is looked for (never waited for on the loop)
EXIT_STATUS_WAIT_S = 0.2  # a worker that closed its end and has not exited by then: reported as died
STOP_GRACE_S = 0.5  # a worker still running this long after its socket closed is killed
_reapers: set[asyncio.Task] = set()  # workers being stopped: the tasks are kept until they end


# Process mode: requests waiting in the worker, so a stall of the gateway's loop (a commit, a batch
# encoded) does not leave the line idle; ~20 ms of them (a typical 8-character read and its
# 17-character reply each), at least two, at most eight: a command waits behind those only.
PIPELINE_AHEAD_S = 0.02
PIPELINE_MAX = 8


def pipeline_depth(settings: SerialSettings) -> int:
    """How many requests a line's worker holds at once: 2 at 9600 baud, 3 at 38400, 5 at 115200."""
    per_request = 25 * settings.char_time + settings.t35
    return max(2, min(PIPELINE_MAX, math.ceil(PIPELINE_AHEAD_S / per_request)))


class WorkerPort:
    """A worker process owning one serial port; ``submit`` runs one transaction there."""

    def __init__(self, path: str, settings: SerialSettings, *, framer: str, floor: float,
                 on_lost: Callable[[str], None], on_open: Callable[[], None]):
        self.path, self.settings = path, settings
        self.cfg = {"port": path, "framer": framer, "gap": settings.t35, "char_time": settings.char_time,
                    "floor": floor, "settings": {"baudrate": settings.baudrate, "bytesize": settings.bytesize,
                                                 "parity": settings.parity, "stopbits": settings.stopbits}}
        self.on_lost, self.on_open = on_lost, on_open
        self.died = False  # the worker exited without saying why (killed, crashed): restart it at once
        self.opened = False  # the worker has opened the port
        self.lost_reason: str | None = None
        self.proc: subprocess.Popen | None = None
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future] = {}  # <= the jobs in the worker (pipeline_depth)
        self._ending: str | None = None  # the worker closed its end: why, until its exit status is known
        self._reaper: asyncio.Task | None = None

    @property
    def is_open(self) -> bool:
        return self._sock is not None and self.lost_reason is None

    def open(self) -> None:
        """Start the worker; it opens the port itself and reports a failure as the first message."""
        self._loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (_ROOT, os.environ.get("PYTHONPATH")) if p)}
        try:
            self.proc = subprocess.Popen([sys.executable, "-m", "drivers.modbus.rtu_worker", str(theirs.fileno()),
                                          json.dumps(self.cfg)], pass_fds=(theirs.fileno(),), env=env,
                                         stdin=subprocess.DEVNULL, close_fds=True)
        except OSError as exc:
            ours.close()
            raise PortError(f"cannot start the line worker: {exc.strerror or exc}") from None
        finally:
            theirs.close()
        ours.setblocking(False)
        self._sock, self.lost_reason = ours, None
        self._loop.add_reader(ours.fileno(), self._readable)

    def submit(self, unit: int, fc: int, frame: bytes, timeout: float, broadcast: bool) -> asyncio.Future:
        """Queue one transaction in the worker; the future gets RESULT's fields and the reply bytes."""
        if not self.is_open:
            raise PortLost(self.lost_reason or f"{self.path} is not open")
        job_id = next(self._ids) & 0xFFFFFFFF
        fut = self._loop.create_future()
        if self._ending is not None:  # failed with the right reason once the exit status is known
            self._waiting[job_id] = fut
            return fut
        try:
            self._sock.send(JOB.pack(job_id, unit, fc, broadcast, timeout) + frame)
        except OSError as exc:
            self._lost(f"worker unreachable: {exc.strerror or exc}")
            raise PortLost(self.lost_reason) from None
        self._waiting[job_id] = fut
        return fut

    def _readable(self) -> None:
        reset = ""
        while self._sock is not None:
            try:
                msg = self._sock.recv(MAX_MSG)
            except BlockingIOError:
                return
            except OSError as exc:  # a reset is reported before the messages still queued: read on once
                if reset:
                    msg = b""
                else:
                    reset = str(exc)
                    continue
            if not msg:
                self._detach()
                self._ending = reset
                self._check_exit(0)
                return
            fields = RESULT.unpack_from(msg)
            if fields[1] == LOST:
                self._lost(msg[RESULT.size:].decode(errors="replace"))
                return
            if fields[1] == OPENED:
                self.opened = True
                self.on_open()
                continue
            fut = self._waiting.pop(fields[0], None)
            if fut is not None and not fut.done():
                fut.set_result((*fields[2:], msg[RESULT.size:]))

    def _check_exit(self, checks: int) -> None:
        """The worker closed its end without saying why: it died (killed, crashed), or exited on a port
        failure whose message was lost.  Its exit status tells; it is exiting, so it is looked for
        every few ms (never waited for on the loop) for up to EXIT_STATUS_WAIT_S."""
        if self._sock is None or self.lost_reason is not None:  # closed meanwhile
            return
        code = self.proc.poll() if self.proc is not None else None
        if code is None and checks * EXIT_POLL_S < EXIT_STATUS_WAIT_S:
            self._loop.call_later(EXIT_POLL_S, self._check_exit, checks + 1)
            return
        self._lost(self._death(code, self._ending or ""))

    def _death(self, code: int | None, why: str) -> str:
        self.died = code != EXIT_LOST
        return "line worker stopped on a port failure" if code == EXIT_LOST else \
            f"line worker died (exit status {code}{', ' + why if why else ''})"

    def _lost(self, reason: str) -> None:
        if self.lost_reason is not None:
            return
        self.lost_reason = reason
        self._detach()
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(PortLost(reason))
        self._waiting.clear()
        self.on_lost(reason)

    def _detach(self) -> None:
        if self._sock is not None and self._loop is not None and not self._loop.is_closed():
            try:
                self._loop.remove_reader(self._sock.fileno())
            except (ValueError, OSError, RuntimeError):
                pass

    def close(self) -> None:
        """Stop the worker without waiting for it: it exits when its socket closes (a few ms); one still
        running after STOP_GRACE_S is killed.  ``wait_closed`` waits for that."""
        self._detach()
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(PortLost(f"{self.path} closed"))
        self._waiting.clear()
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        try:
            self._reaper = asyncio.get_running_loop().create_task(_stop(proc))
        except RuntimeError:  # no loop (interpreter exit): wait here, nothing else is running
            _stop_now(proc)
            return
        _reapers.add(self._reaper)
        self._reaper.add_done_callback(_reapers.discard)

    async def wait_closed(self) -> None:
        """After ``close``: until the worker has exited."""
        if self._reaper is not None:
            await asyncio.shield(self._reaper)


async def _stop(proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + STOP_GRACE_S
    while proc.poll() is None:
        if time.monotonic() >= deadline:
            proc.kill()  # stuck: SIGKILL, then reaped on the next look
            deadline = float("inf")
        await asyncio.sleep(EXIT_POLL_S)


def _stop_now(proc: subprocess.Popen) -> None:
    try:
        proc.wait(STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class WorkerWire(RtuWire):
    """The wire when a worker keeps the timing: the same parsing, counters and learned timeouts."""

    async def exchange(self, unit: int, fc: int, frame: bytes, reply_chars: int, broadcast: bool):
        port = self.port
        if port is None or not port.is_open:
            raise PortLost(self.port_error or "port not open")
        adaptive = self.plan.adaptive  # this request's plan: another may be set while it is in the worker
        timeout = self.reply_wait(unit, fc, reply_chars)
        gap_end, t_send, last_rx, t_end, waited, stale, buf = await port.submit(unit, fc, frame, timeout, broadcast)
        c = self.counters
        c["transactions"] += 1
        c["stale_bytes"] += stale
        self._tx_end, self._last_rx = t_send + len(frame) * self.char_time, last_rx
        if waited:
            self.reaction.append(t_send - gap_end)
        self._account(t_send, len(frame), len(buf), now=t_end)
        if broadcast:
            return None
        return self._settle(unit, fc, buf, timeout, adaptive, last_rx)

    def _settle(self, unit: int, fc: int, buf: bytes, timeout: float, adaptive: bool, last_rx: float):
        pending = PendingReply(unit, fc, asyncio.get_running_loop().create_future(), timeout, bytearray(buf))
        parsed = self._parse(buf, unit, fc) if buf else None
        if parsed is None:
            if buf:
                self.counters["truncated"] += 1
                raise BadReply(f"truncated reply from unit {unit}: {len(buf)} byte(s) then silence ({buf[:16].hex(' ')})")
            self.counters["timeouts"] += 1
            if adaptive:
                self.timeouts.timed_out(unit, fc)
            raise DeviceTimeout(f"no reply from unit {unit} within {timeout * 1000:.0f} ms")
        self.counters["stale_bytes"] += parsed.stale
        if not hasattr(parsed, "pdu"):  # Broken
            self._fail(pending, parsed.counter, parsed.message)
        else:
            self._deliver(pending, parsed)
        reply = pending.future.result()  # raises the BadReply of a broken or undecodable reply
        if adaptive:
            self.timeouts.observe(unit, fc, last_rx - self._tx_end - pending.reply_len * self.char_time)
        return reply
