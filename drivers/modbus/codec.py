"""Register <-> value conversion for Modbus data types.

Pure functions, shared by the gateway (decode) and the simulator (encode), so a
profile describes a device once.  Byte order is the order of the two bytes in
each 16-bit register; word order is the order of the registers in a multi-
register value.  Modbus itself is big-endian for both; many devices swap words.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Literal

DataType = Literal["bool", "u16", "i16", "u32", "i32", "f32", "u64", "i64", "f64", "string"]
Order = Literal["big", "little"]

# struct format (big-endian) and register count for each numeric type
_NUMERIC: dict[str, tuple[str, int]] = {
    "u16": ("H", 1),
    "i16": ("h", 1),
    "u32": ("I", 2),
    "i32": ("i", 2),
    "f32": ("f", 2),
    "u64": ("Q", 4),
    "i64": ("q", 4),
    "f64": ("d", 4),
}


class DecodeError(ValueError):
    """A reply that cannot be turned into a value (wrong length, bad text)."""


@dataclass(frozen=True, slots=True)
class Layout:
    """How one value sits in registers."""

    type: DataType
    byte_order: Order = "big"
    word_order: Order = "big"
    length: int = 1  # registers, only for strings

    @property
    def registers(self) -> int:
        if self.type == "bool":
            return 1
        if self.type == "string":
            return self.length
        return _NUMERIC[self.type][1]


def register_count(layout: Layout) -> int:
    return layout.registers


def _to_bytes(registers: list[int] | tuple[int, ...], layout: Layout) -> bytes:
    regs = list(registers)
    if layout.word_order == "little":
        regs.reverse()
    raw = b"".join(r.to_bytes(2, "big") for r in regs)
    if layout.byte_order == "little":
        raw = b"".join(raw[i + 1 : i + 2] + raw[i : i + 1] for i in range(0, len(raw), 2))
    return raw


def _from_bytes(raw: bytes, layout: Layout) -> list[int]:
    if layout.byte_order == "little":
        raw = b"".join(raw[i + 1 : i + 2] + raw[i : i + 1] for i in range(0, len(raw), 2))
    regs = [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]
    if layout.word_order == "little":
        regs.reverse()
    return regs


def decode(registers: list[int] | tuple[int, ...], layout: Layout) -> int | float | str | bool:
    """Raw registers -> native value (before scale and offset)."""
    if len(registers) != layout.registers:
        raise DecodeError(
            f"{layout.type} needs {layout.registers} register(s), reply had {len(registers)}"
        )
    for r in registers:
        if not isinstance(r, int) or not 0 <= r <= 0xFFFF:
            raise DecodeError(f"register value {r!r} is not a 16-bit word")
    if layout.type == "bool":
        return bool(registers[0])
    raw = _to_bytes(registers, layout)
    if layout.type == "string":
        text = raw.split(b"\x00", 1)[0]
        try:
            return text.decode("ascii").rstrip()
        except UnicodeDecodeError as exc:
            raise DecodeError(f"string is not ASCII: {text!r}") from exc
    fmt, _ = _NUMERIC[layout.type]
    value = struct.unpack(">" + fmt, raw)[0]
    return shortest_f32(value) if fmt == "f" else value


def shortest_f32(value: float) -> float:
    """The shortest decimal that is the same float32: 20.86, not 20.860000610351562.

    A float32 carries ~7 significant digits; printing its float64 widening
    shows noise the sensor never measured.
    """
    if value != value or value in (float("inf"), float("-inf")):
        return value
    packed = struct.pack(">f", value)
    for digits in range(6, 10):
        candidate = float(f"{value:.{digits}g}")
        try:
            if struct.pack(">f", candidate) == packed:
                return candidate
        except OverflowError:  # rounded up past the float32 maximum
            continue
    return value


def encode(value: int | float | str | bool, layout: Layout) -> list[int]:
    """Native value -> registers (the simulator's side, and writes)."""
    if layout.type == "bool":
        return [1 if value else 0]
    if layout.type == "string":
        raw = str(value).encode("ascii")  # UnicodeEncodeError is a ValueError
        if len(raw) > layout.length * 2:
            raise ValueError(
                f"{value!r} is {len(raw)} characters, longer than {layout.length} register(s) hold"
            )
        return _from_bytes(raw.ljust(layout.length * 2, b"\x00"), layout)
    fmt, _ = _NUMERIC[layout.type]
    try:
        if fmt not in "fd":
            value = int(round(value))
        raw = struct.pack(">" + fmt, value)
    except (struct.error, OverflowError, ValueError, TypeError) as exc:
        # struct.error: integer out of range; OverflowError: float beyond f32
        # or an infinite integer; ValueError: NaN as an integer.
        raise ValueError(f"{value!r} does not fit {layout.type}: {exc}") from exc
    return _from_bytes(raw, layout)


def to_engineering(raw: int | float | str | bool, scale: float, offset: float) -> int | float | str | bool:
    """Apply scale and offset; integers stay integers when no scaling applies."""
    if isinstance(raw, (str, bool)):
        return raw
    if scale == 1 and offset == 0:
        return raw
    return round(raw * scale + offset, 9)


def from_engineering(value: float, scale: float, offset: float) -> float:
    """Inverse of :func:`to_engineering` (for the simulator and for writes)."""
    return (value - offset) / scale
