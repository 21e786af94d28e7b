"""What every delivery channel shares: the two ways a send fails, the retry pace, reading a secret file safely."""

from __future__ import annotations

import os
import random
import stat


class Retry(Exception):
    """Failed for now (timeout, refused connection, 5xx, 429, SMTP 4xx): try again later."""


class Permanent(Exception):
    """Will never work as it is (4xx, SMTP 5xx, a bad address): marked failed at once."""


def retry_delay(attempts: int, initial: float, maximum: float, rng: random.Random | None = None) -> float:
    """Seconds before attempt ``attempts + 1``: exponential from ``initial``, capped, ±25 % jitter."""
    base = min(maximum, initial * 2 ** min(max(attempts - 1, 0), 32))
    return base * (0.75 + 0.5 * (rng or random).random())


def read_secret(path: str, what: str) -> str:
    """The content of a secret file, refused when others may read it (same rule as the issuer keys)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ValueError(f"{what}: {path} not found") from None
    if st.st_mode & 0o077:
        raise ValueError(f"{what}: {path} is readable by others (mode {stat.S_IMODE(st.st_mode):o}): chmod 600 {path}")
    with open(path, encoding="utf-8") as f:
        secret = f.read().strip()
    if not secret:
        raise ValueError(f"{what}: {path} is empty")
    return secret
