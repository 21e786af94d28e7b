"""Simulated time, so a day of farm weather can pass in seconds and tests can freeze it."""

from __future__ import annotations

import time


class SimClock:
    """Simulated epoch seconds: ``start + elapsed_real * speed + jumps``.

    ``speed=0`` freezes time (values stay constant, tests compare them exactly);
    ``speed=60`` makes a simulated minute pass each real second.
    """

    def __init__(self, speed: float = 1.0, start: float | None = None) -> None:
        if speed < 0:
            raise ValueError("speed must be >= 0")
        self.speed = speed
        self.start = time.time() if start is None else float(start)
        self._mono0 = time.monotonic()
        self._jump = 0.0

    def now(self) -> float:
        return self.start + self._jump + (time.monotonic() - self._mono0) * self.speed

    def advance(self, seconds: float) -> None:
        """Jump forward (lets a frozen clock step through a relock or a dry day)."""
        if seconds < 0:
            raise ValueError("time only moves forward")
        self._jump += seconds
