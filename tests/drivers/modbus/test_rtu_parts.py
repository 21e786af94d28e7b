"""The pure pieces under ModbusRtuLine: reply parsing (rtu_transaction) and slave bookkeeping (rtu_slaves).

The line itself is tested end to end on ptys in test_rtu_line.py; these pin the
decisions without a wire or a clock.
"""

from __future__ import annotations

import pytest

from drivers.errors import BadReply, DeviceQuarantined, DeviceTimeout, DeviceUnreachable
from drivers.modbus import framing
from drivers.modbus.rtu_slaves import SlavePolicy, Slaves
from drivers.modbus.rtu_transaction import Broken, Reply, parse_ascii_reply, parse_rtu_reply

READ_3 = bytes((3, 4, 0x01, 0x52, 0x00, 0x07))  # fc 3, 4 data bytes


# -- reply parsing ------------------------------------------------------------------------------
def test_rtu_reply_is_complete_exactly_at_its_last_byte():
    frame = framing.rtu_encode(7, READ_3)
    for cut in range(len(frame)):
        assert parse_rtu_reply(frame[:cut], 7, 3) is None, cut
    assert parse_rtu_reply(frame, 7, 3) == Reply(READ_3, len(frame), 0)
    assert parse_rtu_reply(frame + b"\x00\x01", 7, 3) == Reply(READ_3, len(frame), 2)


def test_rtu_reply_other_unit_or_function_is_garbled_crc_error_is_counted_as_such():
    frame = framing.rtu_encode(7, READ_3)
    assert parse_rtu_reply(frame, 8, 3).counter == "garbled"
    assert parse_rtu_reply(frame, 7, 4).counter == "garbled"
    bad = frame[:-1] + bytes((frame[-1] ^ 0xFF,))
    assert parse_rtu_reply(bad, 7, 3) == Broken("crc_errors", "CRC error in reply from unit 7")


def test_rtu_exception_reply_parses_as_a_reply():
    frame = framing.rtu_encode(7, bytes((0x83, 2)))
    assert parse_rtu_reply(frame, 7, 3) == Reply(bytes((0x83, 2)), 5)


def test_ascii_reply_needs_crlf_and_checks_lrc():
    frame = framing.ascii_encode(17, READ_3)
    assert parse_ascii_reply(frame[:-1], 17, 3) is None
    assert parse_ascii_reply(b"\x00" + frame, 17, 3) == Reply(READ_3, len(frame))
    bad = frame[:-4] + (b"00" if frame[-4:-2] != b"00" else b"11") + b"\r\n"
    assert parse_ascii_reply(bad, 17, 3).counter == "crc_errors"
    assert parse_ascii_reply(frame, 1, 3).counter == "garbled"
    assert parse_ascii_reply(b"x" * (framing.ASCII_MAX + 1), 17, 3).counter == "garbled"
    assert parse_ascii_reply(b":" + b"0" * (framing.ASCII_MAX + 1), 17, 3).counter == "garbled"


# -- slave bookkeeping --------------------------------------------------------------------------
POLICY = SlavePolicy(quarantine_after=3, reprobe_interval=10.0, backoff_initial=1.0, backoff_max=1.0)


def test_failures_back_off_then_quarantine_then_a_probe_brings_the_slave_back():
    slaves = Slaves(POLICY, "line")
    s = slaves.get(5, "probe-5")
    assert slaves.admit(s, 0.0, command=False) is False
    slaves.failed(s, DeviceTimeout("no reply"), 0.0)
    assert s.state(0.1) == "backoff" and s.retry_at > 0
    with pytest.raises(DeviceTimeout, match="backing off"):
        slaves.admit(s, 0.1, command=False)
    assert slaves.admit(s, 0.1, command=True) is False  # a command is always tried
    slaves.failed(s, DeviceTimeout("no reply"), 2.0)
    with pytest.raises(DeviceQuarantined, match="quarantined after 3"):
        slaves.failed(s, DeviceTimeout("no reply"), 4.0)
    with pytest.raises(DeviceQuarantined, match="next re-probe"):
        slaves.admit(s, 5.0, command=False)
    assert s.skipped == 2
    assert slaves.admit(s, 14.0, command=False) is True  # the re-probe
    with pytest.raises(DeviceQuarantined, match="still not answering"):
        slaves.failed(s, BadReply("CRC"), 14.1)
    assert slaves.admit(s, 24.2, command=False) is True
    slaves.succeeded(s, 0.02, object())
    assert s.state(24.3) == "ok" and s.consecutive == 0 and not s.quarantined and s.quarantines == 1
    assert slaves.as_dict(24.3)["5"]["device"] == "probe-5"


def test_exception_replies_are_alive_and_port_failures_blame_no_slave():
    slaves = Slaves(POLICY, "line")
    s = slaves.get(1)

    class ExceptionReply:
        def isError(self):
            return True

    slaves.succeeded(s, 0.01, ExceptionReply())
    assert s.exceptions == 1 and s.ok == 0 and s.state(0) == "ok"
    for exc in (DeviceUnreachable("port gone"), DeviceQuarantined("port")):
        slaves.failed(s, exc, 0.0)
    assert s.failures == 0 and s.consecutive == 0
