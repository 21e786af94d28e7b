"""The status file: the daemon's last health snapshot on the board, and who wrote it, for `canopy status`.

No socket is needed to read a gateway's health: the daemon rewrites one JSON
file atomically (a temporary file, then a rename, so a reader never sees half
of one).  Besides the health it says who wrote it, in ``daemon``:

- ``pid`` and ``start_ticks`` (the process's start time): a pid alone may be
  reused by another process after a kill -9, the pair may not;
- ``state``: ``running``, or ``stopped`` in the snapshot written at a clean stop;
- ``stale_after_s``: the age past which a running daemon has missed its own
  schedule (see ``reporter.py``): a hung event loop, not a quiet gateway.
"""

from __future__ import annotations

import os
from functools import lru_cache

import orjson

from gateway.status.host import process_start_ticks

RUNNING = "running"
STOPPED = "stopped"


def daemon_record(state: str, stale_after_s: float) -> dict:
    """The ``daemon`` section for a snapshot written by this process now."""
    pid = os.getpid()
    return {"pid": pid, "start_ticks": _start_ticks(pid), "state": state, "stale_after_s": round(stale_after_s, 1)}


@lru_cache(maxsize=1)
def _start_ticks(pid: int) -> int | None:
    return process_start_ticks(pid)  # read once: a process's start time does not change


def atomic_write(path: str, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` in one step (temporary file + rename). Blocking: call in a thread.

    ``mode`` is set on the temporary file before the rename, so the file never
    exists with other permissions (the daemon's umask would make it 0600).
    """
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            fd = -1
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def encode(snapshot: dict) -> bytes:
    return orjson.dumps(snapshot, option=orjson.OPT_INDENT_2)


def read(path: str) -> dict:
    """The snapshot in ``path``; OSError if it cannot be read, ValueError if it is not a snapshot."""
    with open(path, "rb") as f:
        data = orjson.loads(f.read())
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    return data
