"""The read fast path of an RS-485 line: request frames built once, read replies decoded by hand.

A poll sends the same request every time (same unit, function, address and
count), so its frame, CRC included, is built once and kept (``ReadFrames``).
Building it through pymodbus (``ModbusClientMixin`` -> a request PDU ->
``encode`` -> our CRC) and decoding the reply through ``DecodePDU`` (which
formats the PDU as text for a debug log line even when nobody logs) cost
about a third of the line's CPU per transaction (profiled: four lines at
38400 baud, ~300 us per transaction before).  Reads (functions 1-4) and
exception replies are what a line does all day, and their layouts are
fixed by the spec, so they are decoded here in a few lines; every other
function (writes, diagnostics) still goes through pymodbus' PDU classes.

``ReadReply`` quacks like pymodbus' responses where callers look
(``registers``, ``bits``, ``isError()``, ``exception_code``, ``dev_id``,
``function_code``), so request functions need not know which path ran.
"""

from __future__ import annotations

import struct

from drivers.modbus import framing

READ_FUNCTIONS = (1, 2, 3, 4)
MAX_COUNT = {1: 2000, 2: 2000, 3: 125, 4: 125}  # the spec's limits (pymodbus' MAX_COUNT)
CACHE_LIMIT = 1024  # frames kept; a scan walks at most 247 units x a few settings


class ReadReply:
    """A decoded read reply (functions 1-4) or an exception reply (function | 0x80)."""

    __slots__ = ("function_code", "dev_id", "registers", "bits", "exception_code")

    def __init__(self, function_code: int, dev_id: int, registers: list[int] | None = None,
                 bits: list[bool] | None = None, exception_code: int = 0):
        self.function_code = function_code
        self.dev_id = dev_id
        self.registers = registers if registers is not None else []
        self.bits = bits if bits is not None else []
        self.exception_code = exception_code

    def isError(self) -> bool:  # noqa: N802 - pymodbus' name, which callers use
        return self.function_code > 0x80

    def __repr__(self) -> str:
        if self.isError():
            return f"ReadReply(dev_id={self.dev_id}, function_code={self.function_code}, " \
                   f"exception_code={self.exception_code})"
        return f"ReadReply(dev_id={self.dev_id}, function_code={self.function_code}, " \
               f"registers={self.registers}, bits={self.bits})"


_WORDS: dict[int, struct.Struct] = {}  # byte count -> big-endian unsigned 16-bit words


def _words(byte_count: int) -> struct.Struct:
    st = _WORDS.get(byte_count)
    if st is None:
        st = _WORDS[byte_count] = struct.Struct(f">{byte_count // 2}H")
    return st


def _bits(data: bytes) -> list[bool]:
    """Bytes -> bits, least significant first, 8 per byte (as pymodbus' ``unpack_bitstring``)."""
    return [bool(byte >> i & 1) for byte in data for i in range(8)]


def decode_reply(pdu: bytes, unit: int) -> ReadReply | None:
    """A reply PDU (function code first) -> a ReadReply; None: not a read or an exception, or malformed.

    None hands the PDU to pymodbus, which decodes every other function and
    words the error for a malformed one.
    """
    fc = pdu[0]
    if fc > 0x80:
        if len(pdu) != 2:
            return None
        return ReadReply(fc, unit, exception_code=pdu[1])
    if fc not in READ_FUNCTIONS or len(pdu) < 2:
        return None
    count = pdu[1]
    data = pdu[2:2 + count]
    if len(data) != count:
        return None
    if fc in (3, 4):
        return ReadReply(fc, unit, registers=list(_words(count - count % 2).unpack_from(data)))
    return ReadReply(fc, unit, bits=_bits(data))


class ReadFrames:
    """Request frames of reads by (unit, function, address, count), built on first use.

    Each entry: the frame (RTU or ASCII), the request PDU, and the characters of
    the normal reply on the wire (for the reply's timeout).
    """

    def __init__(self, framer: str):
        self.framer = framer
        self._cache: dict[tuple[int, int, int, int], tuple[bytes, bytes, int]] = {}

    def get(self, unit: int, fc: int, address: int, count: int) -> tuple[bytes, bytes, int]:
        key = (unit, fc, address, count)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        if not 1 <= count <= MAX_COUNT[fc]:
            raise ValueError(f"1 <= count {count} <= {MAX_COUNT[fc]} !")
        if not 0 <= address <= 65535:
            raise ValueError(f"0 <= address {address} <= 65535 !")
        if not 0 <= unit <= 255:
            raise ValueError(f"Invalid ID {unit}")
        pdu = struct.pack(">BHH", fc, address, count)
        chars = framing.expected_reply_length(pdu)
        if self.framer == "rtu":
            frame = framing.rtu_encode(unit, pdu)
        else:
            frame, chars = framing.ascii_encode(unit, pdu), framing.ascii_length(chars)
        if len(self._cache) >= CACHE_LIMIT:
            self._cache.clear()
        hit = self._cache[key] = (frame, pdu, chars)
        return hit
