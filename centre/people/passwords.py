"""Password hashes (argon2id via argon2-cffi), one-time passwords, and the password rules.

Hashing costs ~50 ms of CPU and 64 MiB (argon2-cffi's RFC 9106 low-memory profile), so it
runs in a small thread pool, never on the event loop, at most :data:`PARALLEL` at once; a
login flood beyond :data:`MAX_WAITING` waiting hashes is refused (:class:`Busy`) instead of
queueing without bound.  An unknown user is verified against a fixed dummy hash so the
answer takes as long as for a real one (no user enumeration by timing).
"""

from __future__ import annotations

import asyncio
import secrets
from concurrent.futures import ThreadPoolExecutor

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

PARALLEL = 2
MAX_WAITING = 32
MAX_LENGTH = 256  # longer input is refused before hashing

_hasher = PasswordHasher()
_pool = ThreadPoolExecutor(PARALLEL, thread_name_prefix="argon2")
_waiting = 0  # hashes submitted and not finished
_DUMMY = _hasher.hash(secrets.token_urlsafe(16))


class Busy(Exception):
    """Too many password checks already waiting: try again in a moment."""


def one_time_password() -> str:
    """A random password to hand to a new user once (about 96 bits); they must change it at first login."""
    return secrets.token_urlsafe(12)


def policy_problem(password: str, *, username: str, min_length: int) -> str | None:
    """Why ``password`` is not acceptable as a new password, or None."""
    if len(password) < min_length:
        return f"the password must have at least {min_length} characters"
    if len(password) > MAX_LENGTH:
        return f"the password must have at most {MAX_LENGTH} characters"
    if password.strip().lower() == username.strip().lower():
        return "the password must not be the user name"
    if len(set(password)) < 4:
        return "the password needs at least four different characters"
    return None


async def hash_password(password: str) -> str:
    return await _in_thread(_hasher.hash, password)


async def verify_password(stored_hash: str | None, password: str) -> tuple[bool, str | None]:
    """(matches, new_hash): new_hash is set when the stored hash uses weaker parameters and should be replaced."""
    if len(password) > MAX_LENGTH:
        password = password[:MAX_LENGTH + 1]  # still hashed (same time), can never match a stored one
    return await _in_thread(_verify, stored_hash, password)


def _verify(stored_hash: str | None, password: str) -> tuple[bool, str | None]:
    try:
        _hasher.verify(stored_hash or _DUMMY, password)
    except (VerificationError, InvalidHashError):
        return False, None
    if stored_hash is None:
        return False, None
    return True, (_hasher.hash(password) if _hasher.check_needs_rehash(stored_hash) else None)


async def _in_thread(fn, *args):
    global _waiting
    if _waiting >= MAX_WAITING:
        raise Busy("too many logins at once: try again in a few seconds")
    _waiting += 1
    try:
        return await asyncio.get_running_loop().run_in_executor(_pool, fn, *args)
    finally:
        _waiting -= 1
