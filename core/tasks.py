"""Stopping asyncio tasks reliably (shutdown must not hang on a swallowed cancel)."""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger("canopy")


async def cancel_and_wait(task: asyncio.Task | None) -> None:
    """Cancel one task and wait for it to end, whatever it raises."""
    if task is None:
        return
    task.cancel()
    try:
        await task
    except (asyncio.CancelledError, Exception):
        pass


async def cancel_all(tasks: list[asyncio.Task], deadline: float) -> None:
    """Cancel tasks and wait for them, cancelling again if one swallowed it.

    pymodbus's internal wait_for can swallow a cancel that lands as a reply
    arrives (CPython gh-86296); a shutdown must not hang on that, or the
    valves would not be closed in time.
    """
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    pending = {t for t in tasks if not t.done()}
    while pending and loop.time() < end:
        for t in pending:
            t.cancel()
        _, pending = await asyncio.wait(pending, timeout=min(0.1, max(0.0, end - loop.time())))
    if pending:
        log.warning("%d task(s) did not stop within %.1fs: %s", len(pending), deadline, sorted(t.get_name() for t in pending))
