"""Is the gateway that wrote a status file alive, and is its snapshot current?  `canopy status`'s answer.

A snapshot alone cannot tell: after a kill -9 the file still says "broker
connected".  So the verdict checks the writer's process (pid + start time in
/proc) and the snapshot's age against the limit the daemon itself promised.

Exit codes of ``canopy status`` (docs/operations.md):

====  =====================================================================
0     running, snapshot current
1     no status file, or it cannot be read (not started with this config?)
2     the config is invalid
3     not running: stopped cleanly, or killed / crashed (its process is gone)
4     stale: the process is alive but its snapshot is older than it promised
====  =====================================================================
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from gateway.status.host import process_start_ticks
from gateway.status.status_file import STOPPED

EXIT_RUNNING = 0
EXIT_NO_STATUS = 1
EXIT_NOT_RUNNING = 3
EXIT_STALE = 4
DEFAULT_STALE_AFTER_S = 65.0  # for a snapshot that does not say (written by an older version): 2 x 30 s + slack


@dataclass(frozen=True)
class Verdict:
    state: str  # running | stale | not running
    age_s: float
    detail: str
    exit_code: int

    def as_dict(self) -> dict:
        return {"state": self.state, "age_s": round(self.age_s, 1), "detail": self.detail, "exit_code": self.exit_code}


def process_alive(pid: int, start_ticks: int | None) -> bool:
    """True while process ``pid`` exists and, when ``start_ticks`` is known, is the same process that wrote it."""
    ticks = process_start_ticks(pid)
    if ticks is None:
        if os.path.isdir("/proc/self"):
            return False  # /proc is there and the pid is not
        try:  # no /proc (unusual): ask the kernel
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return start_ticks is None or ticks == start_ticks


def judge(snapshot: dict, now: float, alive: Callable[[int, int | None], bool] = process_alive) -> Verdict:
    """The verdict on ``snapshot`` at wall time ``now``."""
    age = max(0.0, now - float(snapshot.get("ts") or 0))
    daemon = snapshot.get("daemon") if isinstance(snapshot.get("daemon"), dict) else {}
    stale_after = float(daemon.get("stale_after_s") or DEFAULT_STALE_AFTER_S)
    pid = daemon.get("pid")
    if daemon.get("state") == STOPPED:
        return Verdict("not running", age, f"stopped cleanly {_ago(age)}", EXIT_NOT_RUNNING)
    if isinstance(pid, int) and not alive(pid, daemon.get("start_ticks")):
        return Verdict("not running", age, f"its process {pid} is gone (killed or crashed); last snapshot {_ago(age)}",
                       EXIT_NOT_RUNNING)
    if age > stale_after:
        who = f"process {pid} is alive but" if isinstance(pid, int) else "the gateway"
        return Verdict("stale", age, f"{who} has not rewritten its status for {age:.0f}s (due every {stale_after:.0f}s "
                       "at most): hung or overloaded?", EXIT_STALE)
    return Verdict("running", age, f"pid {pid}" if isinstance(pid, int) else "", EXIT_RUNNING)


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"
