"""How anything in Canopy authenticates to the broker: one TLS and password policy.

Used by the daemon's uplink and by the operator-side commands (`canopy alerts`,
`canopy ack`), so they can never disagree on TLS versions or secret handling.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable

from gateway.config.site import BrokerConfig, TlsConfig, read_secret


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
