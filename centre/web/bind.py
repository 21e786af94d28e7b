"""Where the web server may listen: plain HTTP on loopback only, unless TLS or an explicit TLS-terminating proxy.

A leaf module (no web framework imported) so the config's validator can use the same words
as the server's own check at start.
"""

from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def plain_http_problem(host: str, *, tls: bool, allow_plain_http: bool) -> str | None:
    """Why this bind is refused, or None (the words of the config error)."""
    if tls or allow_plain_http or is_loopback(host):
        return None
    return (f"{host} is not a loopback address and http has no tls_cert/tls_key: passwords and session cookies would "
            "cross the network in clear. Give http.tls_cert and http.tls_key (or http.self_signed: true for the centre's "
            "own certificate), or set http.allow_plain_http: true "
            "only when a TLS-terminating proxy is in front")
