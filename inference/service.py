"""Camera service seam: started by the runtime only when cameras are configured."""

from __future__ import annotations

import asyncio


class CameraService:
    def __init__(self, cfg, clock, emit, alerts=None, state_dir: str = "."):
        self.cfg = cfg
        self.clock = clock
        self.emit = emit
        self.alerts = alerts

    async def run(self) -> None:
        await asyncio.Event().wait()

    async def stop(self) -> None:
        pass

    def snapshot(self) -> dict:
        return {}
