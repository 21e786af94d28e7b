"""One Modbus RTU/ASCII transaction on the wire: the gap, the request frame, the reply's end, the timeout.

Before each request the wire waits until the line has been silent for the
inter-frame gap (3.5 characters; 1.75 ms above 19200 baud), counted from the
last byte actually seen, so a garbled reply that keeps trickling in pushes
the next request back instead of colliding with it; after a timeout it counts
from the moment the wait was given up, so a late reply cannot collide with
the next request.  The gap is waited on a ``PreciseTimer`` (a timerfd), not
``asyncio.sleep``, whose millisecond ticks would make every request late.
No other sleep exists on the hot path: a reply is complete the moment its
last byte (by its length) has arrived.  The timeout counts from the end of
the request on the wire: fixed (``WaitPlan.adaptive`` false: scans, probes)
or learned per slave and function code (``rtu_timeouts``); a reply still
arriving when it expires gets the floor's time past its last byte.

Why hand-written rather than pymodbus' ``AsyncModbusSerialClient``: pymodbus
does not wait the 3.5-character silence before sending the next request (a
strict slave drops such a request), reports CRC errors, garbled and truncated
replies all as timeouts, and costs ~0.3 ms more per transaction (pymodbus
3.16; docs/rs485.md, *Why the framing is hand-written*).  Request functions
still call pymodbus' client methods (``read_holding_registers(addr, count=…,
device_id=…)``).  Reads take the fast path of ``rtu_reads`` (frames built
once, replies decoded by hand); every other function is built and decoded
with pymodbus' own PDU classes.
"""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass, field
from typing import Literal

from pymodbus.client.mixin import ModbusClientMixin
from pymodbus.pdu import DecodePDU, ModbusPDU

from drivers.errors import BadReply, DeviceTimeout
from drivers.modbus import framing
from drivers.modbus.framing import Broken, Reply, parse_ascii_reply, parse_rtu_reply  # noqa: F401 - re-exported
from drivers.modbus.rtu_reads import ReadFrames, decode_reply
from drivers.modbus.rtu_timeouts import ProbeWait, ReplyTimeouts, TimeoutBounds
from drivers.modbus.rtu_worker import WAKE_EARLY
from drivers.serial_line.port import AsyncSerialPort, PortError
from drivers.serial_line.settings import SerialSettings
from drivers.serial_line.timer import PreciseTimer

Framer = Literal["rtu", "ascii"]
LONG_GAP = 0.003  # seconds: a gap wait longer than this is slept in two parts (t3.5 is 4 ms at 9600 baud)


class PortLost(Exception):
    """The port failed under a request."""


# -- line occupancy -----------------------------------------------------------------------------
class ActivityWindow:
    """Seconds of activity per wall-clock second, for the last ``span`` seconds."""

    def __init__(self, span: int = 60):
        self.span = span
        self.buckets: collections.deque[list] = collections.deque()  # [second, busy, wire]; <= span + 1

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


# -- the wire -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class WaitPlan:
    """How long the next transaction waits for its reply (the line sets one per request).

    ``adaptive``: learned per slave and function code, at most ``ceiling`` past
    the reply's wire time; else ``ceiling`` itself, from the end of the request.
    ``probe``: a quarantined slave's re-probe (waits the floor, or the ceiling).
    """

    ceiling: float
    adaptive: bool = False
    probe: ProbeWait | None = None


@dataclass
class PendingReply:
    """The reply the line is waiting for."""

    unit: int
    fc: int
    future: asyncio.Future
    timeout: float = 0.0
    buf: bytearray = field(default_factory=bytearray)
    reply_len: int = 0
    done_at: float = 0.0  # arrival of the reply's last byte


class RtuWire:
    """Transactions on an open port, one at a time (the line's owner task is the only caller).

    ``counters`` is the line's: transactions, replies, timeouts, crc_errors,
    garbled, truncated, exceptions, stale_bytes.
    """

    def __init__(self, settings: SerialSettings, framer: Framer, counters: collections.Counter,
                 bounds: TimeoutBounds | None = None):
        self.framer = framer
        self.gap = settings.t35
        self.char_time = settings.char_time
        self.counters = counters
        self.port: AsyncSerialPort | None = None
        self.port_error: str | None = None  # why there is no port, for PortLost
        self.timeouts = ReplyTimeouts(bounds or TimeoutBounds())
        self.plan = WaitPlan(self.timeouts.bounds.ceiling)  # of the transaction under way; set per request
        self.timer = PreciseTimer()
        self.reaction = collections.deque(maxlen=4096)  # seconds from the gap's end to the request's last byte
        self.busy_s = 0.0
        self.wire_s = 0.0
        self.window = ActivityWindow()
        self.client = WireClient(self)
        self._decoder = DecodePDU(is_server=False)
        self.frames = ReadFrames(framer)
        self._parse = parse_rtu_reply if framer == "rtu" else parse_ascii_reply
        self._last_rx = 0.0
        self._tx_end = 0.0
        self._gave_up = 0.0  # when the last timeout expired: the line counts as busy until then
        self._pending: PendingReply | None = None

    def fresh_line(self) -> None:
        """A port was just opened: keep one gap of silence from now."""
        self._last_rx = self._tx_end = time.monotonic()

    def close(self) -> None:
        self.timer.close()

    def port_lost(self, reason: str) -> None:
        """The port reported a failure: the reply under way will not come."""
        pending = self._pending
        if pending is not None and not pending.future.done():
            pending.future.set_exception(PortLost(reason))

    # -- receiving --------------------------------------------------------------------------------
    def on_data(self, data: bytes, t: float) -> None:
        """Bytes from the port (``AsyncSerialPort.on_data``), on the loop."""
        self._last_rx = t
        pending = self._pending
        if pending is None or pending.future.done():
            self.counters["stale_bytes"] += len(data)  # noise, or the tail of a reply we gave up on
            return
        pending.buf += data
        parsed = self._parse(pending.buf, pending.unit, pending.fc)
        if parsed is None:
            return
        self.counters["stale_bytes"] += parsed.stale
        if isinstance(parsed, Broken):
            self._fail(pending, parsed.counter, parsed.message)
        else:
            self._deliver(pending, parsed)

    def _fail(self, pending: PendingReply, counter: str, message: str) -> None:
        self.counters[counter] += 1
        pending.future.set_exception(BadReply(message))

    def _deliver(self, pending: PendingReply, reply: Reply) -> None:
        pdu = decode_reply(reply.pdu, pending.unit)  # reads and exceptions: by hand (rtu_reads)
        if pdu is None:
            pdu = self._decode_other(pending, reply)
            if pdu is None:
                return
        pending.reply_len = reply.frame_len
        pending.done_at = self._last_rx
        if pdu.isError():
            self.counters["exceptions"] += 1
        self.counters["replies"] += 1
        pending.future.set_result(pdu)

    def _decode_other(self, pending: PendingReply, reply: Reply) -> ModbusPDU | None:
        """Any other function's reply, through pymodbus; None (and the request failed) if it is nonsense."""
        try:
            pdu = self._decoder.decode(reply.pdu)
        except Exception as exc:  # pymodbus raises assorted errors on nonsense
            pdu, why = None, str(exc)
        else:
            why = "undecodable"
        if pdu is None:
            self._fail(pending, "garbled", f"unit {pending.unit}: {why} reply {reply.pdu[:16].hex(' ')}")
            return None
        pdu.dev_id = pending.unit
        return pdu

    def _expire(self, pending: PendingReply) -> None:
        if pending.future.done():
            return
        now = time.monotonic()
        grace = self._last_rx + self.timeouts.bounds.floor
        if pending.buf and now < grace:  # a reply is still coming in (an adapter delivers it in bursts)
            asyncio.get_running_loop().call_at(grace, self._expire, pending)
            return
        self._gave_up = now
        if pending.buf:
            self._fail(pending, "truncated", f"truncated reply from unit {pending.unit}: {len(pending.buf)} byte(s) "
                                             f"then silence ({bytes(pending.buf[:16]).hex(' ')})")
        else:
            self.counters["timeouts"] += 1
            pending.future.set_exception(
                DeviceTimeout(f"no reply from unit {pending.unit} within {pending.timeout * 1000:.0f} ms"))

    # -- sending ----------------------------------------------------------------------------------
    async def wait_silence(self) -> float:
        """Until the line has been quiet for one inter-frame gap (re-checked: late bytes push it back).

        Returns when the gap ended (the earliest the request could leave)."""
        while True:
            due = max(self._last_rx, self._tx_end, self._gave_up) + self.gap
            left = due - time.monotonic()
            if left <= 0:
                return due
            # a long gap (below 19200 baud) is slept in two parts, as the line worker does: a core idle
            # for the whole of it wakes ~0.2 ms late; fast lines keep one wake-up (CPU per request)
            await self.timer.sleep_until(due - WAKE_EARLY if left > LONG_GAP else due)

    def reply_wait(self, unit: int, fc: int, reply_chars: int) -> float:
        """Seconds from the request's end to give up on its reply, under the current plan."""
        plan = self.plan
        if not plan.adaptive:
            return plan.ceiling
        return self.timeouts.timeout(unit, fc, reply_chars * self.char_time, ceiling=plan.ceiling, probe=plan.probe)

    async def transact(self, request: ModbusPDU, no_response_expected: bool) -> ModbusPDU | None:
        """Send a pymodbus ``request`` after the gap and wait for its reply (None for a broadcast)."""
        unit, fc = request.dev_id, request.function_code
        pdu = bytes((fc,)) + request.encode()
        chars = framing.expected_reply_length(pdu)
        if self.framer == "rtu":
            frame = framing.rtu_encode(unit, pdu)
        else:
            frame, chars = framing.ascii_encode(unit, pdu), framing.ascii_length(chars)
        return await self.exchange(unit, fc, frame, chars, no_response_expected or unit == 0)

    async def read(self, fc: int, address: int, count: int, unit: int):
        """A read (functions 1-4) on its prebuilt frame; the reply decoded by hand (``rtu_reads``)."""
        frame, _, chars = self.frames.get(unit, fc, address, count)
        return await self.exchange(unit, fc, frame, chars, unit == 0)

    async def exchange(self, unit: int, fc: int, frame: bytes, reply_chars: int, broadcast: bool):
        """Send ``frame`` after the gap and wait for its reply (None for a broadcast)."""
        port = self.port
        if port is None or not port.is_open:
            raise PortLost(self.port_error or "port not open")
        loop = asyncio.get_running_loop()
        pending = PendingReply(unit, fc, loop.create_future(), self.reply_wait(unit, fc, reply_chars))
        ready = time.monotonic()
        gap_end = await self.wait_silence()
        self._pending = pending  # before writing: a fast reply must find it
        try:
            t_send = await port.write(frame)
        except PortError as exc:
            self._pending = None
            if pending.future.done():
                pending.future.exception()  # set by port_lost(); superseded by the PortLost raised here
            raise PortLost(str(exc)) from None
        self._tx_end = t_send + len(frame) * self.char_time
        if ready <= gap_end:  # the request waited for the gap: how late after it did it leave?
            self.reaction.append(t_send - gap_end)
        self.counters["transactions"] += 1
        if broadcast:
            self._pending = None
            await asyncio.sleep(max(0.0, self._tx_end - time.monotonic()))
            self._account(t_send, len(frame), 0)
            return None
        timer = loop.call_at(self._tx_end + pending.timeout, self._expire, pending)
        try:
            reply = await pending.future
        except DeviceTimeout:
            if self.plan.adaptive:
                self.timeouts.timed_out(unit, fc)
            raise
        finally:
            timer.cancel()
            self._pending = None
            self._account(t_send, len(frame), pending.reply_len or len(pending.buf))
        if self.plan.adaptive:
            self.timeouts.observe(unit, fc, pending.done_at - self._tx_end - pending.reply_len * self.char_time)
        return reply

    def reaction_ms(self) -> dict | None:
        """p50/p99 in ms of how late requests left after the gap (the line's reaction), or None."""
        if not self.reaction:
            return None
        ordered = sorted(self.reaction)
        return {"p50": round(ordered[len(ordered) // 2] * 1000, 3),
                "p99": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000, 3)}

    def _account(self, t_send: float, tx_chars: int, rx_chars: int, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        busy = now - t_send + self.gap
        wire = (tx_chars + rx_chars) * self.char_time
        self.busy_s += busy
        self.wire_s += wire
        self.window.add(now, busy, wire)


class WireClient(ModbusClientMixin):
    """What request functions see: pymodbus' request methods (``device_id=``, keyword-only ``count=``),
    executed as transactions on the wire."""

    def __init__(self, wire: RtuWire):
        super().__init__()
        self._wire = wire

    def execute(self, no_response_expected: bool, request: ModbusPDU):  # type: ignore[override]
        return self._wire.transact(request, no_response_expected)

    # reads: the prebuilt frames of ``rtu_reads`` (pymodbus' signatures; a read expecting no reply goes its way)
    def _read(self, fc: int, generic, address: int, count: int, device_id: int, no_response_expected: bool):
        if no_response_expected:
            return generic(address, count=count, device_id=device_id, no_response_expected=True)
        return self._wire.read(fc, address, count, device_id)

    def read_coils(self, address: int, *, count: int = 1, device_id: int = 1, no_response_expected: bool = False):
        return self._read(1, super().read_coils, address, count, device_id, no_response_expected)

    def read_discrete_inputs(self, address: int, *, count: int = 1, device_id: int = 1,
                             no_response_expected: bool = False):
        return self._read(2, super().read_discrete_inputs, address, count, device_id, no_response_expected)

    def read_holding_registers(self, address: int, *, count: int = 1, device_id: int = 1,
                               no_response_expected: bool = False):
        return self._read(3, super().read_holding_registers, address, count, device_id, no_response_expected)

    def read_input_registers(self, address: int, *, count: int = 1, device_id: int = 1,
                             no_response_expected: bool = False):
        return self._read(4, super().read_input_registers, address, count, device_id, no_response_expected)
