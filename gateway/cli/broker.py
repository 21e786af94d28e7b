"""How the operator commands talk to the broker: the one asyncio client, and one way to say why not.

``canopy alerts``, ``canopy ack`` and ``canopy remote`` each run one coroutine
with ``asyncio.run`` around ``core.mqtt.MqttClient``; this module
gives them the client for a site's broker (same login and TLS as the gateway's
uplink), the sentence for a failed connect, and Ctrl-C as a quiet exit.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Coroutine

import orjson

from core.mqtt import BrokerEndpoint, MqttClient, MqttConnectError
from gateway.uplink.broker_auth import broker_endpoint

EXIT_INTERRUPTED = 130  # what a shell reports for Ctrl-C


def site_client(cfg, purpose: str, timeout: float) -> MqttClient:
    """A client for the broker named in the site config (no `broker:`: the embedded one on loopback).

    Raises OSError / PermissionError (password file) and ssl.SSLError (CA, client cert).
    """
    endpoint = broker_endpoint(cfg.site.broker, cfg.resolve)
    return MqttClient(endpoint, client_id=client_id(purpose, cfg.site.gateway), connect_timeout=timeout)


def client_id(purpose: str, gateway: str = "") -> str:
    """Says who is connected when the broker logs it; random tail so two operators never collide."""
    return f"canopy-{purpose}-{gateway + '-' if gateway else ''}{secrets.token_hex(3)}"


def connect_problem(exc: MqttConnectError, endpoint: BrokerEndpoint, timeout: float) -> str:
    """The one-line reason a command could not connect (what `canopy alerts` and `canopy ack` print)."""
    if exc.timed_out:
        return f"broker {endpoint} did not answer within {timeout:g} s"
    if exc.refused:
        return f"broker {endpoint} refused the connection: {exc.reason}"
    return f"cannot connect to broker {endpoint}: {exc.reason}"


def records_of(payload: bytes) -> list[dict]:
    """The records of a gateway's message (``{"records": [...]}``); anything else gives none."""
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return []
    records = body.get("records") if isinstance(body, dict) else None
    return [r for r in records if isinstance(r, dict)] if isinstance(records, list) else []


def run(command: Coroutine, *, interrupted: int = EXIT_INTERRUPTED) -> int:
    """``asyncio.run`` for a command: Ctrl-C closes the connection cleanly and exits with ``interrupted``."""
    try:
        return asyncio.run(command)
    except KeyboardInterrupt:
        return interrupted
