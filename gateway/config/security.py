"""Secure by default: what a site's broker settings expose, and who else can read the daemon's files.

Each weakness is a ``Problem`` with the file, line, key and the fix: ``canopy validate``
and ``canopy run`` print them as warnings, and a site with ``security: strict`` refuses
them (exit 2).  The daemon makes its own files private (``canopy run`` sets the umask to
0o077); files and folders that existed before it started are only reported, never
chmod-ed behind the installer's back.  docs/security.md explains why each one matters.
"""

from __future__ import annotations

import ipaddress
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from core.yamlsrc import Problem, Source
from gateway.alerts.state import file_in as alert_state_file
from gateway.config.site import LoadedConfig, SiteConfig

MODES = ("warn", "strict")
DAEMON_UMASK = 0o077  # files 0600, folders 0700
_SQLITE_SIDECARS = ("", "-wal", "-shm", "-journal")


@dataclass(frozen=True)
class SecurityReview:
    """What a site's config exposes: refusals stop ``validate``/``run`` (strict), warnings are printed."""

    mode: str
    findings: list[Problem]

    @property
    def refused(self) -> list[Problem]:
        return self.findings if self.mode == "strict" else []

    @property
    def warnings(self) -> list[Problem]:
        return [] if self.mode == "strict" else self.findings


def security_mode(site: SiteConfig) -> str:
    """``security:`` of the site (``warn`` until the site says ``strict``)."""
    mode = getattr(site, "security", None) or "warn"
    if mode not in MODES:
        raise ValueError(f"security must be one of {MODES}, not {mode!r}")
    return mode


def review(site: SiteConfig, src: Source) -> SecurityReview:
    """The site's broker weaknesses, as refusals or warnings according to its ``security:`` mode."""
    return SecurityReview(security_mode(site), broker_findings(site, src))


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (no DNS: a name could resolve anywhere later)."""
    name = host.strip().rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False


def broker_findings(site: SiteConfig, src: Source) -> list[Problem]:
    """Plain TCP off the board, a password in the YAML, no credentials off the board.

    No ``broker:`` means the embedded demo broker on loopback: nothing to say.
    """
    broker = site.broker
    if broker is None:
        return []
    remote = not is_loopback(broker.host)
    out: list[Problem] = []
    if remote and broker.tls is None:
        out.append(src.problem(("broker", "host"),
                               f"plain TCP to {broker.host}, which is not on this board: anyone on the path reads every "
                               "reading and alarm and can take the gateway's place; add `tls: {ca: ca.pem}` and port 8883 "
                               "(docs/security.md#broker-set-up)"))
    if broker.password is not None and ("broker", "password") not in src.from_env:
        out.append(src.problem(("broker", "password"),
                               "password written in the config: anyone who can read this file (or a backup of it) logs in "
                               "as this gateway; put it in a file only the daemon can read (chmod 600) and name that "
                               "file in `password_file`"))
    has_client_cert = broker.tls is not None and broker.tls.cert is not None
    if remote and not broker.username and not has_client_cert:
        out.append(src.problem(("broker",),
                               f"no credentials for {broker.host}: a broker that lets this gateway in lets anyone in; give "
                               "`username` and `password_file`, or a client certificate (`tls: {cert, key}`) "
                               "(docs/security.md#broker-set-up)"))
    return out


def daemon_paths(cfg: LoadedConfig) -> Iterator[str]:
    """The folders and files the daemon keeps its state in (outbox, status, alert and command state)."""
    outbox = cfg.resolve(cfg.site.store.path)
    state_dir = os.path.dirname(outbox) or "."
    yield state_dir
    yield from (outbox + s for s in _SQLITE_SIDECARS)
    status = cfg.status_path
    if os.path.dirname(status) != state_dir:
        yield os.path.dirname(status) or "."
    yield status
    yield alert_state_file(state_dir, cfg.site.site, cfg.site.gateway)
    yield from (os.path.join(state_dir, "commands.sqlite") + s for s in _SQLITE_SIDECARS)


def exposed_files(paths: Iterable[str]) -> list[str]:
    """One sentence per existing file or folder that group or others can read, write or enter, with the fix."""
    out = []
    for path in dict.fromkeys(paths):
        try:
            st = os.stat(path)
        except OSError:
            continue  # not there yet: the daemon creates it private
        mode = stat.S_IMODE(st.st_mode)
        if not mode & 0o077:
            continue
        if stat.S_ISDIR(st.st_mode):
            out.append(f"state folder {path} is open to other users (mode {mode:04o}): they can list and replace "
                       f"the gateway's files; chmod 700 {path}, or point store.path at a private folder")
        else:
            out.append(f"state file {path} is readable by other users (mode {mode:04o}); chmod 600 {path}")
    return out
