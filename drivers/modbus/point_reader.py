"""A device's merged reads compiled into per-point decoders, once, instead of per poll.

``ModbusDevice.read_all`` decodes every point of every poll through
``codec.decode``: it looks each point's layout up (a new ``Layout`` per
access), checks every register, joins bytes register by register and
picks the struct format by name.  On an RS-485 line polled back to back
that was ~15 % of the CPU per transaction (four lines at 38400 baud).
Here each point gets, once, a closure that does only its own work: a 16-bit
point is one index, a wider one one ``struct`` unpack with the byte and
word order folded into a precomputed byte permutation.  The values are
exactly ``codec.decode``'s (tests/drivers/modbus/test_point_reader.py
compares them over every type and order); strings and odd cases simply
call ``codec.decode``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from drivers.errors import BadReply
from drivers.modbus import codec
from drivers.modbus.planner import ReadRequest
from drivers.modbus.profile import Point

Decoder = Callable[[list], Any]  # the request's values (registers or bits) -> the point's engineering value

_FORMATS = {"u32": "I", "i32": "i", "f32": "f", "u64": "Q", "i64": "q", "f64": "d"}


def _engineering(point: Point) -> Callable[[Any], Any]:
    scale, offset = point.scale, point.offset
    if scale == 1 and offset == 0:
        return lambda raw: raw
    return lambda raw: codec.to_engineering(raw, scale, offset)


def _permutation(n_regs: int, layout: codec.Layout) -> list[int]:
    """Where each byte of the big-endian value sits in the registers as sent (``codec._to_bytes``'s order)."""
    order = list(range(n_regs))
    if layout.word_order == "little":
        order.reverse()
    out: list[int] = []
    for r in order:
        hi, lo = 2 * r, 2 * r + 1
        out += [lo, hi] if layout.byte_order == "little" else [hi, lo]
    return out


def _slow(point: Point, start: int) -> Decoder:
    layout, n = point.layout, point.layout.registers

    def decode(values: list) -> Any:
        try:
            return codec.decode(values[start:start + n], layout)
        except codec.DecodeError as exc:
            raise BadReply(f"{point.name}: {exc}") from None
    return decode


def compile_point(point: Point, start: int, bits: bool) -> Decoder:
    """The decoder of ``point``, whose first value is ``values[start]`` of its request's reply."""
    eng = _engineering(point)
    if bits:
        return lambda values: eng(bool(values[start]))
    layout = point.layout
    if layout.type == "u16" and layout.byte_order == "big":
        return lambda values: eng(values[start])
    if layout.type == "i16" and layout.byte_order == "big":
        return lambda values: eng(values[start] - 0x10000 if values[start] & 0x8000 else values[start])
    if layout.type == "bool":
        return lambda values: eng(bool(values[start]))
    fmt = _FORMATS.get(layout.type)
    if fmt is None:  # strings, little-endian 16-bit: rare, left to the codec
        slow = _slow(point, start)
        return lambda values: eng(slow(values))
    n = layout.registers
    pack = struct.Struct(f">{n}H").pack
    unpack = struct.Struct(f">{fmt}").unpack
    perm = _permutation(n, layout)
    is_f32 = fmt == "f"
    identity = perm == list(range(2 * n))

    def decode(values: list) -> Any:
        raw = pack(*values[start:start + n])
        if not identity:
            raw = bytes(raw[i] for i in perm)
        value = unpack(raw)[0]
        return eng(codec.shortest_f32(value) if is_f32 else value)
    return decode


def compile_request(request: ReadRequest, points: dict[str, Point]) -> list[tuple[Point, Decoder]]:
    """Each point of a merged read with its decoder, in the request's span order."""
    bits = request.table in ("coil", "discrete")
    return [(points[s.key], compile_point(points[s.key], s.address - request.address, bits)) for s in request.spans]


def decode_all(compiled: list[tuple[Point, Decoder]], values: list, out: list) -> None:
    """Append ``(point, value)`` for every point of one request's reply; a value that does not decode is a BadReply."""
    for point, decoder in compiled:
        try:
            out.append((point, decoder(values)))
        except struct.error as exc:  # a register out of range: not a 16-bit word
            raise BadReply(f"{point.name}: register value is not a 16-bit word ({exc})") from None
