"""Read planning: few requests, never over a limit, every point read exactly once."""

from __future__ import annotations

import random

import pytest

from drivers.modbus.codec import DecodeError
from drivers.modbus.planner import PROTOCOL_MAX, ReadRequest, Span, plan_reads, slice_for


def S(key, address, count=1, table="holding") -> Span:
    return Span(key, table, address, count)


def shape(requests: list[ReadRequest]) -> list[tuple[str, int, int]]:
    return [(r.table, r.address, r.count) for r in requests]


def keys(request: ReadRequest) -> list[str]:
    return [s.key for s in request.spans]


# --------------------------------------------------------------------------- merging


def test_no_spans_no_requests():
    assert plan_reads([]) == []


def test_single_span():
    reqs = plan_reads([S("a", 10, 2)])
    assert shape(reqs) == [("holding", 10, 2)]
    assert keys(reqs[0]) == ["a"]


def test_adjacent_spans_merge_into_one_request():
    reqs = plan_reads([S("a", 0), S("b", 1), S("c", 2, 2), S("d", 4, 4)])
    assert shape(reqs) == [("holding", 0, 8)]
    assert keys(reqs[0]) == ["a", "b", "c", "d"]


def test_input_order_does_not_matter():
    spans = [S("d", 4, 4), S("a", 0), S("c", 2, 2), S("b", 1)]
    reqs = plan_reads(spans)
    assert shape(reqs) == [("holding", 0, 8)]
    assert keys(reqs[0]) == ["a", "b", "c", "d"]


def test_gap_equal_to_max_gap_is_merged():
    # a ends at 2; b starts at 2 + 8: a hole of exactly 8 registers
    reqs = plan_reads([S("a", 0, 2), S("b", 10)], max_gap=8)
    assert shape(reqs) == [("holding", 0, 11)]


def test_gap_larger_than_max_gap_splits():
    reqs = plan_reads([S("a", 0, 2), S("b", 11)], max_gap=8)
    assert shape(reqs) == [("holding", 0, 2), ("holding", 11, 1)]
    assert [keys(r) for r in reqs] == [["a"], ["b"]]


def test_max_gap_zero_merges_only_touching_spans():
    reqs = plan_reads([S("a", 0), S("b", 1), S("c", 3)], max_gap=0)
    assert shape(reqs) == [("holding", 0, 2), ("holding", 3, 1)]


def test_real_profile_layout_soil_probe():
    # soil_probe: 0,1,2 u16/i16 and an i32 at 4 (hole at 3)
    spans = [S("moisture", 0), S("temperature", 1), S("ec", 2), S("water_potential", 4, 2)]
    assert shape(plan_reads(spans)) == [("holding", 0, 6)]
    assert shape(plan_reads(spans, max_gap=0)) == [("holding", 0, 3), ("holding", 4, 2)]


# --------------------------------------------------------------------------- limits


def test_max_registers_limit_splits_requests():
    spans = [S(f"p{i}", i * 2, 2) for i in range(10)]  # 0..19, contiguous
    reqs = plan_reads(spans, max_registers=6)
    assert shape(reqs) == [("holding", 0, 6), ("holding", 6, 6), ("holding", 12, 6), ("holding", 18, 2)]
    assert all(r.count <= 6 for r in reqs)


def test_request_exactly_at_limit_is_allowed():
    reqs = plan_reads([S("a", 0, 100), S("b", 100, 25)])
    assert shape(reqs) == [("holding", 0, 125)]


def test_protocol_limit_of_125_registers_applies_even_if_more_is_asked():
    reqs = plan_reads([S("a", 0, 100), S("b", 100, 26)], max_registers=1000)
    assert shape(reqs) == [("holding", 0, 100), ("holding", 100, 26)]


def test_gap_does_not_let_a_request_exceed_the_limit():
    reqs = plan_reads([S("a", 0, 4), S("b", 8, 4)], max_registers=10, max_gap=8)
    assert shape(reqs) == [("holding", 0, 4), ("holding", 8, 4)]


def test_span_larger_than_limit_raises():
    with pytest.raises(ValueError, match="big"):
        plan_reads([S("big", 0, 10)], max_registers=8)


def test_span_larger_than_protocol_limit_raises():
    with pytest.raises(ValueError, match="125"):
        plan_reads([S("huge", 0, 126)])


def test_span_exactly_the_limit_is_fine():
    assert shape(plan_reads([S("a", 0, 8)], max_registers=8)) == [("holding", 0, 8)]


# --------------------------------------------------------------------------- tables


def test_tables_are_never_mixed():
    spans = [
        S("h0", 0, table="holding"),
        S("i0", 0, table="input"),
        S("h1", 1, table="holding"),
        S("i1", 1, table="input"),
        S("c0", 0, table="coil"),
        S("d0", 0, table="discrete"),
    ]
    reqs = plan_reads(spans)
    assert sorted(shape(reqs)) == [
        ("coil", 0, 1),
        ("discrete", 0, 1),
        ("holding", 0, 2),
        ("input", 0, 2),
    ]
    for r in reqs:
        assert all(s.table == r.table for s in r.spans)


def test_coils_use_bit_limits_not_register_limits():
    # 200 contiguous coils: far more than 125, still one request
    spans = [S(f"c{i}", i, table="coil") for i in range(200)]
    reqs = plan_reads(spans)
    assert shape(reqs) == [("coil", 0, 200)]


def test_coils_capped_at_2000_bits():
    spans = [S(f"c{i}", i, table="discrete") for i in range(2001)]
    reqs = plan_reads(spans)
    assert shape(reqs) == [("discrete", 0, 2000), ("discrete", 2000, 1)]
    assert PROTOCOL_MAX["coil"] == PROTOCOL_MAX["discrete"] == 2000


def test_coil_limit_follows_max_registers_in_register_equivalents():
    # a device that takes 2-register reads takes 32-bit coil reads
    spans = [S(f"c{i}", i, table="coil") for i in range(40)]
    reqs = plan_reads(spans, max_registers=2)
    assert shape(reqs) == [("coil", 0, 32), ("coil", 32, 8)]


def test_coil_gap_is_counted_in_register_equivalents():
    # max_gap=1 register == 16 bits of hole
    assert shape(plan_reads([S("a", 0, table="coil"), S("b", 17, table="coil")], max_gap=1)) == [("coil", 0, 18)]
    assert shape(plan_reads([S("a", 0, table="coil"), S("b", 18, table="coil")], max_gap=1)) == [
        ("coil", 0, 1),
        ("coil", 18, 1),
    ]


# --------------------------------------------------------------------------- overlaps


def test_overlapping_spans_share_a_request():
    # a u32 at 0 and a u16 view of its low word at 1
    reqs = plan_reads([S("whole", 0, 2), S("low", 1, 1)])
    assert shape(reqs) == [("holding", 0, 2)]
    assert keys(reqs[0]) == ["whole", "low"]


def test_span_inside_another_does_not_shrink_the_request():
    reqs = plan_reads([S("outer", 0, 10), S("inner", 2, 2), S("after", 10)])
    assert shape(reqs) == [("holding", 0, 11)]


def test_same_address_twice():
    reqs = plan_reads([S("a", 5), S("b", 5)])
    assert shape(reqs) == [("holding", 5, 1)]
    assert sorted(keys(reqs[0])) == ["a", "b"]


def test_overlap_that_would_exceed_the_limit_starts_a_new_request():
    reqs = plan_reads([S("a", 0, 8), S("b", 4, 8)], max_registers=8)
    assert shape(reqs) == [("holding", 0, 8), ("holding", 4, 8)]
    assert [keys(r) for r in reqs] == [["a"], ["b"]]


# --------------------------------------------------------------------------- invalid spans


@pytest.mark.parametrize(
    "span",
    [
        Span("t", "register", 0, 1),  # no such table: must not vanish silently
        Span("z", "holding", 0, 0),
        Span("n", "holding", 0, -1),
        Span("neg", "holding", -1, 1),
        Span("hi", "holding", 65535, 2),
    ],
)
def test_invalid_spans_raise(span):
    with pytest.raises(ValueError, match=span.key):
        plan_reads([span])


def test_last_address_is_fine():
    assert shape(plan_reads([S("last", 65535)])) == [("holding", 65535, 1)]


# --------------------------------------------------------------------------- slice_for


def test_slice_for_returns_each_spans_values():
    spans = [S("a", 10), S("b", 11, 2), S("c", 16, 2)]
    (req,) = plan_reads(spans)
    assert (req.address, req.count) == (10, 8)
    reply = list(range(100, 108))  # register 10 -> 100, 11 -> 101, ...
    assert slice_for(req, spans[0], reply) == [100]
    assert slice_for(req, spans[1], reply) == [101, 102]
    assert slice_for(req, spans[2], reply) == [106, 107]


def test_slice_for_coils_ignores_padding_bits():
    spans = [S("z1", 3, table="coil"), S("z2", 5, table="coil")]
    (req,) = plan_reads(spans)
    bits = [False, False, True, False, False, False, False, False]  # padded to 8 by the reply
    assert req.address == 3
    assert slice_for(req, spans[0], bits) == [False]
    assert slice_for(req, spans[1], bits) == [True]


def test_slice_for_short_reply_raises_decode_error():
    spans = [S("a", 0), S("b", 1, 2)]
    (req,) = plan_reads(spans)
    with pytest.raises(DecodeError):
        slice_for(req, spans[1], [1, 2])


def test_slice_for_span_outside_request_raises():
    (req,) = plan_reads([S("a", 10, 2)])
    with pytest.raises(ValueError):
        slice_for(req, S("before", 9), [1, 2])
    with pytest.raises(ValueError):
        slice_for(req, S("after", 11, 2), [1, 2, 3])
    with pytest.raises(ValueError):
        slice_for(req, S("other_table", 10, table="input"), [1, 2])


# --------------------------------------------------------------------------- property-style


def _random_spans(rng: random.Random) -> list[Span]:
    spans = []
    for i in range(rng.randint(0, 40)):
        table = rng.choice(["coil", "discrete", "holding", "input"])
        if table in ("coil", "discrete"):
            count = 1 if rng.random() < 0.8 else rng.randint(1, 64)
        else:
            count = rng.choice([1, 1, 1, 2, 2, 4, rng.randint(1, 20)])
        address = rng.randint(0, 300 if rng.random() < 0.7 else 65536 - count)
        spans.append(Span(f"s{i}", table, address, count))
    return spans


def test_random_span_sets_are_covered_exactly_once_within_limits():
    rng = random.Random(20240611)
    for _ in range(400):
        spans = _random_spans(rng)
        max_registers = rng.choice([1, 2, 8, 20, 64, 125])
        max_gap = rng.choice([0, 1, 3, 8, 30])
        limit = {t: min(PROTOCOL_MAX[t], max_registers * (16 if t in ("coil", "discrete") else 1)) for t in PROTOCOL_MAX}
        too_big = [s for s in spans if s.count > limit[s.table]]
        if too_big:
            with pytest.raises(ValueError):
                plan_reads(spans, max_registers, max_gap)
            spans = [s for s in spans if s not in too_big]
        reqs = plan_reads(spans, max_registers, max_gap)

        seen: dict[str, int] = {}
        for r in reqs:
            assert 1 <= r.count <= limit[r.table], (r, max_registers)
            assert 0 <= r.address and r.address + r.count <= 0x10000
            assert r.spans, "a request reads nothing"
            for s in r.spans:
                assert s.table == r.table
                assert r.address <= s.address and s.end <= r.address + r.count
                seen[s.key] = seen.get(s.key, 0) + 1
            # the request does not reach beyond its spans
            assert r.address == min(s.address for s in r.spans)
            assert r.address + r.count == max(s.end for s in r.spans)
        assert seen == {s.key: 1 for s in spans}

        # neighbours in one table are only split for a reason
        by_table: dict[str, list[ReadRequest]] = {}
        for r in reqs:
            by_table.setdefault(r.table, []).append(r)
        for table, rs in by_table.items():
            rs.sort(key=lambda r: r.address)
            gap = max_gap * (16 if table in ("coil", "discrete") else 1)
            for a, b in zip(rs, rs[1:]):
                hole = b.address - (a.address + a.count)
                merged = max(a.address + a.count, b.address + b.count) - a.address
                assert hole > gap or merged > limit[table], (a, b)


def test_random_slices_hand_back_the_right_values():
    rng = random.Random(7)
    for _ in range(200):
        spans = [s for s in _random_spans(rng) if s.table in ("holding", "input")]
        for r in plan_reads(spans):
            reply = list(range(r.address, r.address + r.count))  # value == address
            for s in r.spans:
                assert slice_for(r, s, reply) == list(range(s.address, s.end))
