"""The centre's ingest plus the acting component (sender, replay hook, routing jobs) in the test's event loop."""

from __future__ import annotations

import asyncio

from centre.acting.config import ActingConfig
from centre.acting.service import build
from centre.jobs.lease import SoleLease
from centre.routing.config import RoutingConfig
from centre.routing.service import build_routing
from tests.centre.support import CentreRun, centre_config

FAST = ActingConfig(check_interval=0.2, resend_after=1.0, resend_max=2.0, expire_grace=0.5, replay_interval=60)


class ActingRun:
    def __init__(self, db_url: str, broker_port: int, keys_dir, *, acting: ActingConfig = FAST,
                 routing: RoutingConfig | None = None, channels: dict | None = None, words=None):
        """``channels``: None builds them from ``routing`` (webhooks, e-mail), as the centre does."""
        cfg = centre_config(db_url, broker_port).model_copy(update={"keys_dir": str(keys_dir)})
        self.run = CentreRun(cfg)
        self.centre = self.run.centre
        self.engine = self.run.engine
        routing_ = build_routing(self.centre, routing or RoutingConfig(), channels=channels, words=words)
        self.acting = build(self.centre, cfg=acting, lease=SoleLease(), routing=routing_)
        self._task: asyncio.Task | None = None

    async def start(self) -> "ActingRun":
        await self.run.start()
        self._task = asyncio.create_task(self.acting.leader.run())
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.acting.replay.drain()
        await self.acting.routing.close()
        await self.acting.publisher.close()
        await self.run.stop()
