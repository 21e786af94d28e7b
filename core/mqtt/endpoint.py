"""Where a broker is, which MQTT it speaks and how to log in: what a client needs before CONNECT.

Built from a config by its owner (``gateway.uplink.broker_auth`` from a site's
``broker:``, ``centre.mqtt.endpoint`` from centre.yaml), each with its own TLS and
password policy; the asyncio client takes it as it is.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Literal

import paho.mqtt.client as mqtt

Protocol = Literal["3.1.1", "5"]
PAHO_PROTOCOL = {"3.1.1": mqtt.MQTTv311, "5": mqtt.MQTTv5}


@dataclass(frozen=True, slots=True)
class BrokerEndpoint:
    """One broker and one login.

    ``client_id`` None: each client picks its own (an operator command sharing a
    site's endpoint must never take the daemon's id: the broker would throw one
    of them off).  ``keepalive`` in seconds.
    """

    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: ssl.SSLContext | None = None
    protocol: Protocol = "5"
    client_id: str | None = None
    keepalive: int = 30

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"
