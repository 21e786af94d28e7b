"""Checks that need more than one key: ids unique across the site, each bus type's own checks, broker files.

Pydantic checks each key in isolation; these look across buses and at the
file system, and each names the file, line and key it is about.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from core.yamlsrc import Problem, Source
from gateway.config.broker import BrokerConfig
from gateway.config.site import SiteConfig
from gateway.poll.registry import SiteChecks, bus_type


def check_buses(site: SiteConfig, checks: SiteChecks) -> list[Problem]:
    """Bus ids and device ids unique across the site, then what each bus type checks itself (ports, profiles)."""
    src = checks.src
    problems: list[Problem] = []
    seen_buses: dict[str, tuple] = {}
    seen_devices: dict[str, tuple] = {}
    for b, bus in enumerate(site.buses):
        bpath = ("buses", b, "id")
        if bus.id in seen_buses:
            problems.append(src.problem(bpath, f"duplicate bus id '{bus.id}' (first at line {src.line_of(seen_buses[bus.id])})"))
        seen_buses.setdefault(bus.id, bpath)
        for d, dev in enumerate(bus.devices):
            dpath = ("buses", b, "devices", d, "id")
            if dev.id in seen_devices:
                problems.append(src.problem(dpath, f"duplicate device id '{dev.id}' (first at line {src.line_of(seen_devices[dev.id])})"))
            seen_devices.setdefault(dev.id, dpath)
        problems.extend(bus_type(bus.type).check(bus, b, checks))
    return problems


def read_secret(path: str, what: str) -> str:
    """Read a secret file, refusing one that others can read."""
    st = os.stat(path)
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise PermissionError(f"{what} {path} is readable by others (mode {stat.S_IMODE(st.st_mode):04o}); chmod 600 it")
    return Path(path).read_text(encoding="utf-8").strip()


def check_broker_files(broker: BrokerConfig, src: Source, base_dir: str) -> list[Problem]:
    """The password file and TLS files exist, are readable, and secrets are 0600."""

    def resolve(p: str) -> str:
        return p if os.path.isabs(p) else os.path.join(base_dir, p)

    problems = []
    if broker.password_file:
        problems.extend(_check_password_file(resolve(broker.password_file), src))
    if broker.tls:
        for key in ("ca", "cert", "key"):
            value = getattr(broker.tls, key)
            if value and not os.path.isfile(resolve(value)):
                problems.append(src.problem(("broker", "tls", key), f"file not found: {resolve(value)}"))
        if broker.tls.key and os.path.isfile(resolve(broker.tls.key)):
            mode = stat.S_IMODE(os.stat(resolve(broker.tls.key)).st_mode)
            if mode & 0o077:
                problems.append(src.problem(("broker", "tls", "key"), f"private key is readable by others (mode {mode:04o}); chmod 600 it"))
    return problems


def _check_password_file(path: str, src: Source) -> list[Problem]:
    key = ("broker", "password_file")
    try:
        read_secret(path, "password_file")
    except FileNotFoundError:
        return [src.problem(key, f"file not found: {path}")]
    except PermissionError as exc:
        return [src.problem(key, str(exc))]
    except IsADirectoryError:
        return [src.problem(key, f"is a folder, not a file: {path}")]
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        return [src.problem(key, f"cannot read {path}: {reason}")]
    return []
