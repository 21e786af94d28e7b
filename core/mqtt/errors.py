"""What can go wrong talking to a broker, as exceptions, and the words an operator reads for it.

Apart from the client so that the gateway's uplink, the operator commands and the
centre describe a refused login or an untrusted certificate the same way.
"""

from __future__ import annotations

import ssl

from paho.mqtt.reasoncodes import ReasonCode


class MqttError(Exception):
    """Anything that went wrong talking to the broker."""


class MqttConnectError(MqttError):
    """The broker could not be reached, did not answer in time, or refused the connection.

    ``reason`` says which, in words an operator can act on; ``rc`` is the
    broker's CONNACK reason code when it answered (``refused``).
    """

    def __init__(self, reason: str, *, rc: ReasonCode | None = None, timed_out: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.rc = rc
        self.timed_out = timed_out

    @property
    def refused(self) -> bool:
        return self.rc is not None


class MqttCodeError(MqttError):
    """paho or the broker answered a request with a failure code (``rc``)."""

    def __init__(self, what: str, rc):
        super().__init__(f"{what}: {rc}")
        self.rc = rc


class MqttDisconnectedError(MqttError):
    """The connection ended while a request or the message stream waited on it; ``reason`` says why, when known."""

    def __init__(self, message: str, *, reason: str | None = None):
        super().__init__(message)
        self.reason = reason or message


def describe_connect_failure(exc: BaseException) -> str:
    """Why a connection attempt failed, in words an operator can act on."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate rejected: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is the broker running and the port right?)"
    if isinstance(exc, MqttError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def describe_refusal(rc: ReasonCode) -> str:
    """A CONNACK refusal; a login problem says what to check."""
    text = str(rc)
    low = text.lower()
    if "not authori" in low or "bad user" in low or "password" in low:
        return f"{text}: check broker.username and the password"
    return text
