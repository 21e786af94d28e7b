"""Serial character framing and the timing that follows from it.

A character on the wire is 1 start bit + data bits + an optional parity bit +
stop bits.  Modbus RTU separates frames by 3.5 characters of silence and
fixes that gap at 1.75 ms above 19200 baud (Modbus over Serial Line v1.02,
2.5.1.1), because the per-character figure gets too small for UARTs to time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Parity = Literal["N", "E", "O"]

# Rates every POSIX termios knows (Linux, macOS); devices on RS-485 use 1200-115200.
STANDARD_BAUDS = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400)
FIXED_GAP_ABOVE = 19200
FIXED_T35 = 0.00175
FIXED_T15 = 0.00075


@dataclass(frozen=True, slots=True)
class SerialSettings:
    baudrate: int = 9600
    bytesize: int = 8
    parity: Parity = "N"
    stopbits: int = 1

    def __post_init__(self) -> None:
        if self.baudrate <= 0:
            raise ValueError(f"baud rate must be positive, not {self.baudrate}")
        if self.bytesize not in (7, 8):
            raise ValueError(f"bytesize must be 7 or 8, not {self.bytesize}")
        if self.parity not in ("N", "E", "O"):
            raise ValueError(f"parity must be N, E or O, not {self.parity!r}")
        if self.stopbits not in (1, 2):
            raise ValueError(f"stopbits must be 1 or 2, not {self.stopbits}")

    @property
    def char_bits(self) -> int:
        """Bits per character on the wire (start + data + parity + stop)."""
        return 1 + self.bytesize + (0 if self.parity == "N" else 1) + self.stopbits

    @property
    def char_time(self) -> float:
        """Seconds one character occupies the wire."""
        return self.char_bits / self.baudrate

    @property
    def t35(self) -> float:
        """The RTU inter-frame gap: 3.5 characters, 1.75 ms fixed above 19200 baud."""
        return FIXED_T35 if self.baudrate > FIXED_GAP_ABOVE else 3.5 * self.char_time

    @property
    def t15(self) -> float:
        """The RTU inter-character limit: 1.5 characters, 0.75 ms fixed above 19200 baud."""
        return FIXED_T15 if self.baudrate > FIXED_GAP_ABOVE else 1.5 * self.char_time

    def wire_time(self, chars: int) -> float:
        return chars * self.char_time

    def __str__(self) -> str:  # "9600 8E1"
        return f"{self.baudrate} {self.bytesize}{self.parity}{self.stopbits}"


def transaction_time(settings: SerialSettings, request_chars: int, response_chars: int) -> float:
    """Shortest possible request/response cycle on an RTU line.

    Request and response characters on the wire, the slave's 3.5-character
    silence before it may answer (it cannot know the request ended sooner),
    and the master's 3.5-character silence before the next request.
    """
    return (request_chars + response_chars) * settings.char_time + 2 * settings.t35


def theoretical_polls_per_s(settings: SerialSettings, request_chars: int, response_chars: int) -> float:
    return 1.0 / transaction_time(settings, request_chars, response_chars)
