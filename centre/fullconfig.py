"""The whole centre.yaml: the base sections (``centre.config``) plus each module's own.

Apart from ``centre.config`` because the modules import that one (for the broker, the
database, ...): a base that imported them back would be an import cycle.  ``canopy-centre``
loads this, so a module reads its section as ``cfg.acting``, ``cfg.routing``, ... (or the
defaults when handed a plain ``CentreConfig``).
"""

from __future__ import annotations

from pathlib import Path

from centre.acting.config import ActingConfig
from centre.config import CentreConfig, load_config
from centre.jobs.config import LeaseConfig
from centre.people.config import PeopleConfig
from centre.routing.config import RoutingConfig


class FullConfig(CentreConfig):
    people: PeopleConfig = PeopleConfig()
    acting: ActingConfig = ActingConfig()
    routing: RoutingConfig = RoutingConfig()
    jobs: LeaseConfig = LeaseConfig()


def load_full_config(file: str | Path) -> FullConfig:
    return load_config(file, FullConfig)  # type: ignore[return-value]
