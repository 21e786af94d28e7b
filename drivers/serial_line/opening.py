"""Opening a serial device: what to ask the kernel for, and why an open failed, in an installer's words.

Apart from ``port`` (the asyncio port) so a line's worker process
(``drivers.modbus.rtu_worker``) can open a port without importing asyncio.

Pseudo-terminals (the simulator, socat bridges) carry no parity and no
7-bit characters: Linux forces CS8, drops ``PARENB``, and a later
reconfiguration to parity fails with ``EINVAL``.  A pty is therefore opened
8-bit without parity with the same character length (8E1 -> 8N2, 11 bits;
7E1 -> 8N1), and the timing still uses the configured settings.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import replace

from drivers.serial_line.settings import SerialSettings

PTY_MAJORS = range(136, 144)  # Unix98 pty slaves (/dev/pts/N)


def is_pty(path: str) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    return stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) in PTY_MAJORS


def termios_settings(path: str, settings: SerialSettings) -> SerialSettings:
    """What to ask the kernel for: the settings, or on a pty their 8-bit, parity-free twin.

    Linux ptys force CS8 and clear PARENB; the character length (what the
    simulator can check, and what the timing uses) is kept with stop bits:
    8E1 -> 8N2, 7E1 -> 8N1, 7E2 -> 8N2.
    """
    if (settings.parity == "N" and settings.bytesize == 8) or not is_pty(path):
        return settings
    stop = min(2, max(1, settings.char_bits - 9))
    return replace(settings, bytesize=8, parity="N", stopbits=stop)


def describe_open_error(path: str, exc: BaseException) -> str:
    err = getattr(exc, "errno", None)
    if err is None and exc.args and isinstance(exc.args[0], int):
        err = exc.args[0]
    if err == errno.ENOENT or not os.path.exists(path):
        return f"{path} does not exist (adapter unplugged?)"
    if err in (errno.EACCES, errno.EPERM):
        return f"permission denied on {path} (add the service user to the 'dialout' group)"
    if err in (errno.EBUSY, errno.EWOULDBLOCK) or "lock" in str(exc).lower():
        return f"{path} is in use by another program"
    return f"cannot open {path}: {getattr(exc, 'strerror', None) or exc}"


class OpenFailed(Exception):
    """The port could not be opened; the message says why in an installer's words."""


def open_nonblocking(path: str, settings: SerialSettings, *, exclusive: bool = True):
    """Open ``path`` with ``settings`` (as :func:`termios_settings` adapts them), non-blocking, input flushed.

    Returns the ``serial.Serial``; raises :class:`OpenFailed`.  pyserial is imported here, on first use."""
    import serial

    eff = termios_settings(path, settings)
    try:
        ser = serial.Serial(None, baudrate=eff.baudrate, bytesize=eff.bytesize, parity=eff.parity,
                            stopbits=eff.stopbits, timeout=0, write_timeout=0, exclusive=exclusive)
        ser.port = path
        ser.open()
    except (OSError, serial.SerialException, ValueError) as exc:
        raise OpenFailed(describe_open_error(path, exc)) from None
    os.set_blocking(ser.fileno(), False)
    try:
        ser.reset_input_buffer()  # whatever was on the line before we listened is not ours
    except (OSError, serial.SerialException):
        pass
    return ser
