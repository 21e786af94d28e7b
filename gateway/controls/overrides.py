"""Manual overrides that survive a restart: a small JSON file beside the outbox, written atomically.

Somebody who switched the greenhouse fan off for an hour to work on it must not
have it start again because the gateway restarted.  Only overrides are kept:
everything else a control knows is read again from its sensor within a poll.
The file is written in a thread with the alert state file's atomic replace.
"""

from __future__ import annotations

import logging
import os

import orjson

from gateway.alerts import state as statefile
from gateway.controls.loop import Override

log = logging.getLogger("canopy.controls")

VERSION = 1


def path_in(state_dir: str, site: str, gateway: str) -> str:
    return os.path.join(state_dir, f"canopy-controls-{site}-{gateway}.json")


def encode(overrides: dict[str, Override]) -> bytes:
    return orjson.dumps({"v": VERSION, "overrides": {
        cid: {"on": o.on, "until": round(o.until, 3), "by": o.by, "since": round(o.since, 3)} for cid, o in overrides.items()}})


def load(path: str) -> dict[str, Override]:
    """The saved overrides; nothing (and a log line) for a missing, unreadable or foreign file."""
    try:
        with open(path, "rb") as f:
            data = orjson.loads(f.read())
    except FileNotFoundError:
        return {}
    except (OSError, orjson.JSONDecodeError) as exc:
        log.error("control state %s is unreadable (%s); starting without manual overrides", path, exc)
        return {}
    if not isinstance(data, dict) or data.get("v") != VERSION or not isinstance(data.get("overrides"), dict):
        log.error("control state %s has an unknown format; ignoring it", path)
        return {}
    out = {}
    for cid, d in data["overrides"].items():
        try:
            out[cid] = Override(bool(d["on"]), float(d["until"]), d.get("by"), float(d.get("since", 0.0)))
        except (KeyError, TypeError, ValueError):
            log.warning("control state %s: override of %s does not parse; dropped", path, cid)
    return out


def save(path: str, body: bytes) -> None:
    """Atomic, durable replace (raises OSError)."""
    statefile.save(path, body)
