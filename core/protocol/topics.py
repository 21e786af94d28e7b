"""MQTT topic names (the contract in docs/protocol.md#topics).

The root stays ``canopy/v1``: the topic tree of protocol v2 is v1's plus new leaves, so
v1 and v2 gateways share one subscription; a message says its version in ``v``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ROOT = "canopy/v1"
_ID = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
_TOPIC_RE = re.compile(rf"^{re.escape(ROOT)}/({_ID})/({_ID})/(.+)$")

# What travels on each leaf: the key of core.protocol.schemas.TOPIC_SCHEMAS.
# "alert/{group}" stands for every group's topic.
GATEWAY_TO_CENTRE = ("telemetry", "event", "alert/{group}", "cmd/result", "state", "meta")
CENTRE_TO_GATEWAY = ("cmd", "alert/ack", "config", "replay")


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
    def meta(self) -> str:
        return f"{self.base}/meta"

    @property
    def cmd(self) -> str:
        return f"{self.base}/cmd"

    @property
    def cmd_result(self) -> str:
        return f"{self.base}/cmd/result"

    @property
    def alert_ack(self) -> str:
        return f"{self.base}/alert/ack"

    @property
    def config(self) -> str:
        return f"{self.base}/config"

    @property
    def replay(self) -> str:
        return f"{self.base}/replay"

    def alert_group(self, group: str) -> str:
        return f"{self.base}/alert/{group}"

    def for_lane(self, lane: str) -> str:
        return self.telemetry if lane == "telemetry" else self.event


@dataclass(frozen=True, slots=True)
class TopicName:
    """A parsed topic: whose it is and which leaf (``leaf`` is e.g. ``alert/{group}``; ``group`` fills it)."""

    site: str
    gateway: str
    suffix: str
    leaf: str
    group: str | None = None


def parse_topic(topic: str) -> TopicName | None:
    """``canopy/v1/{site}/{gateway}/{suffix}`` -> TopicName, or None for a topic outside the contract."""
    m = _TOPIC_RE.match(topic)
    if m is None:
        return None
    site, gateway, suffix = m.groups()
    if suffix in GATEWAY_TO_CENTRE or suffix in CENTRE_TO_GATEWAY:
        return TopicName(site, gateway, suffix, suffix)
    if suffix.startswith("alert/"):
        group = suffix[len("alert/"):]
        if re.fullmatch(_ID, group):
            return TopicName(site, gateway, suffix, "alert/{group}", group)
    return None
