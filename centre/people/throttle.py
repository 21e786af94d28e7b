"""Login throttling per user name and per client address: an exponential wait after repeated failures.

After ``free_failures`` failures, each further failure blocks the key for
``base_delay * 2**(n - free_failures)`` seconds (capped at ``max_delay``); while a key is
blocked, a login for it is refused before the password is even checked, with the wait in
words.  A quiet ``forget_after`` resets the count, and a successful login resets its user's
count (not its address's: one good account must not unlock guessing at others).  The
state is in the store (``login_throttle``) so every instance counts the same failures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import sqlalchemy as sa

from centre.people.config import Throttle
from centre.people.tables import login_throttle as lt
from centre.store.engine import insert, write_transaction


@dataclass(frozen=True, slots=True)
class Blocked:
    key: str
    retry_after: float  # seconds

    @property
    def message(self) -> str:
        who = "this user" if self.key.startswith("user:") else "this address"
        return f"too many failed logins for {who}: try again in {_words(self.retry_after)}"


def user_key(username: str) -> str:
    return "user:" + username.strip().lower()[:190]


def ip_key(ip: str | None) -> str:
    return "ip:" + (ip or "unknown")[:190]


def delay(failures: int, policy: Throttle) -> float:
    """Seconds a key is blocked after its ``failures``-th consecutive failure (0 while free)."""
    over = failures - policy.free_failures
    if over <= 0:
        return 0.0
    return min(policy.max_delay, policy.base_delay * 2 ** min(over - 1, 40))


async def blocked(engine, keys: list[str], now: float) -> Blocked | None:
    """The key blocked longest among ``keys``, if any is blocked now."""
    async with engine.connect() as conn:
        rows = (await conn.execute(sa.select(lt.c.key, lt.c.blocked_until)
                                   .where(lt.c.key.in_(keys), lt.c.blocked_until > now))).all()
    if not rows:
        return None
    key, until = max(rows, key=lambda r: r.blocked_until)
    return Blocked(key, until - now)


async def failed(engine, policies: dict[str, Throttle], now: float) -> None:
    """Count one failure for each key (``{key: its policy}``), and block the keys that are over their limit."""
    async with write_transaction(engine) as conn:
        for key in sorted(policies):
            policy = policies[key]
            stmt = insert(lt, conn.dialect.name).values(key=key, failures=1, last_failure_at=now, blocked_until=0.0)
            stmt = stmt.on_conflict_do_update(index_elements=["key"], set_={
                "failures": sa.case((lt.c.last_failure_at < now - policy.forget_after, 1), else_=lt.c.failures + 1),
                "last_failure_at": now})
            await conn.execute(stmt)
            n = (await conn.execute(sa.select(lt.c.failures).where(lt.c.key == key))).scalar_one()
            wait = delay(n, policy)
            if wait:
                await conn.execute(sa.update(lt).where(lt.c.key == key).values(blocked_until=now + wait))


async def clear(engine, key: str) -> None:
    async with write_transaction(engine) as conn:
        await conn.execute(sa.delete(lt).where(lt.c.key == key))


async def purge(engine, now: float, forget_after: float) -> int:
    """Drop rows nobody has failed on for ``forget_after`` seconds and that block nothing."""
    async with write_transaction(engine) as conn:
        res = await conn.execute(sa.delete(lt).where(lt.c.last_failure_at < now - forget_after, lt.c.blocked_until < now))
    return res.rowcount


def _words(seconds: float) -> str:
    s = max(1, math.ceil(seconds))
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{math.ceil(s / 60)} min"
    return f"{math.ceil(s / 3600)} h"
