"""Why the outbox is degraded, and the records that say so (``store.degraded``, ``store.recovered``).

An episode starts when commits keep failing (``CONFIRM_AFTER`` attempts in a
row: a full cap that the forced prune cures at once is not one) or at once when
the file was deleted or replaced under the daemon.  It raises one critical
``store.degraded`` alarm naming the reason, and ends with one
``store.recovered`` event once everything held in memory is committed.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from core.records import event_body

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
    memory_epoch: str | None = None
    moved_to: str | None = None  # a replaced file, kept aside


def degraded_body(ts: float, ep: Episode, path: str) -> bytes:
    return event_body(ts, "store.degraded", severity="critical", reason=ep.reason, detail=ep.detail, path=path,
                      memory_epoch=ep.memory_epoch)


def recovered_body(ts: float, ep: Episode, after: float, held: int, delivered: int) -> bytes:
    return event_body(ts, "store.recovered", reason=ep.reason, after_seconds=round(after, 3),
                      memory_epoch=ep.memory_epoch, held=held, delivered_from_memory=delivered, moved_to=ep.moved_to)
