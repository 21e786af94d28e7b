"""Character timing, RTU/ASCII framing helpers, and the NMEA / key=value line parsers."""

from __future__ import annotations

import pytest

from drivers.modbus import framing
from drivers.serial_line.parsers import ChecksumError, FramingError, make_parser, xor_checksum
from drivers.serial_line.settings import SerialSettings, theoretical_polls_per_s, transaction_time


@pytest.mark.parametrize("settings, bits", [
    (SerialSettings(9600, 8, "N", 1), 10), (SerialSettings(9600, 8, "E", 1), 11), (SerialSettings(9600, 8, "N", 2), 11),
    (SerialSettings(9600, 8, "O", 2), 12), (SerialSettings(9600, 7, "E", 1), 10),
])
def test_character_bits(settings, bits):
    assert settings.char_bits == bits
    assert settings.char_time == pytest.approx(bits / 9600)


def test_gap_is_3_5_characters_up_to_19200_then_fixed():
    assert SerialSettings(9600, 8, "E", 1).t35 == pytest.approx(3.5 * 11 / 9600)  # 4.01 ms
    assert SerialSettings(19200, 8, "E", 1).t35 == pytest.approx(3.5 * 11 / 19200)  # 2.005 ms
    assert SerialSettings(38400, 8, "E", 1).t35 == 0.00175
    assert SerialSettings(115200, 8, "N", 1).t35 == 0.00175
    assert SerialSettings(38400, 8, "E", 1).t15 == 0.00075


def test_theoretical_rate():
    s = SerialSettings(9600, 8, "E", 1)
    assert transaction_time(s, 8, 17) == pytest.approx(25 * 11 / 9600 + 2 * 3.5 * 11 / 9600)
    assert theoretical_polls_per_s(s, 8, 17) == pytest.approx(27.27, abs=0.01)


def test_bad_settings_refused():
    for kw in ({"bytesize": 6}, {"parity": "X"}, {"stopbits": 3}, {"baudrate": 0}):
        with pytest.raises(ValueError):
            SerialSettings(**kw)


def test_rtu_crc_matches_the_spec_example():
    # Modbus over Serial Line v1.02, 6.2.2: read 2 registers from 0x006B of slave 0x11 -> CRC 76 87
    assert framing.rtu_encode(0x11, bytes.fromhex("03006B0003")).hex() == "1103006b00037687"
    assert framing.rtu_crc_ok(bytes.fromhex("1103006b00037687"))
    assert not framing.rtu_crc_ok(bytes.fromhex("1103006b00037688"))


def test_frame_lengths():
    assert framing.rtu_response_length(b"\x01") is None
    assert framing.rtu_response_length(b"\x01\x03") is None
    assert framing.rtu_response_length(b"\x01\x03\x0c") == 17
    assert framing.rtu_response_length(b"\x01\x83") == 5
    assert framing.rtu_response_length(b"\x01\x05") == 8
    assert framing.rtu_response_length(b"\x01\x2b") == -1
    assert framing.rtu_request_length(b"\x01\x03") == 8
    assert framing.rtu_request_length(b"\x01\x10\x00\x00\x00\x02") is None
    assert framing.rtu_request_length(b"\x01\x10\x00\x00\x00\x02\x04") == 13


def test_ascii_frames():
    frame = framing.ascii_encode(0x11, bytes.fromhex("03006B0003"))
    assert frame == b":1103006B00037E\r\n"
    assert framing.ascii_decode(frame) == bytes.fromhex("1103006B0003")
    for bad in (b":1103006B00037F\r\n", b"1103006B00037E\r\n", b":11030G6B00037E\r\n", b":110\r\n"):
        with pytest.raises(framing.FrameError):
            framing.ascii_decode(bad)


def nmea(body: str) -> str:
    return f"${body}*{xor_checksum(body):02X}"


def test_nmea_fields_by_position_and_transducer_name():
    p = make_parser("nmea")
    f = p.parse(nmea("WIMDA,29.84,I,1.0106,B,18.1,C,,,60.0,,10.2,C,,T,,M,6.7,N,3.5,M"))
    assert f["talker"] == "WI" and f["sentence"] == "MDA"
    assert f["MDA.3"] == "1.0106" and f["MDA.5"] == "18.1" and f["MDA.9"] == "60.0" and f["MDA.7"] == ""
    x = p.parse(nmea("WIXDR,C,18.1,C,TempAir,P,1.0106,B,Barometer,H,60.0,P,RelHum"))
    assert x["XDR.TempAir"] == "18.1" and x["XDR.Barometer"] == "1.0106" and x["XDR.RelHum"] == "60.0"
    assert p.parse(nmea("PGRME,15.0,M,45.0,M,25.0,M"))["sentence"] == "GRME"


@pytest.mark.parametrize("line, error", [
    ("$WIMDA,29.84,I*00", ChecksumError),
    ("$WIMDA,29.84,I", ChecksumError),  # checksum required by default
    ("$WIMDA,29.84,I*ZZ", ChecksumError),
    ("WIMDA,29.84,I*00", FramingError),
    ("$wi?,1*" + f"{xor_checksum('wi?,1'):02X}", FramingError),
    ("", FramingError),
])
def test_nmea_rejects(line, error):
    with pytest.raises(error):
        make_parser("nmea").parse(line)


def test_nmea_checksum_optional_when_configured():
    assert make_parser("nmea", require_checksum=False).parse("$WIMDA,29.84,I")["MDA.1"] == "29.84"


def test_kv_lines():
    p = make_parser("kv")
    assert p.parse("t=21.5, h=40 ,id=ws1") == {"t": "21.5", "h": "40", "id": "ws1"}
    body = "t=21.5,h=40"
    assert p.parse(f"{body}*{xor_checksum(body):02X}") == {"t": "21.5", "h": "40"}
    with pytest.raises(ChecksumError):
        p.parse(f"{body}*{xor_checksum(body) ^ 1:02X}")
    with pytest.raises(ChecksumError):
        make_parser("kv", require_checksum=True).parse(body)
    for bad in ("t21.5", "=5", "a b=1", ",,"):
        with pytest.raises(FramingError):
            p.parse(bad)


def test_unknown_parser():
    with pytest.raises(ValueError, match="known: kv, nmea"):
        make_parser("modbus")
