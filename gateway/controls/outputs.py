"""One control's output write, off the decision path: a task per write, retried with backoff, never raising.

The decision is taken at once (and recorded); the write goes through the device's
bus in a task, so a slow or dead Modbus device never stalls the other controls.
A failed write is logged, counted and retried after 1, 2, 4 … 30 s for as long as
the wish stands; whether the output really switched is for the feedback to say
(service.py), not for the write's return.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("canopy.controls")

RETRY_MAX = 30.0
WritePoint = Callable[[str, str, object], Awaitable[None]]
_UNSET = object()


def same(a, b) -> bool:
    """Equality where ``True`` is not ``1``."""
    return type(a) is type(b) and a == b


class OutputWriter:
    def __init__(self, device: str, point: str, write_point: WritePoint | None):
        self.device, self.point = device, point
        self.write_point = write_point
        self.wanted: object = _UNSET
        self.written: object = _UNSET
        self.busy = False
        self.retry_at = 0.0
        self.failures = 0
        self.writes = 0
        self.errors = 0
        self.last_error: str | None = None
        self.task: asyncio.Task | None = None

    def want(self, value, *, again: bool = False) -> None:
        """Write ``value`` (``again``: even if it was written already -- the device lost it)."""
        if again or not same(value, self.wanted):
            self.retry_at = 0.0
            self.failures = 0
        self.wanted = value
        if again:
            self.written = _UNSET

    def due(self, now: float) -> bool:
        return self.wanted is not _UNSET and not same(self.wanted, self.written) and not self.busy and now >= self.retry_at

    def drive(self, now: float, on_done: Callable[[], None]) -> None:
        """Start the write if one is due (needs a running loop)."""
        if not self.due(now):
            return
        self.busy = True
        self.task = asyncio.create_task(self._write(self.wanted, now), name=f"control-output-{self.device}-{self.point}")
        self.task.add_done_callback(lambda _t: on_done())

    async def _write(self, value, now: float) -> None:
        try:
            if self.write_point is None:
                raise RuntimeError("no output writer (the gateway writes outputs only through its buses)")
            await self.write_point(self.device, self.point, value)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a dead relay must never take the controls down
            self.errors += 1
            self.failures += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            delay = min(RETRY_MAX, 2.0 ** (self.failures - 1))
            self.retry_at = now + delay
            log.warning("control output %s/%s=%r failed (%s); retry %d in %.0f s", self.device, self.point, value,
                        self.last_error, self.failures, delay)
        else:
            self.writes += 1
            self.written = value
            self.failures = 0
            self.last_error = None
        finally:
            self.busy = False

    def cancel(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()

    def snapshot(self) -> dict:
        return {"wanted": None if self.wanted is _UNSET else self.wanted, "written": None if self.written is _UNSET else self.written,
                "writes": self.writes, "write_errors": self.errors, "last_error": self.last_error}
