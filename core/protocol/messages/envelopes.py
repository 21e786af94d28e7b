"""The signed envelope as JSON Schema sees it (the parser in core.protocol.envelope is the one that decides).

v2: ``command`` on ``…/cmd``, ``ack`` on ``…/alert/ack``, ``config`` on ``…/config``,
``replay`` on ``…/replay``.  v1 (``…/cmd`` only): a command without ``kind`` and
``on_behalf_of``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, RootModel

from core.protocol.envelope import ACTIONS, ID_RE, MAX_PARAMS, PERSON_RE, TARGET_RE
from core.protocol.messages.base import Strict

_SIGNATURE = r"^[A-Za-z0-9+/]{86}==$"  # base64 of 64 bytes


class _Signed(Strict):
    id: str = Field(pattern=ID_RE.pattern, description="unique per issuer; a random hex string is fine")
    issuer: str = Field(pattern=ID_RE.pattern, max_length=64, description="the signing key's id in the gateway's config")
    site: str = Field(min_length=1, max_length=64)
    gateway: str = Field(min_length=1, max_length=64)
    issued_at: float = Field(description="Unix seconds (UTC) when it was made")
    expires_at: float = Field(description="Unix seconds after which the gateway refuses it")
    target: str = Field(pattern=TARGET_RE.pattern)
    action: str = Field(min_length=1, max_length=32)
    params: dict[str, Any] = Field({}, max_length=MAX_PARAMS)
    signature: str = Field(pattern=_SIGNATURE, description="base64 Ed25519 signature of the canonical form")


class _V2(_Signed):
    v: Literal[2]
    on_behalf_of: str | None = Field(None, pattern=PERSON_RE.pattern, description="the person a service signs for")


class CommandV1(_Signed):
    """A v1 command (docs/commands.md): accepted on …/cmd until protocol v3."""

    v: Literal[1] = 1


class CommandEnvelope(_V2):
    kind: Literal["command"]


class AckEnvelope(_V2):
    """target: the alert id; params: {"note": "…"} (optional, at most 500 characters)."""

    kind: Literal["ack"]
    action: Literal[ACTIONS["ack"]]  # type: ignore[valid-type]


class ConfigEnvelope(_V2):
    """target `*`; params: {"config": {…the site document…}, "sha256": "…hex of its canonical JSON…"}."""

    kind: Literal["config"]
    action: Literal[ACTIONS["config"]]  # type: ignore[valid-type]


class ReplayEnvelope(_V2):
    """target `*`; records: params {"lane", "epoch", "from_seq", "to_seq"}; state, meta: {}."""

    kind: Literal["replay"]
    action: Literal[ACTIONS["replay"]]  # type: ignore[valid-type]


class Command(RootModel):
    root: CommandEnvelope | CommandV1
