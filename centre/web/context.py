"""What every request handler shares: the store, the hub, the settings, and the live streams' bookkeeping."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine

from centre.hub import Hub
from centre.people.config import PeopleConfig


@dataclass(frozen=True, slots=True)
class StreamLimits:
    heartbeat: float = 15.0  # seconds between heartbeat events (and session re-checks) on an idle stream
    per_user: int = 8  # open streams per user (tabs, a phone and a desk)
    total: int = 500  # open streams per instance


@dataclass(eq=False)
class Web:
    engine: AsyncEngine
    hub: Hub
    people: PeopleConfig = field(default_factory=PeopleConfig)
    streams: StreamLimits = field(default_factory=StreamLimits)
    components: dict = field(default_factory=dict)  # the Centre's components (ingest counters for /metrics)
    instance: str = field(default_factory=lambda: uuid.uuid4().hex[:12])  # unique per process: NOTIFY origin
    started_at: float = field(default_factory=time.time)
    open_streams: Counter = field(default_factory=Counter)  # username -> open streams
    closing: asyncio.Event = field(default_factory=asyncio.Event)  # set at shutdown: streams end

    @property
    def streams_open(self) -> int:
        return sum(self.open_streams.values())
