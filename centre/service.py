"""The centre daemon: one store, one hub, ingest, and the components other modules add.

A component is a module in :data:`COMPONENTS` that exists and defines
``async def run(centre: Centre) -> None``: it runs until cancelled (web server, signing and
sending, routing, leader jobs).  They all share the :class:`Centre` handle.  SIGTERM/SIGINT
stop everything; ingest commits and acknowledges what it holds before it goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine

from centre.config import CentreConfig
from centre.hub import Hub
from centre.ingest.gaps import GapRef
from centre.store.engine import create_engine
from centre.store.migrate import current

log = logging.getLogger("centre")

COMPONENTS = ("centre.web.service", "centre.acting.service")


@dataclass(eq=False)
class Centre:
    """What every component gets: the config, the store, the change hub, and the ingest hooks."""

    cfg: CentreConfig
    engine: AsyncEngine
    hub: Hub = field(default_factory=Hub)
    components: dict[str, object] = field(default_factory=dict)  # name -> whatever a component wants to share
    # Gap repair hook: ingest calls it for a gap open longer than ingest.gap_report_after (once per
    # gap_check_interval while it stays open); the signing module sets it to send a signed `replay`
    # request (docs/protocol.md#replay).  Returns True when a request went out.
    request_replay: Callable[[GapRef], Awaitable[bool]] | None = None
    # Jobs that must run once across instances ("gaps", "retention", ...) ask this before each round;
    # the leader-lease module replaces it.  One instance alone is always the leader.
    is_leader: Callable[[str], bool] = lambda job: True


async def open_centre(cfg: CentreConfig) -> Centre:
    engine = create_engine(cfg.database.url, synchronous=cfg.database.synchronous, pool_size=cfg.database.pool_size)
    if not await current(engine):
        await engine.dispose()
        raise SystemExit("the database has no schema yet: run `canopy-centre db upgrade -c centre.yaml` first")
    return Centre(cfg, engine)


async def run_service(cfg: CentreConfig) -> int:
    from centre.ingest.service import run_ingest

    centre = await open_centre(cfg)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    tasks = [asyncio.create_task(run_ingest(centre, stop), name="ingest")]
    for name in COMPONENTS:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and name.startswith(exc.name):
                continue
            raise
        tasks.append(asyncio.create_task(mod.run(centre), name=name))
    log.info("centre %s running (database %s)", cfg.instance, centre.engine.dialect.name)
    try:
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
        for t in done:
            if t is not stopper and t.exception() is not None:
                log.error("%s failed: %r", t.get_name(), t.exception())
        stop.set()
        await asyncio.wait_for(tasks[0], 10) if not tasks[0].done() else None
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await centre.engine.dispose()
    return 0
