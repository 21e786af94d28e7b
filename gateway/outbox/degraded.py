"""What the outbox does when its disk or its file fails, and the records that say so.

A failed commit sends the attempt's alarms and events to memory, published
from there at once (``memory.py``); telemetry is kept for the retry, or shed
when the disk is full.  An episode is *confirmed* when commits keep failing
(``CONFIRM_AFTER`` attempts in a row: a full cap that the forced prune cures
at once is not one), or at once when the file was deleted or replaced under
the daemon: one critical ``store.degraded`` alarm names the reason, producers
stop waiting for the disk, and one ``store.recovered`` event ends it once
everything held in memory is committed.  A deleted or replaced file is put
back from the one still open (``fileguard.py``).

``DegradedMode`` holds these steps for ``store.Outbox`` (its only user), on
the store's own state: it is split out to keep each module to one concern.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from dataclasses import dataclass

from core.records import event_body
from gateway.outbox import fileguard
from gateway.outbox.memory import Item, StoreFull

log = logging.getLogger("canopy.store")

# Consecutive failed commit attempts (about 0.2 s apart at first) that make a degraded episode.
CONFIRM_AFTER = 3


def reason_of(exc: BaseException) -> str:
    """``disk_full``, ``io_error``, ``read_only`` or ``error``, from SQLite's extended error name."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    text = str(exc).lower()
    if name == "SQLITE_FULL" or "full" in text:
        return "disk_full"
    if name.startswith("SQLITE_IOERR") or "i/o error" in text:
        return "io_error"
    if name.startswith("SQLITE_READONLY") or "readonly" in text:
        return "read_only"
    if isinstance(exc, OSError) and exc.errno is not None:
        return "disk_full" if exc.errno == 28 else "io_error"
    return "error"


def is_space_or_io(exc: sqlite3.Error) -> bool:
    """A failure of the storage (not of the file's content or a lock): the store can go on, degraded."""
    return reason_of(exc) in ("disk_full", "io_error", "read_only")


@dataclass
class Episode:
    reason: str  # disk_full, io_error, read_only, deleted, replaced, error
    detail: str
    since: float  # monotonic
    memory_epoch: str | None = None  # the epoch its records published from memory carry
    moved_to: str | None = None  # a file found at the outbox's path when it was put back, kept aside
    held: int = 0  # records held in memory and committed since
    delivered: int = 0  # of them, acknowledged by the broker before they could be committed (counted, not stored)


def degraded_body(ts: float, ep: Episode, path: str) -> bytes:
    return event_body(ts, "store.degraded", severity="critical", reason=ep.reason, detail=ep.detail, path=path,
                      memory_epoch=ep.memory_epoch)


def recovered_body(ts: float, ep: Episode, after: float) -> bytes:
    return event_body(ts, "store.recovered", reason=ep.reason, after_seconds=round(after, 3),
                      memory_epoch=ep.memory_epoch, held=ep.held, delivered_from_memory=ep.delivered, moved_to=ep.moved_to)


class DegradedMode:
    """Failed commits, degraded episodes and the file check, for ``store.Outbox`` (see the module docstring)."""

    async def _commit_failed(self, exc: sqlite3.Error, items: list[Item]) -> bool:
        """Alarms/events into memory (published at once); telemetry kept, or shed when the disk is full or
        failures persist; confirm the degradation after a few.  False when closing has waited long enough."""
        self._failures += 1
        self.commit_errors += 1
        self.last_error = str(exc)
        self._failing = self.degraded = True
        await self._rollback()
        full = reason_of(exc) == "disk_full"
        shedding = full or self._failures > 3
        telemetry = [it for it in items if it.lane == "telemetry"]
        for it in items:
            if it.lane != "telemetry":
                with contextlib.suppress(StoreFull):  # counted, and told to its producer
                    self._hold(it)
        if shedding:  # give the space (or the retry) to alarms and events
            for it in telemetry:
                self._shed(it, "store_full" if full else "store_error")
        else:
            self._held = telemetry
        if self._failures == 1 or self._failures % 50 == 0:
            log.error("outbox commit failed (%s): %d alarm/event records held in memory and published from there%s; "
                      "retrying", exc, sum(self.memory.count(lane) for lane in ("alarm", "event")),
                      f", {sum(len(i.bodies) for i in telemetry)} telemetry records shed" if shedding else "")
        if self._failures >= CONFIRM_AFTER and self.episode is None:
            self._begin_episode(reason_of(exc), str(exc))
        if full:
            await self._maybe_prune(force=True)
        await self._check_file(force=True)
        if self._closing and (self._failures > 20 or (self.episode is not None and self._failures > 2 * CONFIRM_AFTER)):
            for it in self._held:
                self._shed(it, "store_error")
            self._held = []
            return False  # close() reports what memory still held
        await asyncio.sleep(0.05 if self._closing else min(2.0, 0.05 * self._failures))
        return True

    # -- episodes -------------------------------------------------------------------
    def _begin_episode(self, reason: str, detail: str) -> None:
        """Confirmed: a critical ``store.degraded`` alarm, published from memory; producers stop waiting."""
        ep = self.episode = Episode(reason, detail, self.clock.monotonic())
        ep.memory_epoch = self.memory.begin()
        log.critical("outbox %s degraded (%s: %s): alarms and events are published from memory (epoch %s) "
                     "until it can commit", self.path, reason, detail, ep.memory_epoch)
        alarm = Item("alarm", self.clock.time(), [degraded_body(self.clock.time(), ep, self.path)])
        with contextlib.suppress(StoreFull):
            self._hold(alarm)
        for e in self.memory.snapshot():
            if e.item.done is not None and not e.item.done.done():
                e.item.done.set_result([])

    def _end_episode(self) -> None:
        ep, self.episode = self.episode, None
        after = self.clock.monotonic() - ep.since
        log.warning("outbox %s recovered after %.1f s (%s): %d records held in memory committed, %d of them already "
                    "delivered", self.path, after, ep.reason, ep.held, ep.delivered)
        self._urgent_items.append(Item("event", self.clock.time(), [recovered_body(self.clock.time(), ep, after)]))
        self._urgent.set()
        self._wakeup.set()

    # -- the file under us (fileguard.py) ---------------------------------------------
    async def _check_file(self, force: bool = False) -> None:
        """Every ``check_interval`` (and after a failed commit): is the file at our path still ours?"""
        now = self.clock.monotonic()
        if self._opened is None or (not force and now < self._next_check):
            return
        self._next_check = now + self.check_interval
        problem = await asyncio.to_thread(fileguard.problem, self.path, self._opened)
        if problem is not None:
            await self._put_back(problem)

    async def _put_back(self, problem: str) -> None:
        """Write what we have open back at the path (same epoch, seqs, counters, rows); alarms go out from
        memory meanwhile.  When that fails (disk full too), commits go on into the open file and it is tried again."""
        was_failing = self._failing
        self._failing = self.degraded = True
        if self._file_problem is None:
            self._file_problem = problem
            log.critical("outbox %s was %s while open: every commit since went to a file that is lost at exit",
                         self.path, problem)
            if self.episode is None:
                self._begin_episode(problem, f"the outbox file was {problem} while the gateway had it open")
        tmp = self.path + ".recreate"
        try:
            await asyncio.to_thread(fileguard.prepare_copy, tmp)
            await self._db.execute("VACUUM INTO ?", (tmp,))
        except (sqlite3.Error, OSError) as exc:
            self._failing = was_failing
            self._put_back_failures += 1
            if self._put_back_failures in (1, 10) or self._put_back_failures % 100 == 0:
                log.error("outbox %s: cannot put the file back yet (%s, %d attempts); trying again every %g s",
                          self.path, exc, self._put_back_failures, self.check_interval)
            return
        async with self._reader_lock:
            for conn in (self._reader, self._db):
                with contextlib.suppress(Exception):
                    await conn.close()
            moved = await asyncio.to_thread(fileguard.put_back, tmp, self.path, self._opened, int(self.clock.time()))
            await self._open_db(bump=False)
            self._reader = await self._connect_reader()
        self._file_problem = None
        self._failing = was_failing
        self._put_back_failures = 0
        if self.episode is not None:
            self.episode.moved_to = moved
        log.warning("outbox %s put back from the open file (epoch %s, sequences and pending records kept)%s",
                    self.path, self.epoch, f"; the file found there was moved to {moved}" if moved else "")
