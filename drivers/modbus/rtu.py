"""Modbus RTU/ASCII on an RS-485 line: one owner task schedules every byte on the wire.

Many slaves share one slow, half-duplex line.  ``ModbusRtuLine`` owns the
port and runs requests strictly one at a time from a priority queue
(commands before polls, first come first served within a priority).  The
pieces it runs on:

``rtu_transaction``  one request/response on the port: the 3.5-character gap,
                     the frame, the reply's end, the timeout (and why it is
                     hand-written rather than pymodbus' serial client);
``rtu_timeouts``     each slave's reply timeout, learned per function code;
``rtu_slaves``       per-slave backoff, quarantine and re-probes.

A port that vanishes (USB unplugged, read errors) is reopened with jittered
backoff; meanwhile every request fails fast as "unreachable", and the slaves
are not blamed for it.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from core.backoff import Backoff, FailureLog
from core.tasks import cancel_and_wait
from drivers.errors import DeviceError, DeviceUnreachable
from drivers.modbus.device import ModbusDevice
from drivers.modbus.rtu_process import WorkerPort, WorkerWire, pipeline_depth
from drivers.modbus.rtu_slaves import SlavePolicy, Slaves
from drivers.modbus.rtu_timeouts import TimeoutBounds
from drivers.modbus.rtu_transaction import Framer, PortLost, RtuWire, WaitPlan
from drivers.serial_line.port import AsyncSerialPort, PortError
from drivers.serial_line.settings import SerialSettings

log = logging.getLogger("canopy.modbus.rtu")

COMMAND = 0
POLL = 10
SCAN = 20
# The priority of requests made from the current task; RtuDevice.write raises it.
request_priority: contextvars.ContextVar[int] = contextvars.ContextVar("canopy_rtu_priority", default=POLL)

RequestFn = Callable[[Any], Awaitable[Any]]


@dataclass(slots=True)
class _Job:
    priority: int
    fn: RequestFn
    plan: WaitPlan
    unit: int | None
    future: asyncio.Future


class ModbusRtuLine:
    """The owner of one serial port: a priority queue of requests, run one at a time on the wire.

    One engine, hand-written (``rtu_transaction``): pymodbus' serial client does not keep the
    3.5-character gap before a request, which strict slaves need, and reports every bad reply
    as a timeout.  Request functions still use pymodbus' client methods and PDU classes.
    """

    def __init__(self, port: str, settings: SerialSettings | None = None, *, framer: Framer = "rtu",
                 timeout: float = 0.5, timeout_floor: float = 0.04, quarantine_after: int = 3,
                 reprobe_interval: float = 30.0,
                 slave_backoff_initial: float = 1.0, slave_backoff_max: float = 10.0,
                 backoff_initial: float = 1.0, backoff_max: float = 30.0,
                 name: str | None = None, clock: Any = None, process: bool = False):
        # ``clock`` is unused: the wire is timed with time.monotonic(), never with simulated time.
        # ``timeout``: the ceiling of a slave's learned reply timeout (and the fixed one of untracked
        # requests); ``timeout_floor``: what a slave gets at least past t3.5 and its reply's wire time.
        if framer not in ("rtu", "ascii"):
            raise ValueError(f"framer must be 'rtu' or 'ascii', not {framer!r}")
        self.port = port
        self.settings = settings or SerialSettings()
        self.framer = framer
        self.timeout = timeout
        self.name = name or port
        self.char_time = self.settings.char_time
        self.counters = collections.Counter()
        self.started = time.monotonic()
        # ``process``: a worker process owns the port and keeps the timing (rtu_worker, rtu_process)
        self.process = process
        self.wire = (WorkerWire if process else RtuWire)(self.settings, framer, self.counters,
                                                         TimeoutBounds(timeout, self.settings.t35 + timeout_floor))
        self.slaves = Slaves(SlavePolicy(max(1, quarantine_after), reprobe_interval,
                                         slave_backoff_initial, slave_backoff_max), self.name)
        self._backoff = Backoff(backoff_initial, backoff_max)
        self._fail = FailureLog(log, f"serial port {port} ({self.name})")
        # (priority, seq, job): tuples compare in C; bounded by the devices, one request each
        self._queue: asyncio.PriorityQueue[tuple[int, int, _Job]] | None = None
        self._plans: dict[tuple[float, bool, str | None], WaitPlan] = {}  # a handful: shared, not built per request
        self._seq = itertools.count()
        self._task: asyncio.Task | None = None
        self._idle = asyncio.Event()  # no request on the wire (or in the worker)
        self._idle.set()
        self._busy = 0
        self._slots = asyncio.Semaphore(pipeline_depth(self.settings))  # requests in the worker at once (process mode)
        self._jobs: set[asyncio.Task] = set()
        self._closed = False
        self._port: AsyncSerialPort | None = None
        self._reopen_at = 0.0
        self._port_error: str | None = None

    @property
    def gap(self) -> float:
        """The inter-frame silence kept before each request (t3.5), in seconds."""
        return self.wire.gap

    @gap.setter
    def gap(self, value: float) -> None:
        self.wire.gap = value

    # -- public API -----------------------------------------------------------------------
    def slave(self, unit: int, device: str | None = None) -> "SlaveTransport":
        self.slaves.get(unit, device)
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
        slave = self.slaves.get(unit) if unit is not None else None
        if slave is None:
            plan = self._plan(timeout or self.timeout, False, None)  # untracked (scans, probes): the fixed timeout
        else:
            probing = self.slaves.admit(slave, now, command=prio <= COMMAND)
            plan = self._plan(timeout or self.timeout, True, slave.probe_wait() if probing else None)
        self._start()
        fut = asyncio.get_running_loop().create_future()
        job = _Job(prio, request_fn, plan, unit, fut)
        if self.process and self._queue.empty() and not self._slots.locked():
            run = self._direct(job)  # nothing queued ahead, room in the worker: no hop through the owner
        else:
            self._queue.put_nowait((prio, next(self._seq), job))
            run = fut
        if slave is None:
            return await run
        slave.requests += 1
        t0 = time.monotonic()
        try:
            result = await run
        except DeviceError as exc:
            self.slaves.failed(slave, exc, time.monotonic())
            raise
        self.slaves.succeeded(slave, time.monotonic() - t0, result)
        return result

    def _plan(self, ceiling: float, adaptive: bool, probe) -> WaitPlan:
        key = (ceiling, adaptive, probe)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = WaitPlan(ceiling, adaptive, probe)
        return plan

    async def close(self) -> None:
        """Stop: queued requests fail as unreachable; a transaction on the wire is allowed to finish
        (bounded by its timeout), so its reply cannot collide with whoever opens the port next."""
        self._closed = True
        self._fail_queued()
        if self._task is not None and not self._idle.is_set():
            try:
                await asyncio.wait_for(self._idle.wait(), timeout=self.wire.plan.ceiling + 0.2)
            except asyncio.TimeoutError:
                pass
        await cancel_and_wait(self._task)
        self._task = None
        for task in list(self._jobs):
            await cancel_and_wait(task)
        self._fail_queued()
        port = self._port
        self._close_port()
        if isinstance(port, WorkerPort):
            await port.wait_closed()  # the worker has exited when the line says it is closed
        self.wire.close()

    def _fail_queued(self) -> None:
        while self._queue is not None and not self._queue.empty():
            job = self._queue.get_nowait()[2]
            if not job.future.done():
                job.future.set_exception(DeviceUnreachable(f"line {self.name} closed"))

    def stats(self) -> dict:
        now = time.monotonic()
        wire = self.wire
        util, wire_util = wire.window.rates(now, self.started)
        learned = wire.timeouts.as_dict()
        c = self.counters
        return {
            "type": "modbus_rtu" if self.framer == "rtu" else "modbus_ascii",
            "port": self.port,
            "settings": str(self.settings),
            "framer": self.framer,
            "engine": "raw",  # the status format of docs/protocol.md; there is no other engine
            "process": self.process,  # a worker process keeps the timing; its starts and deaths are counted
            **({k: c[k] for k in ("worker_starts", "worker_deaths")} if self.process else {}),
            "state": self._state(),
            "port_error": self._port_error,
            "opens": c["opens"],
            "port_failures": c["port_failures"],
            "char_time_ms": round(self.char_time * 1000, 4),
            "gap_ms": round(self.gap * 1000, 4),
            "uptime_s": round(now - self.started, 1),
            "busy_s": round(wire.busy_s, 3),
            "wire_s": round(wire.wire_s, 3),
            "utilisation": round(util, 4),  # line occupied (request..reply or timeout, + gap) / wall, last 60 s
            "wire_utilisation": round(wire_util, 4),  # characters on the wire / wall, last 60 s
            "utilisation_total": round(min(1.0, wire.busy_s / max(1e-9, now - self.started)), 4),
            "queue": self._queue.qsize() if self._queue is not None else 0,
            **{k: c[k] for k in ("transactions", "replies", "timeouts", "crc_errors", "garbled", "truncated",
                                 "exceptions", "stale_bytes", "commands")},
            "reaction_ms": wire.reaction_ms(),
            "slaves": {u: {**s, "reply_timeouts": learned.get(int(u), {})} for u, s in self.slaves.as_dict(now).items()},
        }

    def _state(self) -> str:
        if self._is_open():
            if getattr(self._port, "opened", True):
                return "open"
            return "reopening" if self._fail.failures else "opening"  # a worker not yet on its port
        return "closed" if self._closed else "reopening" if self._port_error else "idle"

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
            if self.process:  # a slot first, so a command queued meanwhile still goes first
                await self._slots.acquire()
            job = (await self._queue.get())[2]
            if job.future.done() or self._closed:  # the caller gave up while queued, or the line closed
                _settle(job.future, DeviceUnreachable(f"line {self.name} closed"))
                if self.process:
                    self._slots.release()
                continue
            self._busy += 1
            self._idle.clear()
            if self.process:  # pipelined: the next request waits in the worker, not behind the loop
                task = asyncio.get_running_loop().create_task(self._guarded(job))
                self._jobs.add(task)
                task.add_done_callback(self._job_done)
            else:
                try:
                    await self._guarded(job)
                finally:
                    self._job_done()

    async def _direct(self, job: _Job) -> Any:
        """Process mode: run the request from the caller's task when nothing is queued ahead of it and
        the worker has room; two task steps fewer per request than through the owner (less CPU, and
        the next request reaches the worker sooner on a busy loop).  The order on the wire is the
        same: a request only goes direct when no other waits."""
        await self._slots.acquire()  # free (checked by the caller): returns at once
        self._busy += 1
        self._idle.clear()
        try:
            await self._guarded(job)
        finally:
            self._slots.release()
            self._job_done()
        return job.future.result()

    def _job_done(self, task: asyncio.Task | None = None) -> None:
        self._busy -= 1
        if task is not None:
            self._jobs.discard(task)
            self._slots.release()
        if not self._busy:
            self._idle.set()

    async def _guarded(self, job: _Job) -> None:
        try:
            await self._run_job(job)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug here must not stop the line: every caller would hang
            log.exception("%s: line owner failed on a request", self.name)
            _settle(job.future, DeviceUnreachable(f"line {self.name} internal error: {exc}"))

    async def _run_job(self, job: _Job) -> None:
        try:
            self._ensure_open()
        except DeviceUnreachable as exc:
            job.future.set_exception(exc)
            return
        self.wire.plan = job.plan
        if job.priority == COMMAND:
            self.counters["commands"] += 1
        try:
            result = await job.fn(self.wire.client)
        except DeviceError as exc:
            _settle(job.future, exc)
        except PortLost as exc:
            if self._port_error is None:  # else already reported through on_lost (and its restart kept)
                self._port_lost(str(exc))
            _settle(job.future, DeviceUnreachable(f"{self.port}: {exc}"))
        except asyncio.CancelledError:
            _settle(job.future, DeviceUnreachable(f"line {self.name} closed"))
            raise
        except Exception as exc:  # a bad request (e.g. count out of range): the caller's problem
            _settle(job.future, exc)
        else:
            if not job.future.done():
                job.future.set_result(result)

    # -- port lifecycle ---------------------------------------------------------------------------
    def _is_open(self) -> bool:
        return self._port is not None and self._port.is_open

    def _ensure_open(self) -> None:
        if self._is_open():
            return
        now = time.monotonic()
        if self._port_error is not None and now < self._reopen_at:
            raise DeviceUnreachable(f"{self.port}: {self._port_error}; reopening in {self._reopen_at - now:.1f}s")
        self._close_port()
        try:
            if self.process:
                port = WorkerPort(self.port, self.settings, framer=self.framer, floor=self.wire.timeouts.bounds.floor,
                                  on_lost=self._on_port_lost, on_open=self._port_opened)
                self.counters["worker_starts"] += 1
            else:
                port = AsyncSerialPort(self.port, self.settings, on_data=self.wire.on_data, on_lost=self._on_port_lost)
            port.open()
        except PortError as exc:
            self._port_lost(str(exc), opening=True)
            raise DeviceUnreachable(f"{self.port}: {exc}") from None
        self._port = self.wire.port = port
        self._port_error = self.wire.port_error = None
        self.wire.fresh_line()
        if not self.process:  # a worker says when it has opened the port (it may fail to)
            self._port_opened()

    def _port_opened(self) -> None:
        self.counters["opens"] += 1
        if self._fail.failures:
            log.info("%s: port %s reopened", self.name, self.port)
        self._backoff.reset()
        self._fail.recovered()

    def _on_port_lost(self, reason: str) -> None:
        self.wire.port_lost(reason)
        died = self.process and getattr(self._port, "died", False)
        if died:
            self.counters["worker_deaths"] += 1
        # a worker that died with the port open is restarted at once; one that cannot start backs off
        self._port_lost(reason, restart_now=died and self._port.opened)

    def _port_lost(self, reason: str, opening: bool = False, restart_now: bool = False) -> None:
        if self._port_error is None or opening:
            self.counters["port_failures"] += 1
            self._fail.failed(reason)
        self._port_error = self.wire.port_error = reason
        self._reopen_at = time.monotonic() + (0.0 if restart_now else self._backoff.next())
        self._close_port()

    def _close_port(self) -> None:
        if self._port is not None:
            self._port.close()
            self._port = self.wire.port = None


def _settle(future: asyncio.Future, exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


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
