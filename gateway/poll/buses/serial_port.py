"""The serial port of a bus (RS-485 / RS-232): how to open it, and the check that it exists and is ours.

Shared by the bus types that own a port (``modbus_rtu``, ``serial_line``).
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Protocol

from pydantic import Field, field_validator

from core.model import Strict
from core.yamlsrc import Problem
from drivers.serial_line.settings import STANDARD_BAUDS, SerialSettings
from gateway.poll.registry import SiteChecks

_PARITY_WORDS = {"n": "N", "none": "N", "e": "E", "even": "E", "o": "O", "odd": "O"}
_BAUDS = ", ".join(map(str, STANDARD_BAUDS))


class SerialPortFields(Strict):
    """How to open a serial port (a bus model takes these fields in); that it exists is checked by ``check_serial_port``."""

    port: str = Field(min_length=1, max_length=4096,
                      description="device path; prefer /dev/serial/by-id/... (stable across reboots and replugs)")
    baudrate: int = Field(9600, description="bits per second: " + _BAUDS)
    bytesize: int = Field(8, description="data bits: 7 or 8")
    parity: str = Field("N", description="N (none), E (even) or O (odd)")
    stopbits: int = Field(1, description="stop bits: 1 or 2")
    backoff_initial: float = Field(1.0, gt=0, le=60, description="first delay before reopening a vanished port")
    backoff_max: float = Field(30.0, gt=0, le=3600, description="longest delay between reopen attempts")

    @field_validator("baudrate", mode="before")
    @classmethod
    def _baud(cls, v):
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"baud rate must be a whole number, one of {_BAUDS} (got {v!r})")
        if v not in STANDARD_BAUDS:
            raise ValueError(f"baud rate {v} is not a standard rate; use one of {_BAUDS}")
        return v

    @field_validator("bytesize", mode="before")
    @classmethod
    def _bytesize(cls, v):
        if isinstance(v, bool) or v not in (7, 8):
            raise ValueError(f"bytesize must be 7 or 8 (got {v!r})")
        return v

    @field_validator("parity", mode="before")
    @classmethod
    def _parity(cls, v):
        p = _PARITY_WORDS.get(str(v).strip().lower()) if isinstance(v, str) else None
        if p is None:
            raise ValueError(f"parity must be N (none), E (even) or O (odd) (got {v!r})")
        return p

    @field_validator("stopbits", mode="before")
    @classmethod
    def _stopbits(cls, v):
        if isinstance(v, bool) or v not in (1, 2):
            raise ValueError(f"stopbits must be 1 or 2 (got {v!r})")
        return v

    def settings(self) -> SerialSettings:
        return SerialSettings(self.baudrate, self.bytesize, self.parity, self.stopbits)  # type: ignore[arg-type]


def serial_ports_hint() -> str:
    """The serial ports present now, stable names first, for an installer who typed the wrong one."""
    names: list[str] = []
    by_id = Path("/dev/serial/by-id")
    if by_id.is_dir():
        names += sorted(str(p) for p in by_id.iterdir())
    try:
        from serial.tools import list_ports

        names += sorted(p.device for p in list_ports.comports())
    except Exception:  # pragma: no cover - listing is a courtesy
        pass
    return f"; ports present: {', '.join(names[:12])}" if names else "; no serial ports are present (adapter plugged in?)"


class PortOwner(Protocol):
    id: str
    port: str


def check_serial_port(bus: PortOwner, b: int, site: SiteChecks) -> list[Problem]:
    """The port must exist now and be a character device, and only one bus may own it.

    ``site.missing_ports_ok`` (for `canopy run`): an adapter that is unplugged
    at boot is a warning, not a reason to keep the whole gateway (alarms, other
    buses) down; the bus keeps trying to open it.  `canopy validate` reports it.
    """
    src, path, port = site.src, ("buses", b, "port"), bus.port
    if "://" in port:
        return [src.problem(path, f"{port!r}: URLs are not supported; give a device path such as /dev/serial/by-id/...")]
    if not os.path.isabs(port):
        guess = f"/dev/{port}" if "/" not in port else port
        return [src.problem(path, f"give the full device path, e.g. {guess} or /dev/serial/by-id/... (got {port!r})")]
    problems = []
    real = os.path.realpath(port)
    if real in site.ports:
        owner_path, owner = site.ports[real]
        problems.append(src.problem(path, f"port {port} is already used by bus '{owner}' (line {src.line_of(owner_path)}); one bus per port"))
    site.ports.setdefault(real, (path, bus.id))
    if not os.path.exists(port):
        link = " (a broken link: the adapter is unplugged?)" if os.path.islink(port) else ""
        problem = src.problem(path, f"serial port {port} not found{link}{serial_ports_hint()}")
        if site.missing_ports_ok:
            logging.getLogger("canopy.config").warning("%s; starting anyway, the bus will keep trying to open it", problem)
        else:
            problems.append(problem)
    elif not stat.S_ISCHR(os.stat(port).st_mode):
        problems.append(src.problem(path, f"{port} is not a serial device (not a character device)"))
    return problems
