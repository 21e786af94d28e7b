"""The bounded hand-off between a camera's reader thread and its analysis on the event loop.

Live sources must never fall behind real time, so a full buffer drops its
oldest frame (and counts it); a replay (``realtime: false``) must see every
frame, so its reader waits for space instead.
"""

from __future__ import annotations

import asyncio
import collections
import threading

from inference.pipeline import Frame


class FrameBuffer:
    """Bounded, thread-safe; a full buffer drops its oldest frame (live) or makes the reader wait (replay)."""

    def __init__(self, maxlen: int, loop: asyncio.AbstractEventLoop):
        self.q: collections.deque = collections.deque()
        self.maxlen = maxlen
        self.lock = threading.Lock()
        self.space = threading.Condition(self.lock)
        self.loop = loop
        self.event = asyncio.Event()
        self.dropped = 0
        self.closed = False

    def put(self, frame: Frame, block: bool = False, alive=lambda: True) -> None:
        """From the reader thread; ``block`` waits for space while ``alive()`` (called every 0.2 s) says so."""
        with self.lock:
            if block:
                while len(self.q) >= self.maxlen and not self.closed and alive():
                    self.space.wait(0.2)
            while len(self.q) >= self.maxlen:
                self.q.popleft()
                self.dropped += 1
            self.q.append(frame)
        try:
            self.loop.call_soon_threadsafe(self.event.set)
        except RuntimeError:  # loop closed during shutdown
            pass

    async def get(self) -> Frame:
        """On the event loop: the oldest waiting frame."""
        while True:
            with self.lock:
                if self.q:
                    frame = self.q.popleft()
                    self.space.notify()
                    return frame
                self.event.clear()
            await self.event.wait()

    def clear(self) -> None:
        with self.lock:
            self.q.clear()
            self.space.notify_all()

    def close(self) -> None:
        with self.lock:
            self.closed = True
            self.space.notify_all()

    def __len__(self) -> int:
        return len(self.q)
