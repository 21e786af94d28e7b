"""The alert state file: small JSON, written atomically, read at start-up.

It holds open alerts, the last ``history`` closed ones, per rule/subject
episode state, inactivity clocks and the local outputs last commanded, so a
restart neither forgets an open alert nor raises it twice.  A write goes to a
temporary file, is fsynced and renamed over the old one (then the folder is
fsynced): a crash leaves either the old or the new file, never half of one.
"""

from __future__ import annotations

import logging
import os

import orjson

log = logging.getLogger("canopy.alerts")

VERSION = 1


def state_path(cfg) -> str:
    """Where the engine of this site keeps its state (next to the outbox)."""
    state_dir = os.path.dirname(cfg.resolve(cfg.site.store.path)) or "."
    return file_in(state_dir, cfg.site.site, cfg.site.gateway)


def file_in(state_dir: str, site: str, gateway: str) -> str:
    return os.path.join(state_dir, f"canopy-alerts-{site}-{gateway}.json")


def load(path: str) -> dict | None:
    """The saved state, or None if there is none; a corrupt file is kept aside and reported."""
    try:
        with open(path, "rb") as f:
            data = orjson.loads(f.read())
    except FileNotFoundError:
        return None
    except (OSError, orjson.JSONDecodeError) as exc:
        aside = f"{path}.corrupt"
        try:
            os.replace(path, aside)
        except OSError:
            pass
        log.error("alert state %s is unreadable (%s); kept as %s, starting with no open alerts", path, exc, aside)
        return None
    if not isinstance(data, dict) or data.get("v") != VERSION:
        log.error("alert state %s has an unknown format; ignoring it", path)
        return None
    return data


def encode(data: dict) -> bytes:
    return orjson.dumps({"v": VERSION, **data})


def save(path: str, data: dict | bytes) -> None:
    """Atomic, durable replace of the state file (raises OSError on failure)."""
    body = data if isinstance(data, bytes) else encode(data)
    tmp = f"{path}.tmp"
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640), "wb") as f:
        f.write(body)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    try:
        dfd = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
