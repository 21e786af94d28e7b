"""The retained ``…/state`` message: online with the gateway's health, or offline with a reason."""

from __future__ import annotations

from collections.abc import Callable

import orjson

from core.protocol.topics import Topics


def state_payload(topics: Topics, status: str, *, boot: int, health: Callable[[], dict], **extra) -> bytes:
    """``online`` carries ``health()`` (the status snapshot); ``offline`` (also the last will) only the boot."""
    body = {"v": 1, "site": topics.site, "gateway": topics.gateway, "status": status, **extra}
    if status == "online":
        body.update(health())
    else:
        body["boot"] = boot
    return orjson.dumps(body)
