"""Modbus RTU/ASCII on an RS-485 line: one owner task schedules every byte on the wire.

Many slaves share one slow, half-duplex line.  ``ModbusRtuLine`` owns the
port and runs requests strictly one at a time from a priority queue
(commands before polls, first come first served within a priority), and
before each request waits until the line has been silent for the
inter-frame gap (3.5 characters; 1.75 ms above 19200 baud) - counted from
the last byte actually seen, so a garbled reply that keeps trickling in
pushes the next request back instead of colliding with it.  No other sleep
exists on the hot path: a reply is complete the moment its last byte (by
its length) has arrived.

Dead slaves cost little: each slave has a failure count; after a failure
its next attempts wait out a jittered exponential backoff (failing fast
meanwhile), and after ``quarantine_after`` failures in a row it is
quarantined: its polls fail at once with ``DeviceQuarantined`` and cost no
wire time, except one re-probe per ``reprobe_interval``; it returns as soon
as a probe is answered.  A Modbus exception reply counts as alive.

A port that vanishes (USB unplugged, read errors) is reopened with jittered
backoff; meanwhile every request fails fast as "unreachable".

Two engines, same scheduler:
``raw``      (default) frames with ``drivers.modbus.framing`` on an
             ``AsyncSerialPort`` and decodes PDUs with pymodbus' own classes.
             Knows when a reply ends, counts CRC/garbled/truncated replies,
             per-request timeouts.
``pymodbus`` ``AsyncModbusSerialClient`` (created inside the running loop);
             kept for comparison in ``bench/rtu_bus.py``: CRC errors show up
             as timeouts there, and it adds per-transaction overhead.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pymodbus.client.mixin import ModbusClientMixin
from pymodbus.pdu import DecodePDU, ModbusPDU

from core.backoff import Backoff, FailureLog
from core.tasks import cancel_and_wait
from drivers.errors import BadReply, DeviceError, DeviceQuarantined, DeviceTimeout, DeviceUnreachable
from drivers.modbus import framing
from drivers.modbus.device import ModbusDevice
from drivers.serial_line.port import AsyncSerialPort, PortError
from drivers.serial_line.settings import SerialSettings

log = logging.getLogger("canopy.modbus.rtu")
logging.getLogger("pymodbus").setLevel(logging.CRITICAL)

COMMAND = 0
POLL = 10
SCAN = 20
Framer = Literal["rtu", "ascii"]
Engine = Literal["raw", "pymodbus"]

# The priority of requests made from the current task; RtuDevice.write raises it.
request_priority: contextvars.ContextVar[int] = contextvars.ContextVar("canopy_rtu_priority", default=POLL)

RequestFn = Callable[[Any], Awaitable[Any]]


class PortLost(Exception):
    """The port failed under a request."""


# -- statistics ---------------------------------------------------------------------------
class _Window:
    """Seconds of activity per wall-clock second, for the last ``span`` seconds."""

    def __init__(self, span: int = 60):
        self.span = span
        self.buckets: collections.deque[list] = collections.deque()  # [second, busy, wire]

    def add(self, t: float, busy: float, wire: float) -> None:
        sec = int(t)
        if self.buckets and self.buckets[-1][0] == sec:
            b = self.buckets[-1]
            b[1] += busy
            b[2] += wire
        else:
            self.buckets.append([sec, busy, wire])
        while self.buckets and self.buckets[0][0] <= sec - self.span:
            self.buckets.popleft()

    def rates(self, now: float, started: float) -> tuple[float, float]:
        lo = int(now) - self.span
        busy = sum(b[1] for b in self.buckets if b[0] > lo)
        wire = sum(b[2] for b in self.buckets if b[0] > lo)
        wall = max(1e-9, min(float(self.span), now - started))
        return min(1.0, busy / wall), min(1.0, wire / wall)


@dataclass
class SlaveState:
    unit: int
    device: str | None = None
    requests: int = 0
    ok: int = 0
    failures: int = 0  # timeouts, CRC errors, garbled or truncated replies
    exceptions: int = 0  # Modbus exception replies (the slave is alive)
    skipped: int = 0  # requests failed fast (backoff or quarantine), no wire time
    consecutive: int = 0
    quarantined: bool = False
    quarantines: int = 0
    retry_at: float = 0.0
    next_probe_at: float = 0.0
    last_error: str = ""
    last_error_type: type[DeviceError] = DeviceTimeout
    latencies: collections.deque = field(default_factory=lambda: collections.deque(maxlen=64))
    backoff: Backoff | None = None

    def state(self, now: float) -> str:
        if self.quarantined:
            return "quarantined"
        if self.consecutive and now < self.retry_at:
            return "backoff"
        if self.consecutive:
            return "failing"
        return "ok" if self.ok or self.exceptions else "unknown"

    def as_dict(self, now: float) -> dict:
        attempts = self.ok + self.failures + self.exceptions
        lat = sorted(self.latencies)
        d = {
            "device": self.device,
            "state": self.state(now),
            "requests": self.requests,
            "ok": self.ok,
            "failures": self.failures,
            "exceptions": self.exceptions,
            "skipped": self.skipped,
            "success_rate": round((self.ok + self.exceptions) / attempts, 4) if attempts else None,
            "consecutive_failures": self.consecutive,
            "quarantines": self.quarantines,
            "latency_ms": {
                "last": round(self.latencies[-1] * 1000, 2),
                "avg": round(sum(lat) / len(lat) * 1000, 2),
                "p95": round(lat[min(len(lat) - 1, int(0.95 * len(lat)))] * 1000, 2),
            } if lat else None,
        }
        if self.quarantined:
            d["next_probe_in_s"] = round(max(0.0, self.next_probe_at - now), 2)
        if self.last_error:
            d["last_error"] = self.last_error
        return d


@dataclass(order=True)
class _Job:
    priority: int
    seq: int
    fn: RequestFn = field(compare=False)
    timeout: float = field(compare=False)
    unit: int | None = field(compare=False)
    future: asyncio.Future = field(compare=False)


@dataclass
class _Expect:
    """The reply the line is waiting for."""

    unit: int
    fc: int
    future: asyncio.Future
    buf: bytearray = field(default_factory=bytearray)
    reply_len: int = 0


class _LineClient(ModbusClientMixin):
    """What request functions see: pymodbus' request methods (``device_id=``, keyword-only ``count=``),
    executed on the line by the raw engine."""

    def __init__(self, line: "ModbusRtuLine"):
        super().__init__()
        self._line = line

    def execute(self, no_response_expected: bool, request: ModbusPDU):  # type: ignore[override]
        return self._line._transact(request, no_response_expected)


# -- the line -----------------------------------------------------------------------------
class ModbusRtuLine:
    def __init__(self, port: str, settings: SerialSettings | None = None, *, framer: Framer = "rtu",
                 timeout: float = 0.5, quarantine_after: int = 5, reprobe_interval: float = 30.0,
                 slave_backoff_initial: float = 1.0, slave_backoff_max: float = 10.0,
                 backoff_initial: float = 1.0, backoff_max: float = 30.0, engine: Engine = "raw",
                 name: str | None = None, clock: Any = None):
        if framer not in ("rtu", "ascii"):
            raise ValueError(f"framer must be 'rtu' or 'ascii', not {framer!r}")
        if engine not in ("raw", "pymodbus"):
            raise ValueError(f"engine must be 'raw' or 'pymodbus', not {engine!r}")
        self.port = port
        self.settings = settings or SerialSettings()
        self.framer = framer
        self.timeout = timeout
        self.quarantine_after = max(1, quarantine_after)
        self.reprobe_interval = reprobe_interval
        self.slave_backoff_initial = slave_backoff_initial
        self.slave_backoff_max = slave_backoff_max
        self.engine = engine
        self.name = name or port
        self.gap = self.settings.t35
        self.char_time = self.settings.char_time
        self._backoff = Backoff(backoff_initial, backoff_max)
        self._fail = FailureLog(log, f"serial port {port} ({self.name})")
        self._queue: asyncio.PriorityQueue[_Job] | None = None
        self._seq = itertools.count()
        self._task: asyncio.Task | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._closed = False
        self._slaves: dict[int, SlaveState] = {}
        # port
        self._port: AsyncSerialPort | None = None
        self._pm_client = None  # pymodbus engine
        self._reopen_at = 0.0
        self._port_error: str | None = None
        self._decoder = DecodePDU(is_server=False)
        self._client = _LineClient(self)
        # timing of the wire
        self._last_rx = 0.0
        self._tx_end = 0.0
        self._expect: _Expect | None = None
        self._timeout_now = timeout
        self._pm_tx = 0
        # counters
        self.started = time.monotonic()
        self.counters = collections.Counter()
        self.busy_s = 0.0
        self.wire_s = 0.0
        self._window = _Window()

    # -- public API -----------------------------------------------------------------------
    def slave(self, unit: int, device: str | None = None) -> "SlaveTransport":
        st = self._slaves.setdefault(unit, SlaveState(unit))
        st.device = device or st.device
        return SlaveTransport(self, unit)

    async def execute(self, request_fn: RequestFn, timeout: float | None = None, priority: int | None = None,
                      *, unit: int | None = None) -> Any:
        """Run ``request_fn(client)`` on the line when its turn comes; map failures to DeviceErrors.

        ``priority``: COMMAND (0) before POLL (10) before SCAN (20); default from
        ``request_priority`` (POLL unless a command is running).  ``unit``: the slave
        addressed, for failure tracking and quarantine (None: untracked, e.g. scans).
        """
        if self._closed:
            raise DeviceUnreachable(f"line {self.name} is closed")
        prio = request_priority.get() if priority is None else priority
        now = time.monotonic()
        if self._port_error is not None and now < self._reopen_at:
            self.counters["fast_fail_unreachable"] += 1
            raise DeviceUnreachable(f"{self.port}: {self._port_error}; reopening in {self._reopen_at - now:.1f}s")
        slave = self._slaves.setdefault(unit, SlaveState(unit)) if unit is not None else None
        probe = False
        if slave is not None and prio > COMMAND:
            if slave.quarantined:
                if now < slave.next_probe_at:
                    slave.skipped += 1
                    raise DeviceQuarantined(f"unit {unit} quarantined ({slave.last_error}); "
                                            f"next re-probe in {slave.next_probe_at - now:.1f}s")
                slave.next_probe_at = now + self.reprobe_interval  # this request is the probe
                probe = True
            elif slave.consecutive and now < slave.retry_at:
                slave.skipped += 1
                raise slave.last_error_type(f"{slave.last_error} (backing off, next try in {slave.retry_at - now:.2f}s)")
        self._start()
        fut = asyncio.get_running_loop().create_future()
        job = _Job(prio, next(self._seq), request_fn, timeout or self.timeout, unit, fut)
        self._queue.put_nowait(job)
        if slave is not None:
            slave.requests += 1
        t0 = time.monotonic()
        try:
            result = await fut
        except DeviceError as exc:
            if slave is not None:
                self._slave_failed(slave, exc, probe)
            raise
        if slave is not None:
            self._slave_ok(slave, time.monotonic() - t0, result)
        return result

    async def close(self) -> None:
        """Stop: queued requests fail as unreachable; a transaction on the wire is allowed to finish
        (bounded by its timeout), so its reply cannot collide with whoever opens the port next."""
        self._closed = True
        if self._queue is not None:
            while not self._queue.empty():
                job = self._queue.get_nowait()
                if not job.future.done():
                    job.future.set_exception(DeviceUnreachable(f"line {self.name} closed"))
        if self._task is not None and not self._idle.is_set():
            try:
                await asyncio.wait_for(self._idle.wait(), timeout=self._timeout_now + 0.2)
            except asyncio.TimeoutError:
                pass
        await cancel_and_wait(self._task)
        self._task = None
        if self._queue is not None:
            while not self._queue.empty():
                job = self._queue.get_nowait()
                if not job.future.done():
                    job.future.set_exception(DeviceUnreachable(f"line {self.name} closed"))
        self._close_port()

    def stats(self) -> dict:
        now = time.monotonic()
        util, wire_util = self._window.rates(now, self.started)
        c = self.counters
        return {
            "type": "modbus_rtu" if self.framer == "rtu" else "modbus_ascii",
            "port": self.port,
            "settings": str(self.settings),
            "framer": self.framer,
            "engine": self.engine,
            "state": "open" if self._is_open() else ("closed" if self._closed else "reopening" if self._port_error else "idle"),
            "port_error": self._port_error,
            "opens": c["opens"],
            "port_failures": c["port_failures"],
            "char_time_ms": round(self.char_time * 1000, 4),
            "gap_ms": round(self.gap * 1000, 4),
            "uptime_s": round(now - self.started, 1),
            "busy_s": round(self.busy_s, 3),
            "wire_s": round(self.wire_s, 3),
            "utilisation": round(util, 4),  # line occupied (request..reply or timeout, + gap) / wall, last 60 s
            "wire_utilisation": round(wire_util, 4),  # characters on the wire / wall, last 60 s
            "utilisation_total": round(min(1.0, self.busy_s / max(1e-9, now - self.started)), 4),
            "queue": self._queue.qsize() if self._queue is not None else 0,
            "transactions": c["transactions"],
            "replies": c["replies"],
            "timeouts": c["timeouts"],
            "crc_errors": c["crc_errors"],
            "garbled": c["garbled"],
            "truncated": c["truncated"],
            "exceptions": c["exceptions"],
            "stale_bytes": c["stale_bytes"],
            "commands": c["commands"],
            "slaves": {str(u): s.as_dict(now) for u, s in sorted(self._slaves.items())},
        }

    # -- slave bookkeeping ----------------------------------------------------------------------
    def _slave_ok(self, slave: SlaveState, latency: float, reply: Any) -> None:
        if getattr(reply, "isError", None) is not None and reply.isError():
            slave.exceptions += 1
        else:
            slave.ok += 1
        slave.latencies.append(latency)
        if slave.quarantined:
            log.info("%s: unit %s%s answers again; back from quarantine", self.name, slave.unit,
                     f" ({slave.device})" if slave.device else "")
        slave.quarantined = False
        slave.consecutive = 0
        slave.retry_at = 0.0
        slave.last_error = ""
        if slave.backoff is not None:
            slave.backoff.reset()

    def _slave_failed(self, slave: SlaveState, exc: DeviceError, probe: bool) -> None:
        if isinstance(exc, (DeviceUnreachable, DeviceQuarantined)):
            return  # the port's fault, not the slave's
        now = time.monotonic()
        slave.failures += 1
        slave.consecutive += 1
        slave.last_error = f"{exc.status}: {exc}"
        slave.last_error_type = type(exc)
        who = f"unit {slave.unit}" + (f" ({slave.device})" if slave.device else "")
        if slave.quarantined:
            slave.next_probe_at = now + self.reprobe_interval
            raise DeviceQuarantined(f"{who} still not answering at re-probe ({exc}); next in {self.reprobe_interval:g}s") from None
        if slave.consecutive >= self.quarantine_after:
            slave.quarantined = True
            slave.quarantines += 1
            slave.next_probe_at = now + self.reprobe_interval
            log.warning("%s: %s quarantined after %d consecutive failures (%s); re-probing every %gs",
                        self.name, who, slave.consecutive, exc, self.reprobe_interval)
            raise DeviceQuarantined(f"{who} quarantined after {slave.consecutive} consecutive failures "
                                    f"(last: {exc}); re-probe every {self.reprobe_interval:g}s") from None
        if slave.backoff is None:
            slave.backoff = Backoff(self.slave_backoff_initial, self.slave_backoff_max)
        slave.retry_at = now + slave.backoff.next()

    # -- the owner task -------------------------------------------------------------------------
    def _start(self) -> None:
        if self._task is not None and self._task.done():
            self._task = None  # ended unexpectedly: start a new owner
        if self._task is None:
            if self._queue is None:
                self._queue = asyncio.PriorityQueue()
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"rtu-line-{self.name}")

    async def _run(self) -> None:
        assert self._queue is not None
        while True:
            job = await self._queue.get()
            if job.future.done():  # the caller gave up while queued
                continue
            if self._closed:
                job.future.set_exception(DeviceUnreachable(f"line {self.name} closed"))
                continue
            self._idle.clear()
            try:
                await self._run_job(job)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug here must not stop the line: every caller would hang
                log.exception("%s: line owner failed on a request", self.name)
                if not job.future.done():
                    job.future.set_exception(DeviceUnreachable(f"line {self.name} internal error: {exc}"))
            finally:
                self._idle.set()

    async def _run_job(self, job: _Job) -> None:
        try:
            await self._ensure_open()
        except DeviceUnreachable as exc:
            job.future.set_exception(exc)
            return
        self._timeout_now = job.timeout
        if job.priority == COMMAND:
            self.counters["commands"] += 1
        try:
            if self.engine == "raw":
                result = await job.fn(self._client)
            else:
                result = await self._pm_execute(job)
        except DeviceError as exc:
            if not job.future.done():
                job.future.set_exception(exc)
        except PortLost as exc:
            self._port_lost(str(exc))
            if not job.future.done():
                job.future.set_exception(DeviceUnreachable(f"{self.port}: {exc}"))
        except asyncio.CancelledError:
            if not job.future.done():
                job.future.set_exception(DeviceUnreachable(f"line {self.name} closed"))
            raise
        except Exception as exc:  # a bad request (e.g. count out of range): the caller's problem
            if not job.future.done():
                job.future.set_exception(exc)
        else:
            if not job.future.done():
                job.future.set_result(result)

    # -- port lifecycle ---------------------------------------------------------------------------
    def _is_open(self) -> bool:
        if self.engine == "raw":
            return self._port is not None and self._port.is_open
        return self._pm_client is not None and self._pm_client.connected

    async def _ensure_open(self) -> None:
        if self._is_open():
            return
        now = time.monotonic()
        if self._port_error is not None and now < self._reopen_at:
            raise DeviceUnreachable(f"{self.port}: {self._port_error}; reopening in {self._reopen_at - now:.1f}s")
        self._close_port()
        try:
            if self.engine == "raw":
                port = AsyncSerialPort(self.port, self.settings, on_data=self._on_data, on_lost=self._on_port_lost)
                port.open()
                self._port = port
            else:
                await self._pm_open()
        except PortError as exc:
            self._port_lost(str(exc), opening=True)
            raise DeviceUnreachable(f"{self.port}: {exc}") from None
        self.counters["opens"] += 1
        if self._port_error is not None:
            log.info("%s: port %s reopened", self.name, self.port)
        self._port_error = None
        self._backoff.reset()
        self._fail.recovered()
        self._last_rx = self._tx_end = time.monotonic()  # a fresh line: keep one gap of silence

    def _on_port_lost(self, reason: str) -> None:
        exp = self._expect
        if exp is not None and not exp.future.done():
            exp.future.set_exception(PortLost(reason))
        self._port_lost(reason)

    def _port_lost(self, reason: str, opening: bool = False) -> None:
        if self._port_error is None or opening:
            self.counters["port_failures"] += 1
            self._fail.failed(reason)
        self._port_error = reason
        self._reopen_at = time.monotonic() + self._backoff.next()
        self._close_port()

    def _close_port(self) -> None:
        if self._port is not None:
            self._port.close()
            self._port = None
        if self._pm_client is not None:
            self._pm_client.close()
            self._pm_client = None

    # -- the raw engine: one transaction --------------------------------------------------------
    def _on_data(self, data: bytes, t: float) -> None:
        self._last_rx = t
        exp = self._expect
        if exp is None or exp.future.done():
            self.counters["stale_bytes"] += len(data)  # noise, or the tail of a reply we gave up on
            return
        exp.buf += data
        if self.framer == "rtu":
            self._parse_rtu(exp)
        else:
            self._parse_ascii(exp)

    def _fail_reply(self, exp: _Expect, counter: str, message: str) -> None:
        self.counters[counter] += 1
        exp.future.set_exception(BadReply(message))

    def _parse_rtu(self, exp: _Expect) -> None:
        buf = exp.buf
        if len(buf) < 2:
            return
        if buf[0] != exp.unit or (buf[1] & 0x7F) != exp.fc:
            self._fail_reply(exp, "garbled", f"garbled reply from unit {exp.unit}: {bytes(buf[:16]).hex(' ')}")
            return
        need = framing.rtu_response_length(buf)
        if need is None:
            return
        if need < 0:
            need = len(buf)  # unknown length: take what came in one piece (rare functions only)
        if len(buf) < need:
            return
        frame = bytes(buf[:need])
        if len(buf) > need:
            self.counters["stale_bytes"] += len(buf) - need
        if not framing.rtu_crc_ok(frame):
            self._fail_reply(exp, "crc_errors", f"CRC error in reply from unit {exp.unit}")
            return
        self._deliver(exp, frame[1:-2], len(frame))

    def _parse_ascii(self, exp: _Expect) -> None:
        buf = exp.buf
        start = buf.find(b":")
        if start < 0:
            if len(buf) > framing.ASCII_MAX:
                self._fail_reply(exp, "garbled", f"no ASCII frame start in {len(buf)} bytes from unit {exp.unit}")
            return
        end = buf.find(b"\r\n", start)
        if end < 0:
            if len(buf) - start > framing.ASCII_MAX:
                self._fail_reply(exp, "garbled", f"overlong ASCII frame from unit {exp.unit}")
            return
        try:
            raw = framing.ascii_decode(bytes(buf[start:end + 2]))
        except framing.FrameError as exc:
            self._fail_reply(exp, "crc_errors" if "LRC" in str(exc) else "garbled", f"unit {exp.unit}: {exc}")
            return
        if raw[0] != exp.unit or (raw[1] & 0x7F) != exp.fc:
            self._fail_reply(exp, "garbled", f"garbled reply from unit {exp.unit}: {raw[:16].hex(' ')}")
            return
        self._deliver(exp, raw[1:], end + 2 - start)

    def _deliver(self, exp: _Expect, pdu_bytes: bytes, frame_len: int) -> None:
        try:
            pdu = self._decoder.decode(pdu_bytes)
        except Exception as exc:  # pymodbus raises assorted errors on nonsense
            pdu = None
            why = str(exc)
        else:
            why = "undecodable"
        if pdu is None:
            self._fail_reply(exp, "garbled", f"unit {exp.unit}: {why} reply {pdu_bytes[:16].hex(' ')}")
            return
        pdu.dev_id = exp.unit
        exp.reply_len = frame_len
        if pdu.isError():
            self.counters["exceptions"] += 1
        self.counters["replies"] += 1
        exp.future.set_result(pdu)

    async def _wait_silence(self) -> None:
        """Until the line has been quiet for one inter-frame gap (re-checked: late bytes push it back)."""
        while True:
            delay = max(self._last_rx, self._tx_end) + self.gap - time.monotonic()
            if delay <= 0:
                return
            await asyncio.sleep(delay)

    async def _transact(self, request: ModbusPDU, no_response_expected: bool) -> ModbusPDU | None:
        port = self._port
        if port is None or not port.is_open:
            raise PortLost(self._port_error or "port not open")
        await self._wait_silence()
        unit, fc = request.dev_id, request.function_code
        pdu = bytes((fc,)) + request.encode()
        frame = framing.rtu_encode(unit, pdu) if self.framer == "rtu" else framing.ascii_encode(unit, pdu)
        loop = asyncio.get_running_loop()
        exp = _Expect(unit, fc, loop.create_future())
        self._expect = exp
        try:
            t_send = port.write(frame)
        except PortError as exc:
            self._expect = None
            raise PortLost(str(exc)) from None
        req_wire = len(frame) * self.char_time
        self._tx_end = t_send + req_wire
        self.counters["transactions"] += 1
        if no_response_expected or unit == 0:
            self._expect = None
            await asyncio.sleep(max(0.0, self._tx_end - time.monotonic()))
            self._account(t_send, len(frame), 0)
            return None
        timer = loop.call_at(self._tx_end + self._timeout_now, self._expire, exp)
        try:
            return await exp.future
        finally:
            timer.cancel()
            self._expect = None
            self._account(t_send, len(frame), exp.reply_len or len(exp.buf))

    def _expire(self, exp: _Expect) -> None:
        if exp.future.done():
            return
        if exp.buf:
            self._fail_reply(exp, "truncated", f"truncated reply from unit {exp.unit}: {len(exp.buf)} byte(s) "
                                               f"then silence ({bytes(exp.buf[:16]).hex(' ')})")
        else:
            self.counters["timeouts"] += 1
            exp.future.set_exception(DeviceTimeout(f"no reply from unit {exp.unit} within {self._timeout_now:.3g}s"))

    def _account(self, t_send: float, tx_chars: int, rx_chars: int) -> None:
        now = time.monotonic()
        busy = now - t_send + self.gap
        wire = (tx_chars + rx_chars) * self.char_time
        self.busy_s += busy
        self.wire_s += wire
        self._window.add(now, busy, wire)

    # -- the pymodbus engine --------------------------------------------------------------------
    async def _pm_open(self) -> None:
        from pymodbus.client import AsyncModbusSerialClient
        from pymodbus.framer import FramerType

        from drivers.serial_line.port import termios_settings

        eff = termios_settings(self.port, self.settings)
        client = AsyncModbusSerialClient(
            self.port, framer=FramerType.RTU if self.framer == "rtu" else FramerType.ASCII,
            baudrate=eff.baudrate, bytesize=eff.bytesize, parity=eff.parity, stopbits=eff.stopbits,
            timeout=self.timeout, retries=0, reconnect_delay=0, trace_packet=self._pm_trace)
        try:
            ok = await asyncio.wait_for(client.connect(), timeout=5)
        except (asyncio.TimeoutError, OSError) as exc:
            client.close()
            raise PortError(f"cannot open {self.port}: {exc}") from None
        if not ok:
            client.close()
            raise PortError(f"cannot open {self.port}")
        self._pm_client = client

    def _pm_trace(self, sending: bool, data: bytes) -> bytes:
        now = time.monotonic()
        if sending:
            self._tx_end = now + len(data) * self.char_time
            self._pm_tx = len(data)
        else:
            self._last_rx = now
        return data

    async def _pm_execute(self, job: _Job) -> Any:
        from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

        client = self._pm_client
        await self._wait_silence()
        client.ctx.comm_params.timeout_connect = job.timeout
        self.counters["transactions"] += 1
        t0 = time.monotonic()
        self._pm_tx = 0
        try:
            reply = await asyncio.wait_for(job.fn(client), timeout=job.timeout + 0.5)
        except asyncio.TimeoutError:
            self.counters["timeouts"] += 1
            raise DeviceTimeout(f"no reply within {job.timeout:.3g}s") from None
        except ConnectionException as exc:
            raise PortLost(str(exc)) from None
        except ModbusIOException:
            if not client.connected:
                raise PortLost("connection lost") from None
            self.counters["timeouts"] += 1
            raise DeviceTimeout(f"no reply from unit {job.unit} within {job.timeout:.3g}s") from None
        except ModbusException as exc:
            self.counters["garbled"] += 1
            raise BadReply(f"invalid reply: {exc}") from None
        finally:
            self._account(t0, self._pm_tx, 0)
        self.counters["replies"] += 1
        if reply.isError():
            self.counters["exceptions"] += 1
        return reply


class SlaveTransport:
    """A ModbusDevice's view of the line: ``execute(fn, timeout)`` for one unit."""

    def __init__(self, line: ModbusRtuLine, unit: int):
        self.line = line
        self.unit = unit

    async def execute(self, request: RequestFn, timeout: float | None = None) -> Any:
        return await self.line.execute(request, timeout, unit=self.unit)


class RtuDevice(ModbusDevice):
    """A Modbus device on an RTU line: writes (commands) jump ahead of queued polls."""

    async def write(self, point_name: str, value) -> None:
        token = request_priority.set(COMMAND)
        try:
            await super().write(point_name, value)
        finally:
            request_priority.reset(token)
