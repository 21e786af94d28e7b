"""Line parsers: one text line in, a flat ``{key: text}`` mapping out, or a LineError.

A parser never sees more than one line (the bus bounds its length) and never
raises anything but ``LineError`` subclasses, so a noisy line is counted, not
fatal.  New formats register with ``@parser("name")``.

``nmea``  NMEA 0183 sentences ``$TTSSS,f1,f2,...*hh``.  The checksum (XOR of
          every character between ``$`` and ``*``) is verified; by default a
          sentence without one is refused.  Keys: ``talker`` ("WI"),
          ``sentence`` ("MDA"), ``MDA.1`` ... ``MDA.n`` (fields by position,
          1-based), and for transducer sentences ``XDR.<name>`` (the value of
          each type,value,unit,name quadruplet: ``XDR.TempAir``).
``kv``    ``key=value,key=value`` with an optional ``*hh`` XOR checksum over the
          text before ``*``; keys are ``[A-Za-z0-9_.-]+``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Protocol


class LineError(ValueError):
    counter = "framing_errors"


class ChecksumError(LineError):
    counter = "checksum_errors"


class FramingError(LineError):
    counter = "framing_errors"


class LineParser(Protocol):
    def parse(self, line: str) -> dict[str, str]: ...


PARSERS: dict[str, Callable[..., LineParser]] = {}


def parser(name: str):
    def register(cls):
        PARSERS[name] = cls
        return cls

    return register


def make_parser(name: str, require_checksum: bool | None = None) -> LineParser:
    try:
        factory = PARSERS[name]
    except KeyError:
        raise ValueError(f"unknown line parser {name!r}; known: {', '.join(sorted(PARSERS))}") from None
    return factory(require_checksum=require_checksum)


def xor_checksum(text: str) -> int:
    c = 0
    for b in text.encode("ascii", "replace"):
        c ^= b
    return c


def _split_checksum(body: str, required: bool) -> str:
    star = body.rfind("*")
    if star < 0:
        if required:
            raise ChecksumError("no *hh checksum")
        return body
    given = body[star + 1:].strip()
    text = body[:star]
    if len(given) != 2:
        raise ChecksumError(f"checksum must be two hex digits, got {given!r}")
    try:
        value = int(given, 16)
    except ValueError:
        raise ChecksumError(f"checksum {given!r} is not hexadecimal") from None
    want = xor_checksum(text)
    if value != want:
        raise ChecksumError(f"checksum {value:02X}, computed {want:02X}")
    return text


_ADDRESS = re.compile(r"^(?:P[A-Z0-9]{1,8}|[A-Z]{2}[A-Z0-9]{3})$")


@parser("nmea")
class NmeaParser:
    def __init__(self, require_checksum: bool | None = None):
        self.require_checksum = True if require_checksum is None else require_checksum

    def parse(self, line: str) -> dict[str, str]:
        if not line or line[0] not in "$!":
            raise FramingError("NMEA sentence must start with '$' or '!'")
        body = _split_checksum(line[1:], self.require_checksum)
        fields = body.split(",")
        address = fields[0]
        if not _ADDRESS.match(address):
            raise FramingError(f"bad NMEA address field {address[:12]!r}")
        if address.startswith("P"):
            talker, sentence = "P", address[1:]
        else:
            talker, sentence = address[:2], address[2:]
        out = {"talker": talker, "sentence": sentence}
        for i, value in enumerate(fields[1:], 1):
            out[f"{sentence}.{i}"] = value
        if sentence == "XDR":
            quads = fields[1:]
            for i in range(0, len(quads) - 3, 4):
                name = quads[i + 3]
                if name:
                    out[f"XDR.{name}"] = quads[i + 1]
        return out


_KEY = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@parser("kv")
class KvParser:
    def __init__(self, require_checksum: bool | None = None):
        self.require_checksum = bool(require_checksum)

    def parse(self, line: str) -> dict[str, str]:
        body = _split_checksum(line, self.require_checksum)
        out: dict[str, str] = {}
        for part in body.split(","):
            part = part.strip()
            if not part:
                continue
            key, eq, value = part.partition("=")
            key = key.strip()
            if not eq or not _KEY.match(key):
                raise FramingError(f"not a key=value pair: {part[:32]!r}")
            out[key] = value.strip()
        if not out:
            raise FramingError("empty line")
        return out
