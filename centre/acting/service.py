"""The centre component that acts for people (``centre.service.COMPONENTS``), and the leader jobs with it.

It takes the leader lease (``centre.jobs``), installs ``centre.is_leader`` and the gap-repair
hook ``centre.request_replay``, and runs the once-only jobs while this instance leads:
sending pending acks and commands, the alert feed, blind-site checks and notification
delivery (``centre.routing``).  Shared through ``centre.components["acting"]``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from centre.acting.act import timezone
from centre.acting.config import ActingConfig, acting_config
from centre.acting.keys import KeyStore
from centre.acting.publisher import Publisher
from centre.acting.replay import ReplayRequester
from centre.acting.sender import Sender
from centre.jobs.config import lease_config
from centre.jobs.lease import Lease, make_lease
from centre.jobs.runner import Job, LeaderJobs
from centre.routing.config import routing_config
from centre.routing.service import Routing, build_routing


@dataclass(eq=False)
class Acting:
    cfg: ActingConfig
    keys: KeyStore
    publisher: Publisher
    sender: Sender
    replay: ReplayRequester
    lease: Lease
    routing: Routing
    leader: LeaderJobs


def build(centre, *, cfg: ActingConfig | None = None, lease: Lease | None = None, routing: Routing | None = None) -> Acting:
    """Everything wired, nothing running; raises ValueError for an unusable routing secret."""
    cfg, jobs_cfg = cfg or acting_config(centre.cfg), lease_config(centre.cfg)
    lease = lease or make_lease(centre.cfg, jobs_cfg)
    keys = KeyStore(centre.cfg.keys_dir, cfg.issuer_prefix)
    publisher = Publisher(centre.cfg.broker, f"{centre.cfg.client_id}-acting")
    sender = Sender(centre, keys, publisher, cfg, tz=timezone(cfg))
    replay = ReplayRequester(centre, keys, publisher, cfg)
    routing = routing or build_routing(centre, routing_config(centre.cfg))
    leader = LeaderJobs(lease, [Job("commands", sender.run), *routing.jobs()], restart_delay=jobs_cfg.job_restart_delay)
    centre.is_leader = lease.is_leader
    centre.request_replay = replay
    acting = Acting(cfg, keys, publisher, sender, replay, lease, routing, leader)
    centre.components["acting"] = acting
    return acting


async def run(centre) -> None:
    acting = build(centre)
    try:
        await asyncio.gather(acting.lease.run(), acting.leader.run())
    finally:
        await acting.routing.close()
        await acting.publisher.close()
