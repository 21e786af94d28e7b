"""Command service seam: ``on_command(topic, payload)`` from …/cmd; results via ``emit``.

Results and audit records are event-lane records; a body with
``"topic": "cmd/result"`` is published on …/cmd/result by the uplink.
"""

from __future__ import annotations

import asyncio


class CommandService:
    def __init__(self, cfg, clock, emit, devices: dict, state_dir: str, alerts=None):
        self.cfg = cfg
        self.clock = clock
        self.emit = emit  # async (lane, body) -> committed
        self.devices = devices  # id -> driver device with async write(point, value) and read_all()
        self.state_dir = state_dir
        self.alerts = alerts

    async def start(self) -> None:
        """Fail-safe on start-up (e.g. close every valve) before anything else runs."""

    def on_command(self, topic: str, payload: bytes) -> None:
        return None

    def on_link(self, connected: bool) -> None:
        """Broker link up/down (for link-loss policies)."""

    def observe(self, readings) -> None:
        """Every poll's readings (for interlocks and automatic programs)."""

    async def run(self) -> None:
        await asyncio.Event().wait()

    async def stop(self) -> None:
        """Clean shutdown: drive actuators to their safe state."""

    def snapshot(self) -> dict:
        return {}
