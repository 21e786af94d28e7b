"""MQTT topic names (the contract in docs/protocol.md)."""

from __future__ import annotations

from dataclasses import dataclass

ROOT = "canopy/v1"


@dataclass(frozen=True)
class Topics:
    site: str
    gateway: str

    @property
    def base(self) -> str:
        return f"{ROOT}/{self.site}/{self.gateway}"

    @property
    def telemetry(self) -> str:
        return f"{self.base}/telemetry"

    @property
    def event(self) -> str:
        return f"{self.base}/event"

    @property
    def state(self) -> str:
        return f"{self.base}/state"

    @property
    def cmd(self) -> str:
        return f"{self.base}/cmd"

    @property
    def cmd_result(self) -> str:
        return f"{self.base}/cmd/result"

    @property
    def alert_ack(self) -> str:
        return f"{self.base}/alert/ack"

    def for_lane(self, lane: str) -> str:
        return self.telemetry if lane == "telemetry" else self.event
