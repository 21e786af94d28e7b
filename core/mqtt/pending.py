"""The requests of one connection that wait for the broker's answer (SUBACK, UNSUBACK, PUBACK), by packet id.

Every waiter ends: answered, refused, or failed together when the connection ends.
"""

from __future__ import annotations

import asyncio


class Pending:
    """Futures by mid; a mid nobody waits for is not ours (``on_published`` hears it)."""

    def __init__(self) -> None:
        self._futures: dict[int, asyncio.Future] = {}

    async def wait(self, mid: int) -> object:
        fut = asyncio.get_running_loop().create_future()
        self._futures[mid] = fut
        try:
            return await fut
        finally:
            self._futures.pop(mid, None)

    def waiter(self, mid: int) -> asyncio.Future | None:
        """The future of a request still waiting on ``mid``, else None."""
        return self._futures.get(mid)

    def fail_all(self, exc: BaseException) -> None:
        futures, self._futures = self._futures, {}
        for fut in futures.values():
            if not fut.done():
                fut.set_exception(exc)
