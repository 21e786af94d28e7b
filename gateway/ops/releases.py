"""Which installed version runs, which one is known good, and taking a bad one back: ``/opt/canopy/releases.json``.

A new version starts as a *trial*: ``current`` points at it, ``good`` still at the
last version that passed the health gate.  Only the gate commits a trial.  Every
start of the service counts a boot (``ExecStartPre``); a trial that has been
started ``MAX_TRIAL_BOOTS`` times without being committed (it crashes, never
becomes READY, or the applier died with the power) is rolled back before the
next start, so a board cannot be left running, or restarting, a bad version.
The file is root's (the daemon cannot write it); a lock serialises the applier,
the boot check and the rollback unit.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

from gateway.ops.layout import Layout, switch_link

log = logging.getLogger("canopy.ops")

MAX_TRIAL_BOOTS = 3
KEEP_HISTORY = 20


class ReleaseError(Exception):
    """A release operation that cannot be done, in an operator's words."""


@dataclass
class Releases:
    current: str | None = None
    good: str | None = None
    trial: bool = False
    boots: int = 0
    history: list[dict] = field(default_factory=list)

    def note(self, event: str, **detail) -> None:
        self.history = [*self.history, {"ts": round(time.time(), 3), "event": event, **detail}][-KEEP_HISTORY:]


def load(layout: Layout) -> Releases:
    try:
        data = json.loads(layout.releases.read_text())
    except FileNotFoundError:
        return Releases()
    except (OSError, ValueError) as exc:
        raise ReleaseError(f"cannot read {layout.releases}: {exc}") from None
    known = {k: data[k] for k in Releases.__dataclass_fields__ if k in data}
    return Releases(**known)


def save(layout: Layout, rel: Releases) -> None:
    tmp = layout.releases.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(rel), indent=2) + "\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, layout.releases)


@contextlib.contextmanager
def locked(layout: Layout) -> Iterator[Releases]:
    """The releases state, held under an exclusive lock and saved when the block ends without error."""
    layout.opt.mkdir(parents=True, exist_ok=True)
    with open(layout.opt / ".releases.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        rel = load(layout)
        yield rel
        save(layout, rel)


def begin_trial(layout: Layout, version: str) -> None:
    """Run ``version`` next, on trial; the first install is its own good version once it passes the gate."""
    if not (layout.version_dir(version) / "bin" / "python").exists():
        raise ReleaseError(f"version {version} is not installed under {layout.opt}")
    with locked(layout) as rel:
        rel.current, rel.trial, rel.boots = version, True, 0
        rel.note("trial", version=version, good=rel.good)
        switch_link(layout.current, version)


def commit(layout: Layout, keep: int = 3) -> str:
    """The trial passed the health gate: it becomes the good version; old versions beyond ``keep`` are removed."""
    with locked(layout) as rel:
        if rel.current is None:
            raise ReleaseError("nothing to commit: no version installed")
        rel.good, rel.trial, rel.boots = rel.current, False, 0
        rel.note("commit", version=rel.current)
        switch_link(layout.good, rel.current)
        _prune(layout, rel, keep)
        return rel.current


def rollback(layout: Layout, reason: str) -> str | None:
    """Back to the good version (the trial is abandoned), or, when no version is on trial, a pushed config on
    trial back to the last good config (config_store.py); what it went back to, None when nothing was on trial."""
    with locked(layout) as rel:
        to = _rollback(layout, rel, reason)
    if to is None:
        from gateway.ops.config_store import ConfigStore

        config = ConfigStore(layout).rollback(reason)
        return f"the last good config ({config})" if config else None
    return to


def _rollback(layout: Layout, rel: Releases, reason: str) -> str | None:
    if not rel.trial or rel.good is None or rel.current == rel.good:
        return None
    failed, rel.current, rel.trial, rel.boots = rel.current, rel.good, False, 0
    rel.note("rollback", version=failed, to=rel.good, reason=reason)
    switch_link(layout.current, rel.good)
    log.error("rolled back from %s to %s: %s", failed, rel.good, reason)
    return rel.good


def boot_check(layout: Layout, max_boots: int = MAX_TRIAL_BOOTS) -> str | None:
    """Before every start (``ExecStartPre``): count a trial's boots and roll it back past ``max_boots``.

    A pushed config on trial is counted the same way (config_store.py; its rollback is logged).
    Returns the version rolled back to, or None when the start goes ahead as it is.
    """
    from gateway.ops.config_store import ConfigStore

    ConfigStore(layout).boot_check(max_boots)
    with locked(layout) as rel:
        if not rel.trial:
            return None
        rel.boots += 1
        if rel.boots <= max_boots:
            return None
        return _rollback(layout, rel, f"started {rel.boots - 1} times without passing the health gate")


def _prune(layout: Layout, rel: Releases, keep: int) -> None:
    """Remove the oldest version folders beyond ``keep``; never the current or the good one."""
    dirs = [p for p in layout.opt.iterdir() if p.is_dir() and not p.is_symlink() and (p / "bin").is_dir()]
    dirs.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    protected = {rel.current, rel.good}
    for old in [p for p in dirs if p.name not in protected][max(0, keep - len(protected)):]:
        shutil.rmtree(old, ignore_errors=True)
        rel.note("removed", version=old.name)
