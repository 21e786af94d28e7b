"""The alert engine: rules over readings -> alerts with lifecycle and escalation.

Seam used by the runtime:
- ``observe(readings)``: called with every poll's readings (sync, must be cheap);
- ``run()``: a task for timers (inactivity, escalation, debounce);
- ``on_ack(topic, payload)``: acks arriving on …/alert/ack.
Alerts are written with ``emit(lane, body_bytes)``; lane "alarm" for safety alerts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


class AlertEngine:
    def __init__(self, cfg, clock, emit: Callable[[str, bytes], Awaitable[None]], write_point=None, state_dir: str | None = None):
        self.cfg = cfg
        self.clock = clock
        self.emit = emit
        self.write_point = write_point  # async (device_id, point, value) -> None, for local outputs

    def observe(self, readings) -> None:
        return None

    async def run(self) -> None:
        await asyncio.Event().wait()

    def on_ack(self, topic: str, payload: bytes) -> None:
        return None

    def snapshot(self) -> dict:
        return {}
