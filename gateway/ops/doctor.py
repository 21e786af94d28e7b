"""``canopy doctor``: everything a board needs to run for a year, checked on site, each failure with its fix.

Each check is a small function returning ``Check``s; none raises (a check that
cannot tell says so as a warning).  The host's folders (``/dev``, ``/sys``,
``/run``, ``/etc``) come from ``Host`` so tests run on a fake board.  Exit code
0 when nothing failed (warnings allowed), 1 otherwise.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field

from gateway.ops import doctor_host, doctor_net
from gateway.ops.checklist import FAIL, OK, WARN, Check, Host

MIN_FREE_BYTES = 100 * 1024 * 1024


@dataclass
class Doctor:
    config: str
    host: Host = field(default_factory=Host)
    broker_timeout: float = 5.0
    expiry_warn_days: int = 30

    def run(self) -> list[Check]:
        checks: list[Check] = []
        cfg, problems = load(self.config)
        if cfg is None:
            checks.append(Check("config", FAIL, f"{self.config} does not validate: {problems[0]}"
                                + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""),
                                f"run `canopy validate {self.config}` and fix each line it names"))
        else:
            checks.append(Check("config", OK, f"{self.config}: site {cfg.site.site}, gateway {cfg.site.gateway}"))
            checks += paths_writable(cfg)
            checks += disk_and_outbox(cfg)
            checks += doctor_host.serial_ports(cfg, self.host)
            checks += doctor_net.broker_reachable(cfg, self.broker_timeout)
            checks += doctor_net.certificates(cfg, self.expiry_warn_days)
            checks += doctor_net.models(cfg)
        checks.append(doctor_host.clock(self.host))
        checks.append(doctor_host.time_zone(self.host))
        return checks


def load(config: str):
    """(the validated site, []) or (None, its problems as lines); never raises."""
    from core.yamlsrc import ConfigError
    from gateway.config.load import load_config

    try:
        return load_config(config, missing_ports_ok=True), []
    except ConfigError as exc:
        return None, [str(p) for p in exc.problems]
    except OSError as exc:
        return None, [f"{config}: {exc.strerror or exc}"]


def _daemon_paths(cfg) -> Iterator[str]:
    from gateway.config.security import daemon_paths

    yield from dict.fromkeys(daemon_paths(cfg))


def paths_writable(cfg) -> list[Check]:
    """Each file the daemon keeps state in is writable, or its folder is (it is made on first start)."""
    bad = []
    for path in _daemon_paths(cfg):
        target = path if os.path.exists(path) else os.path.dirname(path) or "."
        mode = os.W_OK | (os.X_OK if os.path.isdir(target) else 0)
        if not os.path.exists(target):
            bad.append(f"{target} does not exist")
        elif not os.access(target, mode):
            bad.append(f"{target} is not writable")
    user = _user()
    if bad:
        return [Check("state paths", FAIL, f"{'; '.join(dict.fromkeys(bad))} (checked as {user})",
                      "create the folder and give it to the daemon's user: install -d -m 0700 -o canopy -g canopy "
                      + os.path.dirname(cfg.resolve(cfg.site.store.path)))]
    note = " (as root: `sudo -u canopy canopy doctor …` checks as the daemon)" if os.geteuid() == 0 else ""
    return [Check("state paths", OK, f"outbox, status and state files writable by {user}{note}")]


def disk_and_outbox(cfg) -> list[Check]:
    folder = os.path.dirname(cfg.resolve(cfg.site.store.path)) or "."
    outbox = cfg.resolve(cfg.site.store.path)
    size = sum(os.path.getsize(outbox + s) for s in ("", "-wal", "-shm") if os.path.exists(outbox + s))
    try:
        free = shutil.disk_usage(folder if os.path.isdir(folder) else os.path.dirname(folder) or "/").free
    except OSError as exc:
        return [Check("disk", FAIL, f"cannot read free space of {folder}: {exc.strerror}", "check the storage is mounted")]
    cap = cfg.site.store.max_bytes
    detail = f"{free / 2**20:.0f} MiB free in {folder}; outbox {size / 2**20:.1f} MiB of its {cap / 2**20:.0f} MiB cap"
    if free < MIN_FREE_BYTES:
        return [Check("disk", FAIL, detail, "free space on the card (old logs: journalctl --vacuum-size=50M) or use a larger card")]
    if free + size < cap:
        return [Check("disk", WARN, detail, f"the outbox can grow to store.max_bytes ({cap} bytes) but the disk cannot hold it: "
                      "lower store.max_bytes or free space")]
    return [Check("disk", OK, detail)]


def _user() -> str:
    import pwd

    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"
