"""The leader lease: a PostgreSQL session advisory lock held on a connection of its own.

PostgreSQL releases a session lock the moment the session ends, so the lease follows the
holder's life without any timer in the database: ``kill -9`` closes the socket and the
server drops the lock at once; a host that vanishes is noticed by the server's TCP
keepalives (set on this session to about 9 s).  Every other instance tries
``pg_try_advisory_lock`` every ``retry_interval`` and takes over.  The holder checks its
connection every ``heartbeat_interval``; a check that fails or takes longer than
``heartbeat_timeout`` gives the lease up *before* the server can hand it to someone else,
so two leaders never act at once for longer than the network takes to say so.

SQLite is a single-instance store: its lease is always held (:class:`SoleLease`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import struct

import asyncpg
from sqlalchemy.engine import make_url

from centre.jobs.config import LeaseConfig
from core.backoff import Backoff, FailureLog

log = logging.getLogger("centre.lease")

# server-side keepalives on the lease's own session: a holder whose host disappears loses the lock in ~9 s
KEEPALIVES = {"tcp_keepalives_idle": "5", "tcp_keepalives_interval": "2", "tcp_keepalives_count": "2"}
_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


def lock_key(name: str) -> int:
    """The advisory lock's 64-bit key for a lease name (stable across instances and versions)."""
    return struct.unpack(">q", hashlib.sha256(name.encode()).digest()[:8])[0]


def plain_dsn(url: str) -> str:
    """``postgresql+asyncpg://…`` -> ``postgresql://…`` (what asyncpg itself takes)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class Lease:
    """Whether this instance is the leader; ``run()`` takes and keeps the lease until cancelled."""

    def __init__(self) -> None:
        self.held = False
        self.changes = 0  # times the lease was taken or lost, for the status page
        self._changed = asyncio.Event()

    def is_leader(self, job: str = "") -> bool:
        """``centre.is_leader``: one lease guards every job."""
        return self.held

    def _set(self, held: bool) -> None:
        if held != self.held:
            self.held = held
            self.changes += 1
            self._changed.set()
            self._changed = asyncio.Event()

    async def wait(self, held: bool) -> None:
        """Return once the lease is (``held=True``) or is not (``False``) held by this instance."""
        while self.held != held:
            await self._changed.wait()

    async def run(self) -> None:
        raise NotImplementedError


class SoleLease(Lease):
    """SQLite: one instance, always the leader."""

    def __init__(self) -> None:
        super().__init__()
        self._set(True)

    async def run(self) -> None:
        await asyncio.Event().wait()


class AdvisoryLease(Lease):
    """PostgreSQL: ``pg_try_advisory_lock`` on a dedicated connection (never one of the pool's)."""

    def __init__(self, url: str, cfg: LeaseConfig, *, instance: str = "centre"):
        super().__init__()
        self.dsn = plain_dsn(url)
        self.cfg = cfg
        self.instance = instance
        self.key = lock_key(cfg.name)
        self.conn: asyncpg.Connection | None = None

    async def run(self) -> None:
        backoff, fails = Backoff(self.cfg.retry_interval, 30.0), FailureLog(log, "leader lease")
        try:
            while True:
                try:
                    await self._step()
                    fails.recovered()
                    backoff.reset()
                    await asyncio.sleep(self.cfg.heartbeat_interval if self.held else self.cfg.retry_interval)
                except _ERRORS as exc:
                    if self.held:
                        log.warning("leader lease lost (%s): jobs stop on %s", _short(exc), self.instance)
                    self._set(False)
                    fails.failed(_short(exc))
                    await self._close()
                    await asyncio.sleep(backoff.next())
        finally:
            self._set(False)
            await self._close()

    async def _step(self) -> None:
        timeout = self.cfg.heartbeat_timeout
        if self.held and (self.conn is None or self.conn.is_closed()):
            raise ConnectionError("the lease's connection closed (the lock went with it)")
        if self.conn is None or self.conn.is_closed():
            self.conn = await asyncpg.connect(self.dsn, timeout=timeout, server_settings={
                "application_name": f"canopy-centre-lease-{self.instance}"[:63], **KEEPALIVES})
        if self.held:
            await asyncio.wait_for(self.conn.fetchval("SELECT 1"), timeout)
            return
        if await asyncio.wait_for(self.conn.fetchval("SELECT pg_try_advisory_lock($1)", self.key), timeout):
            log.info("leader lease taken by %s: once-only jobs run here", self.instance)
            self._set(True)

    async def _close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.terminate()  # never wait on a connection that may be dead; the server ends the session


def make_lease(cfg, lease_cfg: LeaseConfig) -> Lease:
    """The lease for a CentreConfig's database: advisory lock on PostgreSQL, always held on SQLite."""
    url = cfg.database.url
    if make_url(url).get_backend_name() == "sqlite":
        return SoleLease()
    return AdvisoryLease(url, lease_cfg, instance=cfg.instance)


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
