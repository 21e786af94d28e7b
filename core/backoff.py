"""Retry pacing and failure logging shared by every link that can break.

Jittered exponential backoff, for a far end that may stay away long or that
answers "no" (a Modbus endpoint, a serial port, a camera, a broker refusing our
login); the jitter keeps a fleet from retrying in lock-step.  A broker that is
only unreachable is retried at a steady pace instead (gateway/uplink/resume.py):
a backoff grown to a minute keeps the gateway away that long after it is back.
FailureLog logs the first failure loudly, then quietly until recovery (as Home
Assistant integrations do), so a dead device does not flood an SD card with
identical lines.
"""

from __future__ import annotations

import logging
import random


class Backoff:
    def __init__(self, initial: float = 1.0, maximum: float = 60.0, factor: float = 2.0, jitter: float = 0.5, rng: random.Random | None = None):
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self.jitter = jitter
        self.attempts = 0
        self._rng = rng or random.Random()

    def next(self) -> float:
        """Delay before the next attempt: exponential, capped, with +/- jitter."""
        # the exponent is capped: a link can be down for weeks, retried for ever
        base = min(self.maximum, self.initial * (self.factor ** min(self.attempts, 64)))
        self.attempts += 1
        return max(0.0, base * (1 + self.jitter * (2 * self._rng.random() - 1)))

    def reset(self) -> None:
        self.attempts = 0


class FailureLog:
    def __init__(self, logger: logging.Logger, what: str):
        self.log = logger
        self.what = what
        self.failures = 0

    def failed(self, reason: str) -> None:
        self.failures += 1
        if self.failures == 1:
            self.log.warning("%s: %s (further failures logged at debug level until it recovers)", self.what, reason)
        else:
            self.log.debug("%s: %s (failure %d)", self.what, reason, self.failures)

    def recovered(self) -> None:
        if self.failures:
            self.log.info("%s: recovered after %d failure(s)", self.what, self.failures)
        self.failures = 0


class RateLimitedLog:
    """Log the first few of a kind of bad input, then every 100th (counters have them all).

    A stream of malformed commands or acks must not fill an SD card.
    """

    def __init__(self, logger: logging.Logger, first: int = 5, every: int = 100):
        self.log = logger
        self.first = first
        self.every = every
        self.seen: dict[str, int] = {}

    def __call__(self, kind: str, msg: str, *args) -> None:
        n = self.seen[kind] = self.seen.get(kind, 0) + 1
        if n <= self.first or n % self.every == 0:
            self.log.warning(msg + (f" ({n} so far)" if n > 1 else ""), *args)
