"""The ``people:`` section of centre.yaml: how long sessions live and how hard login is throttled."""

from __future__ import annotations

from pydantic import Field

from core.model import Strict


class Throttle(Strict):
    """Exponential delay after repeated failed logins: ``base_delay * 2**(failures - free_failures)``, capped."""

    free_failures: int = Field(ge=0, le=100, description="failed logins allowed before the first delay")
    base_delay: float = Field(1.0, gt=0, le=3600, description="seconds of the first delay")
    max_delay: float = Field(900.0, gt=0, le=86400, description="the delay never grows past this")
    forget_after: float = Field(900.0, gt=0, le=7 * 86400,
                                description="seconds without a failure after which the count starts again")


class PeopleConfig(Strict):
    session_idle: float = Field(12 * 3600.0, ge=60, le=30 * 86400,
                                description="seconds a session lives without a request (a night shift is 12 h)")
    session_max: float = Field(7 * 86400.0, ge=60, le=365 * 86400, description="seconds a session lives at most")
    password_min_length: int = Field(10, ge=8, le=128)
    per_user: Throttle = Throttle(free_failures=3)
    per_ip: Throttle = Throttle(free_failures=10)
