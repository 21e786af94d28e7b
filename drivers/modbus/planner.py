"""Merge a device's points into as few Modbus read requests as possible.

Each request on a slow line costs a round trip, so adjacent points (and small
holes between them) are read together, up to the protocol's and the device's
limits.  Pure: unit-tested without any I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from drivers.modbus.codec import DecodeError

Table = Literal["coil", "discrete", "holding", "input"]

# Modbus limits per request: 125 registers, 2000 bits.
PROTOCOL_MAX = {"holding": 125, "input": 125, "coil": 2000, "discrete": 2000}


@dataclass(frozen=True, slots=True)
class Span:
    """Something to read: a table, a start address, a length."""

    key: str
    table: Table
    address: int
    count: int

    @property
    def end(self) -> int:
        return self.address + self.count


@dataclass(slots=True)
class ReadRequest:
    table: Table
    address: int
    count: int
    spans: list[Span] = field(default_factory=list)


def plan_reads(spans: list[Span], max_registers: int = 125, max_gap: int = 8) -> list[ReadRequest]:
    """Group spans into read requests.

    Spans of one table are sorted by address and merged while the request stays
    within ``max_registers`` and the hole between neighbours is at most
    ``max_gap`` registers.  For coil/discrete tables both are counted in
    register-equivalents: 16 bits per register, capped at the protocol's 2000
    bits.  Every span ends up in exactly one request; a span that alone exceeds
    the limit, or that is not a valid table/address range, raises ValueError.
    """
    requests: list[ReadRequest] = []
    by_table: dict[str, list[Span]] = {}
    for span in spans:
        if span.table not in PROTOCOL_MAX:
            raise ValueError(f"{span.key}: unknown table {span.table!r}")
        if span.count < 1:
            raise ValueError(f"{span.key}: count must be at least 1, not {span.count}")
        if span.address < 0 or span.end > 0x10000:
            raise ValueError(f"{span.key}: addresses {span.address}..{span.end - 1} are outside 0..65535")
        by_table.setdefault(span.table, []).append(span)
    for table in ("coil", "discrete", "holding", "input"):
        group = sorted(by_table.get(table, []), key=lambda s: (s.address, s.count))
        limit = min(PROTOCOL_MAX[table], max_registers * (16 if table in ("coil", "discrete") else 1))
        gap = max_gap * (16 if table in ("coil", "discrete") else 1)
        current: ReadRequest | None = None
        for span in group:
            if span.count > limit:
                raise ValueError(f"{span.key}: {span.count} units exceed the {limit}-unit request limit")
            if current is not None:
                end = current.address + current.count
                new_end = max(end, span.end)
                if span.address - end <= gap and new_end - current.address <= limit:
                    current.count = new_end - current.address
                    current.spans.append(span)
                    continue
            current = ReadRequest(table, span.address, span.count, [span])
            requests.append(current)
    return requests


def slice_for(request: ReadRequest, span: Span, values: list) -> list:
    """The part of a request's reply that belongs to one span.

    ``values`` may be longer than the request (coil replies are padded to whole
    bytes).  A span outside the request raises ValueError; a reply too short to
    hold the span raises DecodeError (a ValueError) rather than handing back a
    short slice.
    """
    start = span.address - request.address
    if span.table != request.table or start < 0 or start + span.count > request.count:
        raise ValueError(f"{span.key} is not inside the {request.table} read at {request.address}+{request.count}")
    if start + span.count > len(values):
        raise DecodeError(f"reply has {len(values)} values, {span.key} needs {start + span.count}")
    return values[start : start + span.count]
