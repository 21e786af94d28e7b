"""The messages a client was delivered and nobody has read yet: bounded, the oldest dropped and counted.

A reader that falls behind (an operator's terminal, a stalled view) must cost a
fixed amount of memory, never more: past ``maxlen`` the oldest message goes.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from core.mqtt.messages import Message

log = logging.getLogger("canopy.mqtt")


class Inbox:
    """A bounded FIFO of delivered messages with an event for whoever waits on it."""

    def __init__(self, maxlen: int):
        self._queue: deque[Message] = deque(maxlen=maxlen)
        self._arrived = asyncio.Event()
        self.dropped = 0  # messages dropped because nobody read them in time

    def put(self, message: Message) -> None:
        if len(self._queue) == self._queue.maxlen:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("%d message(s) dropped: nobody read them in time (max_queued_messages %d)",
                            self.dropped, self._queue.maxlen)
        self._queue.append(message)
        self._arrived.set()

    def pop(self) -> Message | None:
        """The oldest message, None when there is none."""
        return self._queue.popleft() if self._queue else None

    def wake(self) -> None:
        """Wake the waiter without a message (the connection ended)."""
        self._arrived.set()

    async def wait(self) -> None:
        """Until a message arrives or :meth:`wake`."""
        self._arrived.clear()
        await self._arrived.wait()
