"""Modbus RTU/ASCII slaves on a real pty line, with the wire's timing and its faults.

The slaves are the TCP simulator's ``SimulatedDevice`` s - same profiles, same
physics models, same register encoding (``to_registers``/``from_registers``)
and the same write rules - so a device answers identically on TCP and RS-485.

Timing: a reply is written to the pty only when it would have finished
arriving on a real line::

    request start (first byte seen) + request chars x char time
      + turnaround (default: the 3.5-character gap, the earliest a compliant
        slave may answer: 1.75-4 ms at 9600-38400 baud)
      + reply chars x char time

and the line checks the master keeps the rules: a request that starts less
than 3.5 characters after the previous frame ended is a *gap violation* (a
strict slave reads it as the tail of the previous frame and drops it); a
request that arrives while a reply is still due is a *collision* (both are
lost).  A master speaking at the wrong baud or character length (read back
from the pty's termios) gets silence, as a UART full of framing errors would.

The line also times both ends: ``reaction_ms`` is how late each request
started after t3.5 past the previous reply (the master's reaction), and
``jitter_ms`` how late the simulator itself wrote each reply after it was due
(its own timing error, which bounds what the other figure can resolve).

Faults per slave: ``silent``, ``crc`` (reply with a bad CRC), ``garbled``
(random bytes), ``truncated`` (first half of the reply, then nothing),
``slow`` (answers ``slow_delay`` seconds late), ``exception`` (Modbus
exception 4).  Line faults: ``vanish()`` / ``restore()`` (pty_line).
"""

from __future__ import annotations

import collections
import random
import struct
import time
from dataclasses import dataclass
from typing import Literal

from drivers.modbus import framing
from drivers.modbus.installer import parse_units  # noqa: F401 - re-exported for the simulator CLI
from drivers.serial_line.settings import SerialSettings
from simulator.modbus_tcp import SimulatedDevice, to_registers
from simulator.pty_line import PtyLine

Fault = Literal["silent", "crc", "garbled", "truncated", "slow", "exception"] | None
FAULTS = ("silent", "crc", "garbled", "truncated", "slow", "exception")
_READ_TABLE = {1: "coil", 2: "discrete", 3: "holding", 4: "input"}


@dataclass
class RtuSlave:
    device: SimulatedDevice
    fault: Fault = None
    slow_delay: float = 0.3
    requests: int = 0
    replies: int = 0

    @property
    def unit(self) -> int:
        return self.device.unit

    @property
    def id(self) -> str:
        return self.device.id


def _exception(fc: int, code: int) -> bytes:
    return bytes((fc | 0x80, code))


def _table_size(dev: SimulatedDevice, table: str) -> int:
    return max((p.address + p.count for p in dev.points(table)), default=1)


def handle_pdu(dev: SimulatedDevice, pdu: bytes, now: float) -> bytes:
    """One request PDU -> the reply PDU, served from the device's model at ``now``."""
    fc = pdu[0]
    try:
        if fc in _READ_TABLE:
            table = _READ_TABLE[fc]
            address, count = struct.unpack(">HH", pdu[1:5])
            limit = 2000 if fc in (1, 2) else 125
            if not 1 <= count <= limit:
                return _exception(fc, 3)
            if address + count > _table_size(dev, table):
                return _exception(fc, 2)
            values = dev.model.values(now)
            if fc in (1, 2):
                bits = [False] * count
                for p in dev.points(table):
                    if address <= p.address < address + count:
                        bits[p.address - address] = bool(values[p.name])
                packed = bytearray((count + 7) // 8)
                for i, b in enumerate(bits):
                    if b:
                        packed[i // 8] |= 1 << (i % 8)
                return bytes((fc, len(packed))) + bytes(packed)
            regs = [0] * count
            for p in dev.points(table):
                if p.address < address + count and address < p.address + p.count:
                    for i, r in enumerate(to_registers(p, values[p.name])):
                        if address <= p.address + i < address + count:
                            regs[p.address + i - address] = r
            return bytes((fc, 2 * count)) + struct.pack(f">{count}H", *regs)
        if fc == 5:
            address, value = struct.unpack(">HH", pdu[1:5])
            if value not in (0x0000, 0xFF00):
                return _exception(fc, 3)
            err = dev._write("coil", address, [value == 0xFF00], now)
            return _exception(fc, int(err)) if err else pdu[:5]
        if fc == 6:
            address, value = struct.unpack(">HH", pdu[1:5])
            err = dev._write("holding", address, [value], now)
            return _exception(fc, int(err)) if err else pdu[:5]
        if fc == 15:
            address, count, nbytes = struct.unpack(">HHB", pdu[1:6])
            data = pdu[6:6 + nbytes]
            if not 1 <= count <= 1968 or nbytes != (count + 7) // 8 or len(data) != nbytes:
                return _exception(fc, 3)
            bits = [bool(data[i // 8] >> (i % 8) & 1) for i in range(count)]
            err = dev._write("coil", address, bits, now)
            return _exception(fc, int(err)) if err else pdu[:5]
        if fc == 16:
            address, count, nbytes = struct.unpack(">HHB", pdu[1:6])
            data = pdu[6:6 + nbytes]
            if not 1 <= count <= 123 or nbytes != 2 * count or len(data) != nbytes:
                return _exception(fc, 3)
            err = dev._write("holding", address, list(struct.unpack(f">{count}H", data)), now)
            return _exception(fc, int(err)) if err else pdu[:5]
    except struct.error:
        return _exception(fc, 3)
    return _exception(fc & 0x7F, 1)


class RtuLineSimulator(PtyLine):
    """Many slaves sharing one pty line (RTU or ASCII framing)."""

    name = "sim-rtu-line"

    def __init__(self, devices: list[SimulatedDevice], settings: SerialSettings | None = None, *,
                 framer: Literal["rtu", "ascii"] = "rtu", link: str | None = None, turnaround: float | None = None,
                 strict: bool = True, seed: int = 1, spin: float = 0.0):
        super().__init__(settings, link, spin)
        units = [d.unit for d in devices]
        if len(set(units)) != len(units):
            raise ValueError(f"duplicate unit ids in {units}")
        if any(not 1 <= u <= 247 for u in units):
            raise ValueError(f"RTU unit ids are 1..247, got {units}")
        self.slaves = {d.unit: RtuSlave(d) for d in devices}
        self.framer = framer
        self.turnaround = self.settings.t35 if turnaround is None else turnaround
        self.strict = strict
        self.rng = random.Random(seed)
        self.counters: dict[str, int] = dict.fromkeys(
            ("frames", "replies", "crc_errors", "garbage", "wrong_settings", "gap_violations", "collisions",
             "unknown_unit", "broadcasts", "silent"), 0)
        self._rx = bytearray()
        self._rx_start = 0.0
        self._rx_last = 0.0
        self._wire_free = 0.0  # end of the last frame on the wire
        self._pending: tuple[float, bytes] | None = None  # (due, bytes)
        self._after_reply = False  # the last frame on the wire was one of our replies
        self.reaction: collections.deque[float] = collections.deque(maxlen=50_000)  # seconds
        self.jitter: collections.deque[float] = collections.deque(maxlen=50_000)  # seconds

    # -- control (any thread) ------------------------------------------------------------------
    def slave(self, key: int | str) -> RtuSlave:
        for s in self.slaves.values():
            if s.unit == key or s.id == key or str(s.unit) == str(key):
                return s
        raise KeyError(key)

    @property
    def devices(self) -> list[SimulatedDevice]:
        return [s.device for s in self.slaves.values()]

    def device(self, key: int | str) -> SimulatedDevice:
        return self.slave(key).device

    def set_fault(self, key: int | str, fault: Fault, slow_delay: float | None = None) -> None:
        if fault is not None and fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; one of {', '.join(FAULTS)}")
        s = self.slave(key)
        with self.lock:
            s.fault = fault
            if slow_delay is not None:
                s.slow_delay = slow_delay

    def expected(self, key: int | str, now: float | None = None) -> dict:
        dev = self.device(key)
        with self.lock:
            return dev.expected(dev.model.clock.now() if now is None else now)

    def stats(self) -> dict:
        with self.lock:
            reaction, jitter = list(self.reaction), list(self.jitter)
            out = {**self.counters, "slaves": {s.unit: {"id": s.id, "requests": s.requests, "replies": s.replies,
                                                        "fault": s.fault} for s in self.slaves.values()}}
        return {**out, "reaction_ms": percentiles_ms(reaction), "jitter_ms": percentiles_ms(jitter),
                "jitter_hist_10us": histogram_10us(jitter)}

    # -- the wire (serving thread) ---------------------------------------------------------------
    def reset(self) -> None:
        self._rx.clear()
        self._pending = None

    def next_deadline(self) -> float | None:
        deadlines = []
        if self._pending is not None:
            deadlines.append(self._pending[0])
        if self._rx:
            deadlines.append(self._rx_last + self._frame_silence())
        return min(deadlines) if deadlines else None

    WATCH_S = 0.003  # how long after the earliest moment a request may start it is watched for

    def input_expected(self) -> tuple[float, float] | None:
        """After our reply, the master's next request may start t3.5 later: watched for a while then."""
        if not self._after_reply or self._rx or self._pending is not None or self.framer != "rtu":
            return None
        start = self._wire_free + self.settings.t35
        end = start + self.WATCH_S
        return (start, end) if time.monotonic() < end else None

    def _frame_silence(self) -> float:
        # a partial frame followed by this much silence is over (a pty delivers frames whole)
        return max(self.settings.t35, 0.002) if self.framer == "rtu" else 1.0

    def on_bytes(self, data: bytes, t: float) -> None:
        if self._pending is not None:
            # Someone talks while a reply is due: on a real bus both frames are destroyed.
            self.counters["collisions"] += 1
            self._pending = None
            self._after_reply = False
            self._rx.clear()
            self._wire_free = t + len(data) * self.settings.char_time
            return
        if not self._rx:
            self._rx_start = t
        self._rx += data
        self._rx_last = t
        if self.framer == "rtu":
            self._parse_rtu()
        else:
            self._parse_ascii()

    def on_timer(self, now: float) -> None:
        if self._pending is not None and now >= self._pending[0]:
            due, reply = self._pending
            self._pending = None
            self.write(reply)
            self._wire_free = now
            self._after_reply = True
            self.jitter.append(now - due)
        if self._rx and now >= self._rx_last + self._frame_silence():
            self.counters["garbage"] += 1  # an incomplete frame followed by silence
            self._wire_free = max(self._wire_free, self._rx_last)
            self._rx.clear()

    def _parse_rtu(self) -> None:
        need = framing.rtu_request_length(self._rx)
        if need is None:
            return
        if need < 0:
            need = len(self._rx)  # unknown function: the whole burst is the frame
        if len(self._rx) < need:
            return
        frame = bytes(self._rx[:need])
        del self._rx[:need]
        start = self._rx_start
        self._rx_start = self._rx_last
        self._frame(frame, start, framing.rtu_crc_ok(frame), frame[:-2] if len(frame) >= 4 else b"")

    def _parse_ascii(self) -> None:
        end = self._rx.find(b"\r\n")
        if end < 0:
            if len(self._rx) > framing.ASCII_MAX:
                self.counters["garbage"] += 1
                self._rx.clear()
            return
        chunk = bytes(self._rx[:end + 2])
        del self._rx[:end + 2]
        start = self._rx_start
        self._rx_start = self._rx_last
        colon = chunk.find(b":")
        if colon < 0:
            self.counters["garbage"] += 1
            return
        try:
            raw = framing.ascii_decode(chunk[colon:])
            ok = True
        except framing.FrameError:
            raw, ok = b"", False
        self._frame(chunk[colon:], start, ok, raw)

    def _frame(self, frame: bytes, start: float, check_ok: bool, raw: bytes) -> None:
        """A complete request: ``raw`` is unit + PDU, ``start`` when its first byte arrived."""
        st = self.settings
        self.counters["frames"] += 1
        req_end = start + len(frame) * st.char_time
        if self._after_reply and self.framer == "rtu":
            self.reaction.append(start - (self._wire_free + st.t35))
        self._after_reply = False
        if not self.settings_match():
            self.counters["wrong_settings"] += 1
            self._wire_free = req_end
            return
        if self.framer == "rtu" and start - self._wire_free < st.t35 - 1e-4:
            self.counters["gap_violations"] += 1
            if self.strict:
                self._wire_free = req_end
                return
        self._wire_free = req_end
        if not check_ok or len(raw) < 2:
            self.counters["crc_errors"] += 1
            return
        unit, pdu = raw[0], raw[1:]
        if unit == 0:  # broadcast: every slave acts, nobody answers
            self.counters["broadcasts"] += 1
            for s in self.slaves.values():
                handle_pdu(s.device, pdu, s.device.model.clock.now())
            return
        slave = self.slaves.get(unit)
        if slave is None:
            self.counters["unknown_unit"] += 1
            return
        slave.requests += 1
        if slave.fault == "silent":
            self.counters["silent"] += 1
            return
        now = slave.device.model.clock.now()
        reply_pdu = _exception(pdu[0], 4) if slave.fault == "exception" else handle_pdu(slave.device, pdu, now)
        if self.framer == "rtu":
            reply = framing.rtu_encode(unit, reply_pdu)
        else:
            reply = framing.ascii_encode(unit, reply_pdu)
        if slave.fault == "crc":
            reply = reply[:-2] + bytes((reply[-2] ^ 0x5A, reply[-1] ^ 0xA5)) if self.framer == "rtu" \
                else reply[:-4] + (b"00" if reply[-4:-2] != b"00" else b"FF") + b"\r\n"
        elif slave.fault == "garbled":
            reply = bytes(self.rng.randrange(256) for _ in range(len(reply)))
        elif slave.fault == "truncated":
            reply = reply[: max(1, len(reply) // 2)]
        due = req_end + self.turnaround + len(reply) * st.char_time
        if slave.fault == "slow":
            due += slave.slow_delay
        slave.replies += 1
        self.counters["replies"] += 1
        self._pending = (due, reply)


def percentiles_ms(seconds: list[float]) -> dict | None:
    """{"p50", "p99", "n"} in milliseconds, or None without samples."""
    if not seconds:
        return None
    ordered = sorted(seconds)
    pick = lambda q: round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 3)  # noqa: E731
    return {"p50": pick(0.5), "p99": pick(0.99), "n": len(ordered)}


def histogram_10us(seconds: list[float]) -> dict[str, int]:
    """Counts per 10 us bin (the last bin, "500", holds 5 ms and more): to pool several runs' samples."""
    return {str(k): n for k, n in sorted(collections.Counter(min(500, max(0, int(x * 1e5 + 1e-6))) for x in seconds).items())}


def pooled_p99_ms(histograms: list[dict[str, int]]) -> float | None:
    """The p99 (upper edge of its 10 us bin, in ms) of the samples of several ``histogram_10us``."""
    total = collections.Counter()
    for h in histograms:
        total.update({int(k): n for k, n in h.items()})
    n = sum(total.values())
    if not n:
        return None
    seen = 0
    for k in sorted(total):
        seen += total[k]
        if seen >= 0.99 * n:
            return round((k + 1) / 100, 3)
    return None


def soil_probes(units: list[int], clock, seed: int = 1, profiles_dir=None) -> list[SimulatedDevice]:
    """``len(units)`` soil probes (the farm's physics, no irrigation, no rain) at the given unit ids."""
    from simulator.physics import SoilProbe
    from simulator.sites import _profiles

    profile = _profiles(profiles_dir)("soil_probe")
    return [SimulatedDevice(f"probe-{u}", u, profile, SoilProbe(clock, seed * 100 + u, lambda t: False, lambda t: 0.0))
            for u in units]
