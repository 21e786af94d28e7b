"""The read fast path (rtu_reads): the same frames and the same decoded replies as pymodbus builds."""

from __future__ import annotations

import random

import pytest
from pymodbus.client.mixin import ModbusClientMixin
from pymodbus.pdu import DecodePDU

from drivers.modbus import framing
from drivers.modbus.rtu_reads import CACHE_LIMIT, ReadFrames, decode_reply

METHODS = {1: "read_coils", 2: "read_discrete_inputs", 3: "read_holding_registers", 4: "read_input_registers"}


class _Capture(ModbusClientMixin):
    def execute(self, no_response_expected, request):  # what pymodbus would put on the wire
        return request


@pytest.mark.parametrize("fc", [1, 2, 3, 4])
def test_frames_are_pymodbus_requests_with_our_crc(fc):
    frames = ReadFrames("rtu")
    for unit, address, count in ((1, 0, 1), (17, 300, 10), (247, 65535, 1), (5, 12, 125)):
        req = getattr(_Capture(), METHODS[fc])(address, count=count, device_id=unit)
        pdu = bytes((fc,)) + req.encode()
        frame, got_pdu, chars = frames.get(unit, fc, address, count)
        assert frame == framing.rtu_encode(unit, pdu) and got_pdu == pdu
        assert chars == framing.expected_reply_length(pdu)
        assert frames.get(unit, fc, address, count)[0] is frame  # built once
    ascii_frame, _, chars = ReadFrames("ascii").get(1, fc, 0, 2)
    assert ascii_frame == framing.ascii_encode(1, bytes((fc, 0, 0, 0, 2))) and chars % 2 == 1


def test_bad_requests_are_refused_as_pymodbus_does():
    frames = ReadFrames("rtu")
    for args, match in (((1, 3, 0, 0), "count"), ((1, 3, 0, 126), "count"), ((1, 1, 0, 2001), "count"),
                        ((1, 3, 70000, 1), "address"), ((300, 3, 0, 1), "ID")):
        with pytest.raises(ValueError, match=match):
            frames.get(*args)


def test_the_cache_is_bounded():
    frames = ReadFrames("rtu")
    for unit in range(1, 248):
        for address in range(8):
            frames.get(unit, 3, address, 1)
    assert len(frames._cache) <= CACHE_LIMIT


def test_replies_decode_as_pymodbus_decodes_them():
    rng = random.Random(7)
    decoder = DecodePDU(is_server=False)
    for _ in range(400):
        fc = rng.choice((1, 2, 3, 4))
        n = rng.randrange(1, 40)
        pdu = bytes((fc, n)) + bytes(rng.randrange(256) for _ in range(n))
        ours, theirs = decode_reply(pdu, 9), decoder.decode(pdu)
        assert ours.function_code == theirs.function_code and not ours.isError() and ours.dev_id == 9
        assert ours.registers == theirs.registers and ours.bits == theirs.bits
    for fc in (1, 2, 3, 4, 5, 16):
        ours = decode_reply(bytes((fc | 0x80, 2)), 3)
        assert ours.isError() and ours.exception_code == 2 and ours.function_code == fc | 0x80
    assert decode_reply(bytes((5, 0, 1, 0xFF, 0)), 1) is None  # writes: left to pymodbus
    assert decode_reply(bytes((3, 4, 0, 1)), 1) is None  # short: pymodbus words the error
