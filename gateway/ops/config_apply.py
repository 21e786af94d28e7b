"""The applier's half of remote configuration: a handed-over config, checked again, applied, health-gated, kept or undone.

Run as root by ``canopy-applier.service`` (``canopy-ops apply`` takes the
bundles, then the configs: ``update.apply_pending``) when the daemon has left a
verified ``config`` envelope in ``/var/lib/canopy/updates/``.  The daemon is
unprivileged and may be compromised, so nothing it wrote is taken on trust: the
envelope is checked again against the issuers of the config running *now*
(signature, ``configure`` permission, gateway, times with a grace for the
hand-over, an id never applied before), the config validated again, and only
then put in place on trial (config_store.py), the gateway restarted and the
health gate run -- READY, broker connected, devices polling within T, as for a
new version.  A config that cuts the gateway off (a wrong broker) never gets
the broker connected, so it is rolled back.  Every outcome becomes a result
the daemon publishes as ``config.result``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from core.protocol import limits
from core.protocol.envelope import peek
from core.yamlsrc import ConfigError
from gateway.config.load import load_config
from gateway.config.meta import config_version
from gateway.ops.config_store import ConfigStore
from gateway.ops.health_gate import HealthGate, devices_ok, read_status
from gateway.ops.layout import Layout
from gateway.ops.service import Service
from gateway.remote_config.bundle import Invalid, check, header
from gateway.remote_config.handover import SUFFIX
from gateway.remote_config.trust import Trust

log = logging.getLogger("canopy.ops")

HANDOVER_GRACE = 600.0  # an envelope that expired this recently was fresh when the daemon took it


@dataclass(frozen=True)
class ConfigApplyResult:
    name: str
    outcome: str  # committed | rolled_back | refused (the words of update.UpdateResult, for the applier's report)
    version: str | None  # the pushed config's meta version
    previous: str | None  # the version that ran before
    reason: str

    def line(self) -> str:
        what = {"committed": f"config {self.previous} -> {self.version}", "refused": f"config {self.name} refused",
                "rolled_back": f"config {self.version} rolled back to {self.previous}"}[self.outcome]
        return what + (f": {self.reason}" if self.reason else "")


@dataclass(frozen=True)
class _Pending:
    """A handed-over envelope that passed every check: what goes on trial."""

    trial: dict
    until: float
    checked: object
    live: object
    running: str


def apply_config(path: Path, layout: Layout, service: Service, status_path: Path, *, policy, now: float | None = None) -> ConfigApplyResult:
    """One handed-over config from its checks to committed, rolled back or refused; never raises for a bad one."""
    store = ConfigStore(layout)
    name = path.name.removesuffix(SUFFIX)
    got = _checked(path, name, layout, store, time.time() if now is None else now)
    if isinstance(got, ConfigApplyResult):
        return got
    status = read_status(status_path)
    boot = status.get("boot") if status else None
    store.begin_trial(got.live, got.running, got.checked, got.trial, got.until)
    since = time.time()
    service.restart()
    gate = HealthGate(service.ready, status_path, timeout=policy.timeout, settle=policy.settle,
                      need_devices_ok=devices_ok(status), after_boot=boot if isinstance(boot, int) else None).wait(since)
    return _conclude(store, got.trial, gate, service)


def _checked(path: Path, name: str, layout: Layout, store: ConfigStore, now: float) -> _Pending | ConfigApplyResult:
    """Every check again, as root, against the config running now."""
    try:
        live = load_config(layout.site_config, missing_ports_ok=True)
    except (ConfigError, OSError) as exc:
        return _refuse(store, name, {}, None, "invalid_running_config", f"the running config does not load: {exc}")
    running = config_version(live)
    try:
        with open(path, "rb") as f:
            payload = f.read(limits.CONFIG.max_bytes + 1)
    except OSError as exc:
        return _refuse(store, name, {}, running, "unreadable", f"cannot read {path}: {exc}")
    verdict = Trust.of(live).check(payload, now, grace=HANDOVER_GRACE)
    if verdict.reason is not None:
        return _refuse(store, name, verdict.info, running, verdict.reason, verdict.detail, verdict.problem)
    env, bundle = verdict.env, verdict.bundle
    if store.applied_before(f"{env.issuer}/{env.id}", now):
        return _refuse(store, name, verdict.info, running, "replayed", f"config {env.id} was applied before")
    head = header(issuer=env.issuer, envelope_id=env.id, sha256=bundle.sha256, issued_at=env.issued_at,
                  on_behalf_of=env.on_behalf_of)
    store.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        checked = check(bundle, live, head, store.dir)
    except Invalid as exc:
        return _refuse(store, name, verdict.info, running, "invalid_config", "\n".join(exc.problems))
    if checked.version == running:
        _report(store, name, {**verdict.info, "status": "applied", "config": running, "previous": running,
                              "detail": "this config is already running"})
        return ConfigApplyResult(name, "committed", running, running, "unchanged")
    trial = {**verdict.info, "name": name, "version": checked.version, "previous": running}
    return _Pending(trial, env.expires_at + HANDOVER_GRACE, checked, live, running)


def _conclude(store: ConfigStore, trial: dict, gate, service: Service) -> ConfigApplyResult:
    def result(outcome: str, reason: str = "") -> ConfigApplyResult:
        return ConfigApplyResult(trial["name"], outcome, trial["version"], trial["previous"], reason)

    now = store.load()
    if now.trial is None or now.trial.get("id") != trial["id"]:  # the boot check or OnFailure= took it back meanwhile
        reasons = [h.get("reason", "") for h in now.history if h.get("event") == "rollback" and h.get("id") == trial["id"]]
        return result("rolled_back", reasons[-1] if reasons else "rolled back while the health gate waited")
    if gate.ok:
        store.commit()
        log.info("config %s committed after %.1f s", trial["version"], gate.waited)
        return result("committed")
    store.rollback(gate.reason)
    service.restart()
    return result("rolled_back", gate.reason)


def _refuse(store: ConfigStore, name: str, info: dict, running: str | None, reason: str, detail: str,
            problem: str | None = None) -> ConfigApplyResult:
    log.error("config %s refused: %s (%s)", name, reason, detail.splitlines()[0] if detail else "")
    _report(store, name, {"id": info.get("id"), "issuer": info.get("issuer"), "on_behalf_of": info.get("on_behalf_of"),
                          "status": "rejected", "reason": reason, "problem": problem, "detail": detail, "config": running})
    return ConfigApplyResult(name, "refused", None, running, f"{reason}: {detail}")


def _report(store: ConfigStore, name: str, fields: dict) -> None:
    try:
        store.handover.write_result(name, {**fields, "ts": round(time.time(), 3)})
    except OSError as exc:  # what was decided stands; only the report to the issuer is lost
        log.error("cannot write the result of %s for the daemon: %s", name, exc)


def resume_trial(layout: Layout, service: Service, status_path: Path, *, policy) -> ConfigApplyResult | None:
    """A trial left by an applier that died (power cut): gate the config running now, then commit or roll back."""
    store = ConfigStore(layout)
    trial = store.load().trial if store.state_file.exists() else None
    if trial is None:
        return None
    log.warning("config %s was left on trial: running its health gate now", trial.get("version"))
    gate = HealthGate(service.ready, status_path, timeout=policy.timeout, settle=policy.settle, need_devices_ok=0).wait(time.time())
    return _conclude(store, trial, gate, service)


def apply_pending_configs(layout: Layout, service: Service, status_path: Path, *, policy, max_configs: int = 16) -> list[ConfigApplyResult]:
    """The applier's run for configs: an orphaned trial first, then every handed-over config, oldest first.

    Each file is removed once judged; one that arrives meanwhile is taken in the same run.
    """
    resumed = resume_trial(layout, service, status_path, policy=policy)
    out = [resumed] if resumed is not None else []
    store = ConfigStore(layout)
    for _ in range(max_configs):
        pending = store.handover.pending()
        if not pending:
            break
        if resumed is None or pending[0].name != f"{resumed.name}{SUFFIX}":  # the resumed one is judged already
            try:
                out.append(apply_config(pending[0], layout, service, status_path, policy=policy))
            except Exception as exc:  # never leave the file for the path unit to start us on again, and again
                log.exception("applying %s failed", pending[0].name)
                out.append(_failed(store, pending[0], service, exc))
        pending[0].unlink(missing_ok=True)
    return out


def _failed(store: ConfigStore, path: Path, service: Service, exc: Exception) -> ConfigApplyResult:
    """An unexpected error (a full disk, systemctl failing): a trial it left goes back; the issuer is told either way."""
    name = path.name.removesuffix(SUFFIX)
    why = f"the applier failed: {type(exc).__name__}: {exc}"
    trial = store.load().trial
    if trial is not None and trial.get("name") == name:
        store.rollback(why)
        try:
            service.restart()
        except Exception as again:
            log.error("cannot restart the gateway after rolling back: %s", again)
        return ConfigApplyResult(name, "rolled_back", trial["version"], trial["previous"], why)
    try:
        info = peek(path.read_bytes())
    except OSError:
        info = {}
    return _refuse(store, name, info, None, "apply_error", why)
