"""The ``jobs:`` section of centre.yaml: how the leader lease is taken, kept and given up."""

from __future__ import annotations

from pydantic import Field

from core.model import Strict


class LeaseConfig(Strict):
    """Timings of the leader lease; the defaults move leadership within 10 s of the holder's death."""

    name: str = Field("canopy-centre-leader", min_length=1, max_length=128,
                      description="what the advisory lock is named after: instances sharing a name share a leader")
    retry_interval: float = Field(2.0, gt=0, le=60, description="seconds between attempts to take the lease")
    heartbeat_interval: float = Field(2.0, gt=0, le=60, description="seconds between checks that the lease is still held")
    heartbeat_timeout: float = Field(3.0, gt=0, le=60,
                                     description="a check that takes longer gives the lease up (the jobs stop at once)")
    job_restart_delay: float = Field(1.0, gt=0, le=300, description="seconds before a crashed job is started again")


def lease_config(cfg) -> LeaseConfig:
    """The ``jobs`` section of a CentreConfig, or the defaults while CentreConfig has no such field."""
    return getattr(cfg, "jobs", None) or LeaseConfig()
