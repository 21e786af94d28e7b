"""The retained ``…/state`` message: online with the gateway's health, or offline with a reason.

``online`` says what protocol the gateway speaks and what a centre may ask of
it right now (``capabilities``: docs/protocol.md#capabilities), so it is the
uplink's to build: only the uplink knows which subscriptions were granted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import orjson

from core.protocol import PROTOCOL_VERSION
from core.protocol.topics import Topics


def state_payload(topics: Topics, status: str, *, boot: int, health: Callable[[], dict],
                  capabilities: Iterable[str] = (), uplink: dict | None = None, **extra) -> bytes:
    """``online`` carries ``health()`` (the status snapshot), the protocol version and the capabilities,
    with ``uplink`` merged over the health's own ``uplink`` section; ``offline`` (also the last will) only the boot.
    """
    body = {"v": PROTOCOL_VERSION, "site": topics.site, "gateway": topics.gateway, "status": status, **extra}
    if status == "online":
        body.update(health())
        body["protocol"] = PROTOCOL_VERSION
        body["capabilities"] = sorted(capabilities)
        if uplink is not None:
            body["uplink"] = {**body.get("uplink", {}), **uplink}
    else:
        body["boot"] = boot
    return orjson.dumps(body)
