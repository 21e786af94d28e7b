"""Per-device failures a driver can report; the poller counts and publishes them."""

from __future__ import annotations


class DeviceError(Exception):
    """A poll that produced no valid values.  ``status`` goes into …/state."""

    status = "error"


class DeviceTimeout(DeviceError):
    status = "timeout"


class DeviceUnreachable(DeviceError):
    status = "unreachable"


class DeviceException(DeviceError):
    """The device answered with a Modbus exception."""

    status = "exception"

    NAMES = {
        1: "illegal function",
        2: "illegal data address",
        3: "illegal data value",
        4: "device failure",
        5: "acknowledge",
        6: "device busy",
        8: "memory parity error",
        10: "gateway path unavailable",
        11: "gateway target failed to respond",
    }

    def __init__(self, code: int, request: str):
        self.code = code
        super().__init__(f"exception {code} ({self.NAMES.get(code, 'unknown')}) on {request}")


class BadReply(DeviceError):
    """A reply that arrived but cannot be right (length, values)."""

    status = "bad_reply"


class DeviceQuarantined(DeviceError):
    """A slave that failed too often in a row: its polls fail fast (no wire time) until a re-probe answers."""

    status = "quarantined"
