"""Routing's leader jobs, built from the ``routing:`` section: the alert feed, blind-site checks, delivery."""

from __future__ import annotations

from dataclasses import dataclass

from centre.jobs.runner import Job
from centre.routing.blind import BlindWatch
from centre.routing.config import RoutingConfig
from centre.routing.delivery import Deliverer, build_channels
from centre.routing.feed import AlertFeed


@dataclass(eq=False)
class Routing:
    feed: AlertFeed
    blind: BlindWatch
    deliverer: Deliverer

    def jobs(self) -> list[Job]:
        return [Job("notifications", self.feed.run), Job("blind", self.blind.run), Job("delivery", self.deliverer.run)]

    async def close(self) -> None:
        await self.deliverer.close()


def build_routing(centre, cfg: RoutingConfig, *, channels: dict | None = None, words=None) -> Routing:
    """Raises ValueError (a secret file missing or readable by others) before anything runs."""
    deliverer = Deliverer(centre, cfg, build_channels(cfg) if channels is None else channels)
    return Routing(AlertFeed(centre, cfg, kick=deliverer.kick), BlindWatch(centre, cfg, kick=deliverer.kick, words=words),
                   deliverer)
