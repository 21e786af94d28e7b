"""Local outputs (sounder, beacon) held by alerts, written without waiting for the network.

An output is *held* while at least one alert that drives it is open and not
acknowledged; it is *released* (its release value written) when the last
holder is acknowledged or resolved.  A failed write is logged, counted and
retried with backoff (1 s, 2 s, 4 s … 30 s) for as long as the wish stands;
it never raises into the engine.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("canopy.alerts")

Key = tuple[str, str]  # (device, point)
RETRY_MAX = 30.0


def key_str(k: Key) -> str:
    return f"{k[0]}/{k[1]}"


def key_of(s: str) -> Key:
    d, _, p = s.partition("/")
    return d, p


class Outputs:
    def __init__(self, write_point: Callable[[str, str, object], Awaitable[None]] | None):
        self.write_point = write_point
        self.holders: dict[Key, dict[str, tuple[object, object]]] = {}  # key -> alert id -> (value, release)
        self.release_value: dict[Key, object] = {}
        self.commanded: dict[Key, object] = {}  # last value written successfully (this run)
        self.retry_at: dict[Key, float] = {}
        self.failures: dict[Key, int] = {}
        self.busy: set[Key] = set()
        self.writes = 0
        self.write_errors = 0
        self._warned_no_writer = False
        self.tasks: set[asyncio.Task] = set()

    # -- holding -------------------------------------------------------------
    def hold(self, alert_id: str, outputs: list[dict]) -> bool:
        changed = False
        for o in outputs:
            k = (o["device"], o["point"])
            self.holders.setdefault(k, {})[alert_id] = (o["value"], o["release"])
            self.release_value[k] = o["release"]
            self.retry_at.pop(k, None)
            changed = True
        return changed

    def release(self, alert_id: str) -> bool:
        changed = False
        for k, hs in self.holders.items():
            if hs.pop(alert_id, None) is not None:
                self.retry_at.pop(k, None)
                changed = True
        return changed

    def desired(self, k: Key):
        hs = self.holders.get(k)
        if hs:
            return list(hs.values())[-1][0]  # the most recent holder wins
        return self.release_value.get(k)

    def pending(self) -> list[Key]:
        """Outputs whose wished value has not been written yet."""
        keys = set(self.holders) | set(self.release_value)
        return sorted(k for k in keys if (w := self.desired(k)) is not None and self.commanded.get(k, _UNSET) != w)

    def due(self, now: float) -> list[tuple[Key, object]]:
        return [(k, self.desired(k)) for k in self.pending() if k not in self.busy and now >= self.retry_at.get(k, 0.0)]

    def deadline(self) -> float | None:
        times = [self.retry_at[k] for k in self.pending() if k in self.retry_at and k not in self.busy]
        return min(times, default=None)

    # -- writing -------------------------------------------------------------
    def drive(self, now: float, on_done: Callable[[], None]) -> None:
        """Start a write task for every output due now; ``on_done()`` after each one ends."""
        for k, value in self.due(now):
            self.busy.add(k)
            task = asyncio.create_task(self.write(k, value, now), name=f"alert-output-{k[0]}-{k[1]}")
            self.tasks.add(task)
            task.add_done_callback(self._ended(on_done))

    def _ended(self, on_done: Callable[[], None]) -> Callable[[asyncio.Task], None]:
        def callback(task: asyncio.Task) -> None:
            self.tasks.discard(task)
            on_done()
        return callback

    def cancel(self) -> None:
        for t in list(self.tasks):
            t.cancel()

    async def write(self, k: Key, value, now: float) -> bool:
        if self.write_point is None:
            if not self._warned_no_writer:
                log.warning("no output writer: local output %s=%r not driven", key_str(k), value)
                self._warned_no_writer = True
            self.commanded[k] = value
            return False
        self.busy.add(k)
        try:
            await self.write_point(k[0], k[1], value)
        except Exception as exc:  # a dead relay must never take the engine down
            self.write_errors += 1
            n = self.failures[k] = self.failures.get(k, 0) + 1
            delay = min(RETRY_MAX, 2.0 ** (n - 1))
            self.retry_at[k] = now + delay
            log.warning("local output %s=%r failed (%s: %s); retry %d in %.0f s", key_str(k), value,
                        type(exc).__name__, exc, n, delay)
            return False
        finally:
            self.busy.discard(k)
        self.writes += 1
        if self.failures.pop(k, 0):
            log.info("local output %s=%r written after retries", key_str(k), value)
        self.commanded[k] = value
        self.retry_at.pop(k, None)
        if not self.holders.get(k) and self.commanded.get(k) == self.release_value.get(k):
            self.release_value.pop(k, None)  # released for good: nothing left to remember
            self.holders.pop(k, None)
            self.commanded.pop(k, None)
        return True

    # -- persistence -----------------------------------------------------------
    def dump(self) -> dict:
        """Outputs that may be driven now (held, or not yet released), with their release values."""
        return {key_str(k): v for k, v in self.release_value.items()}

    def load(self, data: dict) -> None:
        for s, release in (data or {}).items():
            self.release_value[key_of(s)] = release

    def snapshot(self) -> dict:
        out = {}
        for k in sorted(set(self.holders) | set(self.release_value)):
            out[key_str(k)] = {"wanted": self.desired(k), "written": self.commanded.get(k),
                               "holders": sorted(self.holders.get(k, {})), "failures": self.failures.get(k, 0)}
        return out


_UNSET = object()
