"""A site for the replay tests: one issuer that may replay, its key, and signed requests."""

from __future__ import annotations

import time
from types import SimpleNamespace

import orjson

from core.protocol import envelope
from gateway.commands.config import IssuerConfig

SITE, GATEWAY = "s", "g"
KEY = envelope.generate()
OTHER_KEY = envelope.generate()


# The ``replay`` permission, once IssuerConfig has it (until then any enabled issuer may ask: gateway/replay/gate.py).
MAY_REPLAY = {"replay": True} if "replay" in IssuerConfig.model_fields else {}


def issuer(key=KEY, **kw) -> IssuerConfig:
    return IssuerConfig(public_key=envelope.public_key_text(key.public_key()), **{"ack": "all", **MAY_REPLAY, **kw})


def site_cfg(**issuers) -> SimpleNamespace:
    """What ReplayService reads of a LoadedConfig: site, gateway, the commands section's issuers and limits."""
    issuers = issuers or {"centre": issuer()}
    cc = SimpleNamespace(issuers=issuers, clock_skew=30.0, max_validity=3600.0)
    return SimpleNamespace(site=SimpleNamespace(site=SITE, gateway=GATEWAY, commands=cc), base_dir=".")


def request(action: str = "records", *, key=KEY, issuer_name: str = "centre", now: float | None = None,
            valid_for: float = 300.0, **params) -> bytes:
    """A signed v2 replay envelope, as the centre sends it (centre/acting/replay.py)."""
    env = envelope.make(v=2, kind="replay", issuer=issuer_name, site=params.pop("site", SITE),
                        gateway=params.pop("gateway", GATEWAY), target=params.pop("target", "*"), action=action,
                        params=params, valid_for=valid_for, now=time.time() if now is None else now)
    return orjson.dumps(envelope.sign(env, key))


def records(lane: str, epoch: str, first: int, last: int, **kw) -> bytes:
    return request("records", lane=lane, epoch=epoch, from_seq=first, to_seq=last, **kw)
