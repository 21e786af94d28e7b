"""The doctor's checklist: one ``Check`` per fact about the board, with the fix when it is not ok.

``Host`` says where the board's kernel and system facts are read, so the
checks run on a fake board in tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

OK, WARN, FAIL = "ok", "warn", "fail"


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok | warn | fail
    detail: str
    fix: str = ""


@dataclass(frozen=True)
class Host:
    """Where the board's kernel and system facts are read (a temporary tree in tests)."""

    dev: Path = Path("/dev")
    sys: Path = Path("/sys")
    etc: Path = Path("/etc")
    clock_synced: Callable[[], bool | None] | None = None  # None: ask the kernel (adjtimex)


def exit_code(checks: list[Check]) -> int:
    return 1 if any(c.status == FAIL for c in checks) else 0


def render(checks: list[Check]) -> list[str]:
    """One line per check, ``fix:`` under each that is not ok."""
    marks = {OK: "ok  ", WARN: "WARN", FAIL: "FAIL"}
    width = max((len(c.name) for c in checks), default=0)
    lines = []
    for c in checks:
        lines.append(f"{marks[c.status]}  {c.name:<{width}}  {c.detail}")
        if c.fix and c.status != OK:
            lines.append(f"      {'':<{width}}  fix: {c.fix}")
    failed, warned = sum(c.status == FAIL for c in checks), sum(c.status == WARN for c in checks)
    lines.append(f"{len(checks)} checks: {failed} failed, {warned} warning{'s' if warned != 1 else ''}")
    return lines
