"""How the gateway reaches and authenticates to its broker: one TLS and password policy.

Used by the daemon's uplink and by the operator-side commands (`canopy alerts`,
`canopy ack`, `canopy remote`), so they can never disagree on TLS versions or
secret handling.  What it builds is ``core.mqtt.BrokerEndpoint``, which the
asyncio client takes as it is.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Callable

from core.mqtt import BrokerEndpoint
from gateway.config.broker import BrokerConfig, TlsConfig
from gateway.config.checks import read_secret


def tls_context(tls: TlsConfig, resolve: Callable[[str], str]) -> ssl.SSLContext:
    """Verify the broker against the configured CA, TLS 1.2 at least, optional client cert."""
    ctx = ssl.create_default_context(cafile=resolve(tls.ca) if tls.ca else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls.cert and tls.key:
        ctx.load_cert_chain(resolve(tls.cert), resolve(tls.key))
    if not tls.verify_hostname:
        ctx.check_hostname = False
    return ctx


def broker_password(broker: BrokerConfig, resolve: Callable[[str], str]) -> str | None:
    """The password: from a 0600 file when configured, else the (already ${ENV}-expanded) literal."""
    if broker.password_file:
        return read_secret(resolve(broker.password_file), "password_file")
    return broker.password


def embedded_broker_port() -> int:
    """The port of the embedded demo broker a site without `broker:` uses (loopback only)."""
    return int(os.environ.get("CANOPY_EMBEDDED_BROKER_PORT", "1883"))


def broker_endpoint(broker: BrokerConfig | None, resolve: Callable[[str], str]) -> BrokerEndpoint:
    """The endpoint of a site's broker; no `broker:` means the embedded one on loopback.

    The embedded broker may be amqtt, which speaks MQTT 3.1.1 only: 3.1.1 works with either kind.
    The client id stays the caller's choice (the daemon's, or each operator command its own).

    Raises OSError / PermissionError (password file) and ssl.SSLError (CA, client cert).
    """
    if broker is None:
        return BrokerEndpoint("127.0.0.1", embedded_broker_port(), protocol="3.1.1")
    password = broker_password(broker, resolve) if broker.username else None
    tls = tls_context(broker.tls, resolve) if broker.tls is not None else None
    return BrokerEndpoint(broker.host, broker.port, broker.username, password, tls, broker.protocol,
                          keepalive=broker.keepalive)
