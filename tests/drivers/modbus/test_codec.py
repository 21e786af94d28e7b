"""Register <-> value conversion, checked against register images written by hand.

The expected register values below are what a real device sends (worked out
from IEEE-754 / two's complement by hand, not by calling the codec), so a bug
that is symmetric in encode and decode still fails here.
"""

from __future__ import annotations

import math

import pytest

from drivers.modbus.codec import (
    DecodeError,
    Layout,
    decode,
    encode,
    from_engineering,
    register_count,
    to_engineering,
)

ORDERS = [("big", "big"), ("big", "little"), ("little", "big"), ("little", "little")]


def L(type_, byte_order="big", word_order="big", length=1) -> Layout:
    return Layout(type_, byte_order, word_order, length)


# --------------------------------------------------------------------------- decode, known images


@pytest.mark.parametrize(
    ("type_", "regs", "expected"),
    [
        ("bool", [0], False),
        ("bool", [1], True),
        ("bool", [0xFF00], True),  # the coil "ON" value
        ("u16", [0], 0),
        ("u16", [0x1234], 0x1234),
        ("u16", [0xFFFF], 65535),
        ("i16", [0xFFFF], -1),
        ("i16", [0x8000], -32768),
        ("i16", [0x7FFF], 32767),
        ("i16", [0xFF38], -200),  # -20.0 degC in tenths
        ("u32", [0x0001, 0x0000], 65536),
        ("u32", [0x0000, 0x0001], 1),
        ("u32", [0xFFFF, 0xFFFF], 4294967295),
        ("u32", [0x1234, 0x5678], 0x12345678),
        ("i32", [0xFFFF, 0xFFFE], -2),
        ("i32", [0x8000, 0x0000], -(2**31)),
        ("i32", [0x0001, 0x86A0], 100000),
        ("u64", [0x0102, 0x0304, 0x0506, 0x0708], 0x0102030405060708),
        ("u64", [0xFFFF] * 4, 2**64 - 1),
        ("i64", [0xFFFF] * 4, -1),
        ("i64", [0x8000, 0, 0, 0], -(2**63)),
        ("f32", [0x3F80, 0x0000], 1.0),
        ("f32", [0xC020, 0x0000], -2.5),
        ("f32", [0x0000, 0x0000], 0.0),
        ("f64", [0x3FF0, 0, 0, 0], 1.0),
        ("f64", [0xC000, 0, 0, 0], -2.0),
    ],
)
def test_decode_big_endian_known_values(type_, regs, expected):
    value = decode(regs, L(type_))
    assert value == expected
    assert type(value) is type(expected)


def test_decode_f32_123_456_big_endian():
    assert decode([0x42F6, 0xE979], L("f32")) == pytest.approx(123.456, abs=1e-5)


def test_decode_f32_word_order_little_cdab():
    # The same float as most weather stations send it: low word first.
    assert decode([0xE979, 0x42F6], L("f32", word_order="little")) == pytest.approx(123.456, abs=1e-5)


def test_decode_f32_byte_order_little_badc():
    assert decode([0xF642, 0x79E9], L("f32", byte_order="little")) == pytest.approx(123.456, abs=1e-5)


def test_decode_f32_both_little_dcba():
    assert decode([0x79E9, 0xF642], L("f32", "little", "little")) == pytest.approx(123.456, abs=1e-5)


def test_decode_f32_wrong_word_order_gives_a_different_value():
    # Guard against an implementation that ignores word_order.
    assert decode([0xE979, 0x42F6], L("f32")) != pytest.approx(123.456, abs=1)


def test_decode_f64_pi():
    # 0x400921FB54442D18 is math.pi
    assert decode([0x4009, 0x21FB, 0x5444, 0x2D18], L("f64")) == math.pi
    assert decode([0x2D18, 0x5444, 0x21FB, 0x4009], L("f64", word_order="little")) == math.pi


@pytest.mark.parametrize(
    ("byte_order", "word_order", "regs"),
    [
        ("big", "big", [0x1234, 0x5678]),  # ABCD
        ("big", "little", [0x5678, 0x1234]),  # CDAB
        ("little", "big", [0x3412, 0x7856]),  # BADC
        ("little", "little", [0x7856, 0x3412]),  # DCBA
    ],
)
def test_decode_u32_in_all_four_orders(byte_order, word_order, regs):
    assert decode(regs, L("u32", byte_order, word_order)) == 0x12345678


def test_decode_u16_byte_order_little_swaps_the_two_bytes():
    assert decode([0x3412], L("u16", byte_order="little")) == 0x1234
    # word order means nothing for a single register
    assert decode([0x1234], L("u16", word_order="little")) == 0x1234


def test_decode_i16_byte_order_little():
    assert decode([0xFEFF], L("i16", byte_order="little")) == -2


def test_decode_u64_word_order_little_reverses_all_four_registers():
    regs = [0x0708, 0x0506, 0x0304, 0x0102]
    assert decode(regs, L("u64", word_order="little")) == 0x0102030405060708


def test_decode_i64_byte_order_little():
    regs = [0x0201, 0x0403, 0x0605, 0x0807]
    assert decode(regs, L("i64", byte_order="little")) == 0x0102030405060708


def test_decode_accepts_a_tuple():
    assert decode((0x0001, 0x0000), L("u32")) == 65536


# --------------------------------------------------------------------------- strings


def test_decode_string_big_endian():
    assert decode([0x4142, 0x4344], L("string", length=2)) == "ABCD"


def test_decode_string_stops_at_first_nul():
    assert decode([0x4142, 0x4300], L("string", length=2)) == "ABC"
    assert decode([0x4100, 0x4344], L("string", length=2)) == "A"  # junk after NUL ignored


def test_decode_string_all_nul_is_empty():
    assert decode([0, 0, 0], L("string", length=3)) == ""


def test_decode_string_strips_trailing_space_padding_only():
    assert decode([0x4142, 0x2020], L("string", length=2)) == "AB"
    assert decode([0x2041, 0x4220], L("string", length=2)) == " AB"


def test_decode_string_byte_order_little():
    # Some devices put the first character in the low byte.
    assert decode([0x4241, 0x4443], L("string", byte_order="little", length=2)) == "ABCD"


def test_decode_string_not_ascii_raises():
    with pytest.raises(DecodeError, match="ASCII"):
        decode([0xC3A9], L("string", length=1))


def test_encode_string_pads_with_nul():
    assert encode("ABC", L("string", length=3)) == [0x4142, 0x4300, 0x0000]


def test_encode_string_byte_order_little():
    assert encode("ABCD", L("string", byte_order="little", length=2)) == [0x4241, 0x4443]


def test_encode_string_too_long_raises_instead_of_truncating():
    with pytest.raises(ValueError, match="longer"):
        encode("ABCDE", L("string", length=2))


def test_encode_string_exactly_full_fits():
    assert encode("ABCD", L("string", length=2)) == [0x4142, 0x4344]


def test_encode_string_not_ascii_raises_value_error():
    with pytest.raises(ValueError):
        encode("温度", L("string", length=4))


# --------------------------------------------------------------------------- encode, known images


@pytest.mark.parametrize(
    ("type_", "value", "regs"),
    [
        ("bool", True, [1]),
        ("bool", False, [0]),
        ("u16", 65535, [0xFFFF]),
        ("i16", -1, [0xFFFF]),
        ("i16", -200, [0xFF38]),
        ("u32", 65536, [0x0001, 0x0000]),
        ("i32", -2, [0xFFFF, 0xFFFE]),
        ("u64", 0x0102030405060708, [0x0102, 0x0304, 0x0506, 0x0708]),
        ("i64", -1, [0xFFFF] * 4),
        ("f32", 123.456, [0x42F6, 0xE979]),
        ("f32", -2.5, [0xC020, 0x0000]),
        ("f64", math.pi, [0x4009, 0x21FB, 0x5444, 0x2D18]),
    ],
)
def test_encode_big_endian_known_values(type_, value, regs):
    assert encode(value, L(type_)) == regs


@pytest.mark.parametrize(
    ("byte_order", "word_order", "regs"),
    [
        ("big", "big", [0x42F6, 0xE979]),
        ("big", "little", [0xE979, 0x42F6]),
        ("little", "big", [0xF642, 0x79E9]),
        ("little", "little", [0x79E9, 0xF642]),
    ],
)
def test_encode_f32_all_four_orders(byte_order, word_order, regs):
    assert encode(123.456, L("f32", byte_order, word_order)) == regs


def test_encode_integer_type_rounds_floats():
    assert encode(12.6, L("u16")) == [13]
    assert encode(-1.4, L("i16")) == [0xFFFF]


# --------------------------------------------------------------------------- round trips

ROUND_TRIP_VALUES = {
    "bool": [True, False],
    "u16": [0, 1, 0x1234, 65535],
    "i16": [-32768, -1, 0, 1, 32767],
    "u32": [0, 65535, 65536, 0x12345678, 2**32 - 1],
    "i32": [-(2**31), -65536, -1, 0, 2**31 - 1],
    "u64": [0, 2**32, 0x0102030405060708, 2**64 - 1],
    "i64": [-(2**63), -1, 0, 2**63 - 1],
    # exactly representable in binary32
    "f32": [0.0, 1.5, -0.15625, 1048576.25, 3.4028234663852886e38],
    "f64": [0.0, math.pi, -1e-300, 1.7976931348623157e308],
}


@pytest.mark.parametrize(("byte_order", "word_order"), ORDERS)
@pytest.mark.parametrize("type_", sorted(ROUND_TRIP_VALUES))
def test_round_trip_numeric(type_, byte_order, word_order):
    layout = L(type_, byte_order, word_order)
    for value in ROUND_TRIP_VALUES[type_]:
        regs = encode(value, layout)
        assert len(regs) == register_count(layout)
        assert all(isinstance(r, int) and 0 <= r <= 0xFFFF for r in regs)
        back = decode(regs, layout)
        assert type(back) is type(value), (value, regs, back)
        if type_ == "f32":  # reported as the shortest decimal of the same float32
            assert encode(back, layout) == regs, (value, regs, back)
        else:
            assert back == value, (value, regs, back)


@pytest.mark.parametrize(("byte_order", "word_order"), ORDERS)
def test_round_trip_f32_keeps_float32_precision(byte_order, word_order):
    layout = L("f32", byte_order, word_order)
    regs = encode(123.456, layout)
    back = decode(regs, layout)
    assert back == 123.456  # not 123.45600128173828: no digits the sensor never sent
    assert encode(back, layout) == regs


@pytest.mark.parametrize(("byte_order", "word_order"), ORDERS)
def test_round_trip_string(byte_order, word_order):
    layout = L("string", byte_order, word_order, length=4)
    for text in ["", "A", "SOIL-01", "ABCDEFGH"]:
        assert decode(encode(text, layout), layout) == text


@pytest.mark.parametrize(("byte_order", "word_order"), [("big", "little"), ("little", "big"), ("little", "little")])
def test_non_default_orders_really_change_the_registers(byte_order, word_order):
    assert encode(0x12345678, L("u32", byte_order, word_order)) != [0x1234, 0x5678]


def test_nan_and_inf_survive_f32():
    layout = L("f32", word_order="little")
    assert math.isnan(decode(encode(float("nan"), layout), layout))
    assert decode(encode(float("inf"), layout), layout) == float("inf")


# --------------------------------------------------------------------------- bad replies


@pytest.mark.parametrize(
    ("layout", "regs"),
    [
        (L("u16"), []),
        (L("u16"), [1, 2]),
        (L("bool"), []),
        (L("u32"), [1]),
        (L("i32"), [1, 2, 3]),
        (L("f32"), [0x42F6]),
        (L("u64"), [1, 2, 3]),
        (L("f64"), [1, 2]),
        (L("string", length=3), [0x4142, 0x4344]),
    ],
)
def test_wrong_register_count_raises_decode_error(layout, regs):
    with pytest.raises(DecodeError, match=r"needs \d+ register"):
        decode(regs, layout)


@pytest.mark.parametrize("bad", [-1, 0x10000, 70000])
def test_out_of_range_register_raises_decode_error(bad):
    with pytest.raises(DecodeError, match="16-bit"):
        decode([0, bad], L("u32"))


@pytest.mark.parametrize("bad", [1.5, None, "1"])
def test_non_integer_register_raises_decode_error(bad):
    with pytest.raises(DecodeError):
        decode([bad], L("u16"))


def test_decode_error_is_a_value_error():
    assert issubclass(DecodeError, ValueError)


# --------------------------------------------------------------------------- encode out of range


@pytest.mark.parametrize(
    ("type_", "value"),
    [
        ("u16", 65536),
        ("u16", -1),
        ("i16", 32768),
        ("i16", -32769),
        ("u32", 2**32),
        ("u32", -1),
        ("i32", 2**31),
        ("u64", 2**64),
        ("i64", -(2**63) - 1),
        ("f32", 1e39),  # beyond binary32: OverflowError inside struct
        ("f32", -1e39),
        ("u16", float("nan")),
        ("i32", float("inf")),
        ("u16", "twelve"),
    ],
)
def test_encode_out_of_range_raises_value_error(type_, value):
    with pytest.raises(ValueError):
        encode(value, L(type_))


# --------------------------------------------------------------------------- scale and offset


def test_to_engineering_keeps_ints_without_scaling():
    value = to_engineering(1234, 1, 0)
    assert value == 1234 and type(value) is int
    value = to_engineering(1234, 1.0, 0.0)  # what a profile's float defaults look like
    assert value == 1234 and type(value) is int


def test_to_engineering_keeps_a_float_a_float():
    assert to_engineering(2.5, 1.0, 0.0) == 2.5


def test_to_engineering_applies_scale():
    assert to_engineering(253, 0.1, 0) == 25.3
    assert to_engineering(3, 0.1, 0) == 0.3  # rounded, not 0.30000000000000004
    assert to_engineering(7, 0.01, 0) == 0.07  # not 0.07000000000000001
    assert to_engineering(-200, 0.1, 0) == -20.0
    assert to_engineering(123456, 0.001, 0) == 123.456


def test_to_engineering_applies_offset_and_scale():
    assert to_engineering(100, 1, -40) == 60
    assert to_engineering(1000, 0.1, -40) == 60.0
    assert to_engineering(4, 2.5, 1) == 11.0


def test_to_engineering_leaves_bool_and_text_alone():
    assert to_engineering(True, 10, 5) is True
    assert to_engineering(False, 10, 5) is False
    assert to_engineering("ABC", 10, 5) == "ABC"


def test_from_engineering_inverts_to_engineering():
    for raw in [0, 1, 253, 65535]:
        eng = to_engineering(raw, 0.1, -40)
        assert from_engineering(eng, 0.1, -40) == pytest.approx(raw)


def test_register_count_per_type():
    counts = {"bool": 1, "u16": 1, "i16": 1, "u32": 2, "i32": 2, "f32": 2, "u64": 4, "i64": 4, "f64": 4}
    for type_, n in counts.items():
        assert register_count(L(type_)) == n
    assert register_count(L("string", length=7)) == 7


def test_f32_is_reported_as_its_shortest_decimal():
    from drivers.modbus.codec import Layout, decode, encode

    lay = Layout("f32")
    assert decode(encode(20.86, lay), lay) == 20.86
    assert decode([0x42F6, 0xE979], lay) == 123.456
    assert decode(encode(-0.1, lay), lay) == -0.1
    # still the same float32 bits
    assert encode(decode([0x3DCC, 0xCCCD], lay), lay) == [0x3DCC, 0xCCCD]
