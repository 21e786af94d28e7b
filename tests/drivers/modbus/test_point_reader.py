"""Compiled point decoders (point_reader) give exactly codec.decode's values, for every type and order."""

from __future__ import annotations

import math
import random

import pytest

from drivers.errors import BadReply
from drivers.modbus import codec
from drivers.modbus.planner import Span, plan_reads
from drivers.modbus.point_reader import compile_point, compile_request, decode_all
from drivers.modbus.profile import Point

ORDERS = [("big", "big"), ("big", "little"), ("little", "big"), ("little", "little")]
TYPES = ["bool", "u16", "i16", "u32", "i32", "f32", "u64", "i64", "f64"]


def same(a, b) -> bool:
    return (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)) or \
        (a == b and type(a) is type(b))


@pytest.mark.parametrize("type_", TYPES)
@pytest.mark.parametrize("byte_order,word_order", ORDERS)
@pytest.mark.parametrize("scale,offset", [(1.0, 0.0), (0.1, -40.0)])
def test_every_type_and_order_matches_the_codec(type_, byte_order, word_order, scale, offset):
    rng = random.Random(f"{type_}{byte_order}{word_order}{scale}")
    point = Point(name="p", address=3, type=type_, byte_order=byte_order, word_order=word_order, scale=scale,
                  offset=offset)
    n = point.layout.registers
    specials = [[0] * n, [0xFFFF] * n, [0x8000] + [0] * (n - 1), [0x7FC0] + [0] * (n - 1)]
    for regs in specials + [[rng.randrange(0x10000) for _ in range(n)] for _ in range(300)]:
        values = [0x1111, 0x2222] + regs + [0x3333]  # the point starts at offset 2 of its request's reply
        want = codec.to_engineering(codec.decode(regs, point.layout), scale, offset)
        got = compile_point(point, 2, bits=False)(values)
        assert same(got, want), (type_, byte_order, word_order, regs, got, want)


def test_strings_and_bits_and_a_merged_request():
    points = {p.name: p for p in [
        Point(name="label", address=0, type="string", length=3),
        Point(name="temp", address=3, type="i16", scale=0.1),
        Point(name="energy", address=6, type="u32", word_order="little"),
    ]}
    (req,) = plan_reads([Span(p.name, p.table, p.address, p.count) for p in points.values()], max_gap=8)
    regs = list(codec.encode("AB", codec.Layout("string", length=3))) + [0xFF9C, 0, 0] + [0x5678, 0x1234]
    out: list = []
    decode_all(compile_request(req, points), regs, out)
    assert {p.name: v for p, v in out} == {"label": "AB", "temp": -10.0, "energy": 0x12345678}
    coil = Point(name="valve", table="coil", address=9)
    assert compile_point(coil, 1, bits=True)([False, True, False]) is True


def test_a_string_that_is_not_ascii_is_a_bad_reply():
    points = {"label": Point(name="label", address=0, type="string", length=1)}
    (req,) = plan_reads([Span("label", "holding", 0, 1)])
    with pytest.raises(BadReply, match="label"):
        decode_all(compile_request(req, points), [0xC3A9], [])
