"""How records wait and leave: the SQLite outbox (``store:``) and the uplink's batching and pacing (``uplink:``)."""

from __future__ import annotations

from pydantic import Field, model_validator

from core.model import Strict


class RetentionConfig(Strict):
    """``store.retention``: acknowledged records kept for replay (gateway/outbox/retention.py, docs/protocol.md#replay)."""

    window: float = Field(6 * 3600, ge=0, le=30 * 86400, description="seconds an acknowledged record is kept after its PUBACK (0: not kept)")
    max_bytes: int | None = Field(None, ge=0, description="budget of the kept records (bytes); null: a quarter of store.max_bytes")
    replay_bytes_per_s: int = Field(64 * 1024, ge=1024, le=64 * 1024 * 1024, description="pace of records sent again on a replay request")


class StoreConfig(Strict):
    path: str = Field("canopy-outbox.sqlite", description="SQLite outbox file (relative to the config file)")
    commit_interval: float = Field(0.5, gt=0, le=10, description="seconds between telemetry commits")
    queue_size: int = Field(10000, ge=10, le=1_000_000, description="poll batches waiting for the writer")
    status_file: str | None = Field(None, description="health snapshot for `canopy status`; default: canopy-status.json beside the outbox")
    max_bytes: int = Field(256 * 1024 * 1024, ge=1024 * 1024, description="size cap of the outbox file (bytes)")
    alarm_reserve: float = Field(0.1, ge=0.01, le=0.9, description="share of max_bytes only alarms may use")
    telemetry_ttl: float | None = Field(7 * 86400, gt=0, description="seconds before unsent telemetry expires (null: never)")
    event_ttl: float | None = Field(30 * 86400, gt=0, description="seconds before unsent events expire (null: never); alarms never expire")
    thin_keep_every: int = Field(2, ge=1, le=100, description="over the cap, keep every Nth of the oldest half of telemetry (1: no thinning)")
    retention: RetentionConfig = Field(default_factory=RetentionConfig)

    @model_validator(mode="after")
    def _retention_fits(self) -> "StoreConfig":
        cap = int(self.max_bytes * (1 - self.alarm_reserve))
        if self.retention.max_bytes is not None and self.retention.max_bytes > cap:
            raise ValueError(f"retention.max_bytes ({self.retention.max_bytes}) must fit under max_bytes × (1 − alarm_reserve) ({cap})")
        return self


class UplinkConfig(Strict):
    batch_max_records: int = Field(500, ge=1, le=10000, description="records per telemetry message")
    batch_max_bytes: int = Field(128 * 1024, ge=1024, le=16 * 1024 * 1024)
    state_interval: float = Field(30.0, ge=1, le=3600, description="seconds between health updates on …/state")
    max_messages_per_s: float | None = Field(None, gt=0, description="replay rate limit for events and telemetry (alarms exempt)")
    max_bytes_per_s: float | None = Field(None, gt=0, description="replay byte-rate limit for events and telemetry (alarms exempt)")
    max_inflight_bytes: int = Field(1024 * 1024, ge=4096, description="upper bound of unacknowledged event/telemetry bytes")
    queue_delay_target: float | None = Field(0.03, gt=0, le=5, description="seconds of queueing allowed in front of the next alarm: the in-flight window adapts to the link (null: fixed max_inflight_bytes)")
