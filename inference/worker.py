"""The camera's worker thread: runs pixel jobs in order, off the event loop, and resolves asyncio futures.

One per camera, holding that camera's LiteRT interpreter (an interpreter is
used from one thread only).  A job that never returns cannot be killed in
Python: the watchdog stops waiting, abandons the thread (it is a daemon) and
starts a new ``Worker`` with a new interpreter.
"""

from __future__ import annotations

import asyncio
import queue
import threading


class Worker:
    """A daemon thread that runs jobs in order and resolves asyncio futures."""

    def __init__(self, name: str):
        # unbounded by design: the runner awaits each job before submitting the next, so it holds at most one
        self.q: queue.SimpleQueue = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def submit(self, fn, *args) -> asyncio.Future:
        """Run ``fn(*args)`` in the thread; the future (of the calling loop) gets its result or exception."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self.q.put((fn, args, fut, loop))
        return fut

    def _run(self) -> None:
        while True:
            item = self.q.get()
            if item is None:
                return
            fn, args, fut, loop = item
            try:
                result, exc = fn(*args), None
            except BaseException as e:  # noqa: BLE001 - handed to the awaiting task
                result, exc = None, e
            try:
                loop.call_soon_threadsafe(_resolve, fut, result, exc)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                return

    def close(self) -> None:
        """The thread exits after its current job (if that ever returns)."""
        self.q.put(None)


def _resolve(fut: asyncio.Future, result, exc) -> None:
    if fut.done():  # the awaiting task gave up (timeout, cancel)
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)
