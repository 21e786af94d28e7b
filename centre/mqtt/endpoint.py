"""The centre's broker endpoint, built from centre.yaml's ``broker:``: the centre's TLS and password policy.

Read again at every connect, so a rotated password file or CA is picked up by the
next reconnect without a restart.  The gateway builds its own from a site config
(``gateway.uplink.broker_auth``); the client both use is ``core.mqtt``.
"""

from __future__ import annotations

import os
import ssl

from centre.config import Broker
from core.mqtt import BrokerEndpoint, MqttError


def read_password(broker: Broker, base_dir: str = ".") -> str | None:
    """The broker password: from a 0600 file when configured, else the (``${ENV}``-expanded) literal."""
    if not broker.password_file:
        return broker.password
    path = os.path.join(base_dir, broker.password_file)
    if os.stat(path).st_mode & 0o077:
        raise MqttError(f"{path}: the password file must be mode 0600 (chmod 600 {path})")
    with open(path, encoding="utf-8") as f:
        return f.read().strip()


def tls_context(broker: Broker, base_dir: str = ".") -> ssl.SSLContext | None:
    """Verify the broker against the configured CA, TLS 1.2 at least, optional client cert (mutual TLS)."""
    if broker.tls is None:
        return None
    t = broker.tls
    ctx = ssl.create_default_context(cafile=os.path.join(base_dir, t.ca) if t.ca else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if t.cert and t.key:
        ctx.load_cert_chain(os.path.join(base_dir, t.cert), os.path.join(base_dir, t.key))
    ctx.check_hostname = t.verify_hostname
    return ctx


def broker_endpoint(broker: Broker, client_id: str, base_dir: str = ".") -> BrokerEndpoint:
    """Raises MqttError (password file not 0600), OSError (a missing file) and ssl.SSLError (CA, client cert)."""
    password = read_password(broker, base_dir) if broker.username else None
    return BrokerEndpoint(broker.host, broker.port, broker.username, password, tls_context(broker, base_dir),
                          broker.protocol, client_id=client_id, keepalive=broker.keepalive)
