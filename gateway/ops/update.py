"""Update like firmware: install side by side, switch, restart, health gate, then commit or roll back by itself.

Run by the privileged applier (``canopy-applier.service``, started by a path unit
when a bundle lands in ``/var/lib/canopy/updates/``) or by root directly
(``canopy update BUNDLE``).  The daemon never changes its own software: it is
unprivileged and its file system is read-only.  Every outcome is written as a
result record (``updates/results/<bundle>.json``) that says what happened and why.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from gateway.ops import releases
from gateway.ops.bundle import BundleError
from gateway.ops.health_gate import HealthGate, devices_ok, read_status
from gateway.ops.install import InstallError, VenvBuilder, install_version, pip_venv
from gateway.ops.layout import Layout
from gateway.ops.service import Service

log = logging.getLogger("canopy.ops")

BUNDLE_SUFFIX = ".tar"


@dataclass(frozen=True)
class UpdateResult:
    bundle: str
    outcome: str  # installed (first) | committed | rolled_back | refused
    version: str | None
    previous: str | None
    reason: str
    ts: float

    def line(self) -> str:
        what = {"installed": f"installed {self.version}", "committed": f"updated {self.previous} -> {self.version}",
                "rolled_back": f"{self.version} rolled back to {self.previous}", "refused": "refused"}[self.outcome]
        return what + (f": {self.reason}" if self.reason else "")


@dataclass(frozen=True)
class GatePolicy:
    timeout: float = 120.0  # T: READY + broker + devices within this
    settle: float = 10.0  # and healthy this long


def update(bundle: Path, layout: Layout, service: Service, status_path: Path, *, policy: GatePolicy = GatePolicy(),
           builder: VenvBuilder = pip_venv, create_user: bool = True) -> UpdateResult:
    """One bundle from verification to a committed or rolled-back version; never raises for a bad bundle."""
    before = releases.load(layout)

    def result(outcome: str, version: str | None, previous: str | None, reason: str = "") -> UpdateResult:
        return UpdateResult(bundle.name, outcome, version, previous, reason, round(time.time(), 3))

    try:
        inst = install_version(bundle, layout, builder=builder, create_user=create_user)
    except (BundleError, InstallError, releases.ReleaseError) as exc:
        log.error("update %s refused: %s", bundle.name, exc)
        return result("refused", None, before.good, str(exc))
    if inst.first or before.good is None:
        releases.begin_trial(layout, inst.version)
        releases.commit(layout)  # nothing older to fall back to: the first version is the good one
        return result("installed", inst.version, None)
    status = read_status(status_path)
    boot = status.get("boot") if status else None
    releases.begin_trial(layout, inst.version)
    since = time.time()
    service.restart()
    gate = HealthGate(service.ready, status_path, timeout=policy.timeout, settle=policy.settle, need_devices_ok=devices_ok(status),
                      after_boot=boot if isinstance(boot, int) else None).wait(since)
    now = releases.load(layout)
    if not (now.trial and now.current == inst.version):  # the boot check took it back while we waited
        return result("rolled_back", inst.version, before.good, _last_rollback_reason(now))
    if gate.ok:
        releases.commit(layout)
        log.info("update to %s committed after %.1f s", inst.version, gate.waited)
        return result("committed", inst.version, before.good)
    releases.rollback(layout, gate.reason)
    service.restart()
    return result("rolled_back", inst.version, before.good, gate.reason)


def _last_rollback_reason(rel: releases.Releases) -> str:
    reasons = [h.get("reason", "") for h in rel.history if h.get("event") == "rollback"]
    return reasons[-1] if reasons else "rolled back while the health gate waited"


def apply_pending(layout: Layout, service: Service, status_path: Path, *, policy: GatePolicy = GatePolicy(),
                  builder: VenvBuilder = pip_venv, create_user: bool = True) -> list:
    """The applier's run: every ``*.tar`` handed over in ``updates/``, oldest first, each removed once judged; then
    every config the daemon handed over (config_apply.py).  The results are UpdateResult and ConfigApplyResult.

    Whoever hands a bundle over writes ``NAME.tar.part`` and renames it, so a half-copied file is never picked up.
    """
    from gateway.ops.config_apply import apply_pending_configs

    return _apply_bundles(layout, service, status_path, policy=policy, builder=builder, create_user=create_user) + \
        apply_pending_configs(layout, service, status_path, policy=policy)


def _apply_bundles(layout: Layout, service: Service, status_path: Path, *, policy: GatePolicy, builder: VenvBuilder,
                   create_user: bool) -> list[UpdateResult]:
    out = []
    results = layout.updates / "results"
    results.mkdir(parents=True, exist_ok=True)
    for bundle in sorted(layout.updates.glob(f"*{BUNDLE_SUFFIX}"), key=lambda p: p.stat().st_mtime):
        res = update(bundle, layout, service, status_path, policy=policy, builder=builder, create_user=create_user)
        write_result(results / f"{bundle.stem}.json", res)
        bundle.unlink(missing_ok=True)
        out.append(res)
    return out


def write_result(path: Path, res: UpdateResult) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(res), indent=2) + "\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def hand_over(bundle: Path, layout: Layout) -> Path:
    """Queue a bundle for the applier: copied as ``.part``, then renamed (the path unit sees only whole files)."""
    target = layout.updates / bundle.name
    if target.suffix != BUNDLE_SUFFIX:
        raise InstallError(f"{bundle.name}: a bundle file ends in {BUNDLE_SUFFIX}")
    part = target.with_name(target.name + ".part")
    with open(bundle, "rb") as src, open(part, "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
        dst.flush()
        os.fsync(dst.fileno())
    os.replace(part, target)
    return target
