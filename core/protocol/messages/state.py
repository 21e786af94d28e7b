"""``…/state`` (retained): online with health, or offline (a clean stop, or the last will).

The health objects are snapshots documented in docs/protocol.md#state: their
top-level shape is fixed, their inner counters may grow (receivers ignore what
they do not know).  v2 adds ``protocol``, ``capabilities`` and ``meta``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, RootModel

from core.protocol import CAPABILITIES
from core.protocol.messages.base import Id, Strict

Capability = Literal[CAPABILITIES]  # type: ignore[valid-type]


class _Open(Strict):
    model_config = ConfigDict(extra="allow")


class LaneCounters(_Open):
    produced: int
    acknowledged: int
    pending: int
    expired: int
    dropped: dict[str, int]
    last_seq: int


class OutboxHealth(_Open):
    alarm: LaneCounters
    event: LaneCounters
    telemetry: LaneCounters
    commits: int
    commit_errors: int
    epoch: str
    degraded: bool
    last_error: str | None


class UplinkHealth(_Open):
    connects: int
    attempts: int | None = None  # connection attempts since start (gateways before it leave it out)
    connected: bool
    published: dict[str, int]
    last_error: str | None


class DeviceHealth(_Open):
    bus: str
    status: str
    polls: int
    failures: int
    last_ok: float | None


_V2_REQUIRES = {"if": {"properties": {"v": {"const": 2}}, "required": ["v"]},
                "then": {"required": ["protocol", "capabilities"]}}


class HostHealth(_Open):
    """The board as the daemon sees it (``None`` where the board cannot tell, e.g. no thermal zone)."""

    disk_free_bytes: int | None = None
    disk_total_bytes: int | None = None
    rss_bytes: int | None = None
    cpu_temp_c: float | None = None


class StateOnline(Strict):
    """Published after every SUBACK of a connection, every state_interval, and ~1 s after a change."""

    model_config = ConfigDict(json_schema_extra=_V2_REQUIRES)

    v: Literal[1, 2]
    site: Id
    gateway: Id
    status: Literal["online"]
    version: str = Field(description="Canopy version")
    boot: int = Field(ge=1)
    ts: float
    protocol: int | None = Field(None, description="v2: the protocol version the gateway speaks (2)")
    capabilities: list[Capability] | None = Field(None, description="v2: what a centre may ask of this gateway")
    meta: str | None = Field(None, description="v2: the version of the retained …/meta (the config's hash)")
    devices: dict[str, DeviceHealth]
    outbox: OutboxHealth
    uplink: UplinkHealth
    buses: dict[str, dict[str, Any]]
    alerts: dict[str, Any] | None = None
    commands: dict[str, Any] | None = None
    controls: dict[str, dict[str, Any]] | None = Field(None, description="local control loops: mode, output, sensor, override, faults (docs/controls.md)")
    cameras: dict[str, dict[str, Any]] | None = None
    uptime_s: float | None = Field(None, description="v2: seconds since the daemon started")
    host: HostHealth | None = Field(None, description="v2: the board: disk, memory, CPU temperature")


class StateOffline(Strict):
    """A clean stop (``shutdown``) or the last will (``connection lost``): no health, no ts."""

    v: Literal[1, 2]
    site: Id
    gateway: Id
    status: Literal["offline"]
    reason: Literal["shutdown", "connection lost"]
    boot: int = Field(ge=0)
    protocol: int | None = None


class State(RootModel):
    root: Annotated[StateOnline | StateOffline, Field(discriminator="status")]
