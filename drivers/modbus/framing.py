"""Modbus serial framing: RTU (CRC-16) and ASCII (LRC), and how long a frame is.

Pure functions shared by the RTU line (gateway side) and the pty simulator
(slave side).  A frame's length follows from its function code (and, for
variable-length frames, its byte count), so a reply is complete as soon as
its last byte arrives - no need to wait for the 3.5-character silence, which
USB adapters blur anyway.
"""

from __future__ import annotations

from binascii import Error as HexError
from binascii import a2b_hex, b2a_hex
from dataclasses import dataclass
from typing import Literal


class FrameError(ValueError):
    """Bytes that are not a valid frame (checksum, hex, delimiters)."""


def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC_TABLE = _crc_table()


def crc16(data: bytes) -> int:
    """Modbus CRC-16 (poly 0xA001, init 0xFFFF); sent low byte first."""
    crc = 0xFFFF
    table = _CRC_TABLE
    for b in data:
        crc = (crc >> 8) ^ table[(crc ^ b) & 0xFF]
    return crc


def rtu_encode(unit: int, pdu: bytes) -> bytes:
    """unit + PDU (function code and data) + CRC."""
    frame = bytes((unit,)) + pdu
    return frame + crc16(frame).to_bytes(2, "little")


def rtu_crc_ok(frame: bytes) -> bool:
    return len(frame) >= 4 and crc16(frame[:-2]) == int.from_bytes(frame[-2:], "little")


def lrc(data: bytes) -> int:
    return (-sum(data)) & 0xFF


def ascii_encode(unit: int, pdu: bytes) -> bytes:
    """':' + hex(unit + PDU + LRC) + CRLF, upper case."""
    raw = bytes((unit,)) + pdu
    return b":" + b2a_hex(raw + bytes((lrc(raw),))).upper() + b"\r\n"


ASCII_MAX = 513  # ':' + 2 * (1 + 253 + 1) + CRLF


def ascii_decode(frame: bytes) -> bytes:
    """A complete ASCII frame (from ':' to CRLF) -> unit + PDU; raises FrameError."""
    if not frame.startswith(b":") or not frame.endswith(b"\r\n"):
        raise FrameError("ASCII frame must start with ':' and end with CR LF")
    body = frame[1:-2]
    if len(body) < 6 or len(body) % 2:
        raise FrameError(f"ASCII frame has {len(body)} hex digits")
    try:
        raw = a2b_hex(body)
    except (HexError, ValueError):
        raise FrameError("ASCII frame is not hexadecimal") from None
    if lrc(raw[:-1]) != raw[-1]:
        raise FrameError(f"LRC mismatch (got {raw[-1]:02X}, computed {lrc(raw[:-1]):02X})")
    return raw[:-1]


# -- lengths ------------------------------------------------------------------------------
_FIXED_RESPONSE = {5: 8, 6: 8, 15: 8, 16: 8, 22: 10, 7: 5, 8: 8, 11: 8}
_COUNTED_RESPONSE = (1, 2, 3, 4, 12, 17, 20, 21, 23)  # byte count at offset 2


def rtu_response_length(head: bytes) -> int | None:
    """Full RTU length of a reply starting with ``head`` (unit, function, ...).

    None: not enough bytes yet to tell.  -1: a function whose length we cannot
    derive (end it by silence).
    """
    if len(head) < 2:
        return None
    fc = head[1]
    if fc & 0x80:
        return 5
    if fc in _FIXED_RESPONSE:
        return _FIXED_RESPONSE[fc]
    if fc in _COUNTED_RESPONSE:
        return 5 + head[2] if len(head) >= 3 else None
    return -1


_FIXED_REQUEST = {1: 8, 2: 8, 3: 8, 4: 8, 5: 8, 6: 8, 7: 4, 8: 8, 11: 4, 12: 4, 17: 4, 22: 10}


def rtu_request_length(head: bytes) -> int | None:
    """Full RTU length of a request (the slave's side); None: need more bytes, -1: unknown function."""
    if len(head) < 2:
        return None
    fc = head[1]
    if fc in _FIXED_REQUEST:
        return _FIXED_REQUEST[fc]
    if fc in (15, 16):
        return 9 + head[6] if len(head) >= 7 else None
    if fc == 23:
        return 13 + head[10] if len(head) >= 11 else None
    return -1


RTU_MAX = 256  # the longest RTU frame (unit + 253-byte PDU + CRC)


def expected_reply_length(pdu: bytes) -> int:
    """RTU length of the normal reply to request ``pdu`` (function code first); RTU_MAX if it cannot be told.

    The master knows how long the reply will be before it sends the request,
    so a reply timeout can be the reply's own wire time plus the slave's
    turnaround (an exception reply is shorter, and only ever earlier).
    """
    fc = pdu[0] if pdu else 0
    if fc in (1, 2) and len(pdu) >= 5:
        return 5 + (int.from_bytes(pdu[3:5], "big") + 7) // 8
    if fc in (3, 4) and len(pdu) >= 5:
        return 5 + 2 * int.from_bytes(pdu[3:5], "big")
    if fc == 23 and len(pdu) >= 5:
        return 5 + 2 * int.from_bytes(pdu[3:5], "big")
    return _FIXED_RESPONSE.get(fc, RTU_MAX)


def ascii_length(rtu_length: int) -> int:
    """Characters of the ASCII frame carrying what takes ``rtu_length`` bytes in RTU (':', hex, LRC, CRLF)."""
    return 2 * rtu_length + 1


# -- reply parsing (the line's and its worker's) -----------------------------------------------------------------------
@dataclass(frozen=True)
class Reply:
    """A complete, checked reply frame: its PDU (function code first) and its length on the wire."""

    pdu: bytes
    frame_len: int
    stale: int = 0  # bytes after the frame (noise, or a slave talking too long)


@dataclass(frozen=True)
class Broken:
    """A reply that cannot be right; ``counter`` names the line counter it goes to."""

    counter: Literal["garbled", "crc_errors"]
    message: str
    stale: int = 0


def parse_rtu_reply(buf: bytes | bytearray, unit: int, fc: int) -> Reply | Broken | None:
    """The reply so far -> a Reply, a Broken one, or None while more bytes are due."""
    if len(buf) < 2:
        return None
    if buf[0] != unit or (buf[1] & 0x7F) != fc:
        return Broken("garbled", f"garbled reply from unit {unit}: {bytes(buf[:16]).hex(' ')}")
    need = rtu_response_length(buf)
    if need is None:
        return None
    if need < 0:
        need = len(buf)  # unknown length: take what came in one piece (rare functions only)
    if len(buf) < need:
        return None
    frame = bytes(buf[:need])
    if not rtu_crc_ok(frame):
        return Broken("crc_errors", f"CRC error in reply from unit {unit}", len(buf) - need)
    return Reply(frame[1:-2], need, len(buf) - need)


def parse_ascii_reply(buf: bytes | bytearray, unit: int, fc: int) -> Reply | Broken | None:
    """The ASCII reply so far (``:…LRC\\r\\n``) -> a Reply, a Broken one, or None while more bytes are due."""
    start = buf.find(b":")
    if start < 0:
        if len(buf) > ASCII_MAX:
            return Broken("garbled", f"no ASCII frame start in {len(buf)} bytes from unit {unit}")
        return None
    end = buf.find(b"\r\n", start)
    if end < 0:
        if len(buf) - start > ASCII_MAX:
            return Broken("garbled", f"overlong ASCII frame from unit {unit}")
        return None
    try:
        raw = ascii_decode(bytes(buf[start:end + 2]))
    except FrameError as exc:
        return Broken("crc_errors" if "LRC" in str(exc) else "garbled", f"unit {unit}: {exc}")
    if raw[0] != unit or (raw[1] & 0x7F) != fc:
        return Broken("garbled", f"garbled reply from unit {unit}: {raw[:16].hex(' ')}")
    return Reply(raw[1:], end + 2 - start)
