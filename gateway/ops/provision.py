"""``canopy provision``: a board's identity and its way to the broker, written once, right, and private.

An installer on a phone hotspot answers a few questions (or passes flags) and
gets ``/etc/canopy/site.yaml`` with the gateway identity, the broker URL and its
TLS files, a 0600 password file, the gateway's mTLS key and a CSR for the site's
CA (signed on the spot by a local CA in a lab).  Default, short or empty
passwords are refused: a board in a shed keeps whatever it was given for years.
The skeleton has no buses yet; it is validated like any site before it is kept.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from gateway.ops.pki import client_key_and_csr, sign_csr, write_private

MIN_PASSWORD = 10
DEFAULT_PASSWORDS = frozenset({
    "password", "passw0rd", "admin", "administrator", "root", "canopy", "changeme", "change-me", "default", "mqtt",
    "mosquitto", "public", "private", "guest", "test", "secret", "letmein", "raspberry", "qwerty", "123456",
    "12345678", "123456789", "1234567890", "0123456789", "password123", "admin12345"})
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_SCHEMES = {"mqtts": (True, 8883), "ssl": (True, 8883), "tls": (True, 8883), "mqtt": (False, 1883), "tcp": (False, 1883)}


class ProvisionError(Exception):
    """A provisioning request that is refused, and why."""


@dataclass
class ProvisionRequest:
    site: str
    gateway: str
    broker_url: str
    etc: Path = Path("/etc/canopy")
    state: Path = Path("/var/lib/canopy")
    username: str | None = None
    password: str | None = None
    ca: Path | None = None  # the CA that signed the broker's certificate (copied to etc/ca.pem)
    client_cert: bool = True  # make an mTLS key and CSR (TLS brokers only)
    sign_with: tuple[Path, Path] | None = None  # (CA cert, CA key) of a lab CA
    owner: str | None = None  # chown the secrets to this user (the daemon's), when provisioning as root
    force: bool = False


@dataclass
class Provisioned:
    site_file: Path
    written: list[Path] = field(default_factory=list)
    next_steps: list[str] = field(default_factory=list)


def parse_broker_url(url: str) -> tuple[bool, str, int]:
    """``mqtts://host[:port]`` → (tls, host, port); plain ``mqtt://`` allowed (the security review warns)."""
    parts = urlsplit(url.strip() if "://" in url else f"mqtts://{url.strip()}")
    if parts.scheme not in _SCHEMES:
        raise ProvisionError(f"broker URL {url!r}: scheme must be one of {', '.join(_SCHEMES)} (e.g. mqtts://mqtt.example.org)")
    tls, default_port = _SCHEMES[parts.scheme]
    try:
        port = parts.port or default_port
    except ValueError:
        raise ProvisionError(f"broker URL {url!r}: the port is not a number from 1 to 65535") from None
    if not parts.hostname:
        raise ProvisionError(f"broker URL {url!r} has no host name")
    return tls, parts.hostname, port


def password_problem(password: str | None, *, username: str | None = None, site: str = "", gateway: str = "") -> str:
    """Why a broker password is refused, or "" when it may be used."""
    if password is None or not password.strip():
        return "the broker password is empty"
    lowered = password.strip().lower()
    if lowered in DEFAULT_PASSWORDS or lowered in {(username or "").lower(), site.lower(), gateway.lower()}:
        return "the broker password is a default or guessable one (a name, 'admin', 'changeme', …)"
    if len(password) < MIN_PASSWORD:
        return f"the broker password is shorter than {MIN_PASSWORD} characters"
    return ""


def check_request(req: ProvisionRequest) -> tuple[bool, str, int]:
    """Refuse a request before anything is written; returns the parsed broker URL."""
    for what, value in (("site", req.site), ("gateway", req.gateway)):
        if not _ID.match(value or ""):
            raise ProvisionError(f"{what} id {value!r}: letters, digits, '_', '.', '-', up to 64, starting with a letter or digit")
    tls, host, port = parse_broker_url(req.broker_url)
    if req.username:
        why = password_problem(req.password, username=req.username, site=req.site, gateway=req.gateway)
        if why:
            raise ProvisionError(f"{why}; use the one the broker's administrator set for {req.username!r}")
    elif req.password:
        raise ProvisionError("a password needs a username (--username)")
    if req.ca is not None and not req.ca.is_file():
        raise ProvisionError(f"CA file not found: {req.ca}")
    if req.sign_with and not all(p.is_file() for p in req.sign_with):
        raise ProvisionError(f"lab CA files not found: {req.sign_with[0]}, {req.sign_with[1]}")
    site_file = req.etc / "site.yaml"
    if site_file.exists() and not req.force:
        raise ProvisionError(f"{site_file} exists; pass --force to replace it (its old copy is kept as site.yaml.bak)")
    return tls, host, port


def provision(req: ProvisionRequest) -> Provisioned:
    tls, host, port = check_request(req)
    req.etc.mkdir(parents=True, exist_ok=True)
    (req.etc / "profiles").mkdir(exist_ok=True)
    site_file = req.etc / "site.yaml"
    out = Provisioned(site_file)
    secrets: list[Path] = []
    tls_lines: list[str] = []
    if tls:
        tls_lines = _tls_files(req, out, secrets)
    if req.username:
        write_private(req.etc / "mqtt.password", (req.password or "").encode() + b"\n")
        secrets.append(req.etc / "mqtt.password")
        out.written.append(req.etc / "mqtt.password")
    if site_file.exists():
        shutil.copy2(site_file, site_file.with_name("site.yaml.bak"))
    site_file.write_text(site_yaml(req, host, port, tls_lines))
    out.written.insert(0, site_file)
    if req.owner:
        for path in secrets:
            shutil.chown(path, req.owner, req.owner)
    _validate(site_file)
    out.next_steps.append(f"add the buses and devices to {site_file} (docs/configuration.md), then: canopy doctor -c {site_file}")
    return out


def _validate(site_file: Path) -> None:
    """The skeleton must load like any site (it is written first: its files are named relative to it)."""
    from core.yamlsrc import ConfigError
    from gateway.config.load import load_config

    try:
        load_config(site_file, missing_ports_ok=True)
    except ConfigError as exc:
        raise ProvisionError(f"the written {site_file} does not validate: " + "; ".join(map(str, exc.problems))) from None


def _tls_files(req: ProvisionRequest, out: Provisioned, secrets: list[Path]) -> list[str]:
    lines = []
    if req.ca is not None:
        shutil.copyfile(req.ca, req.etc / "ca.pem")
        out.written.append(req.etc / "ca.pem")
        lines.append("    ca: ca.pem")
    if not req.client_cert:
        return lines
    key, csr_file, cert = req.etc / "client.key", req.etc / "client.csr", req.etc / "client.pem"
    csr = client_key_and_csr(key, csr_file, gateway=req.gateway, site=req.site)
    secrets.append(key)
    out.written += [key, csr_file]
    if req.sign_with:
        sign_csr(csr, req.sign_with[0], req.sign_with[1], cert)
        out.written.append(cert)
        lines += ["    cert: client.pem", "    key: client.key"]
    else:
        lines += ["    # cert: client.pem   # once the site's CA has signed client.csr", "    # key: client.key"]
        out.next_steps.append(f"send {csr_file} to the site's CA; save the certificate as {cert} and uncomment "
                              "`cert:` and `key:` under broker.tls")
    return lines


def site_yaml(req: ProvisionRequest, host: str, port: int, tls_lines: list[str]) -> str:
    """The skeleton, as YAML text with comments (values JSON-quoted: JSON strings are YAML strings)."""
    q = json.dumps
    lines = [f"# Written by `canopy provision` on {time.strftime('%Y-%m-%d %H:%M %Z')}: add buses and devices",
             "# (docs/configuration.md), then check the board with `canopy doctor -c <this file>`.",
             f"site: {q(req.site)}", f"gateway: {q(req.gateway)}", "profiles_dir: profiles", "broker:",
             f"  host: {q(host)}", f"  port: {port}"]
    if tls_lines:
        lines += ["  tls:", *tls_lines]
    if req.username:
        lines += [f"  username: {q(req.username)}", "  password_file: mqtt.password   # 0600, read by the daemon only"]
    lines += ["store:", f"  path: {q(str(req.state / 'outbox.sqlite'))}", "buses: []", ""]
    return "\n".join(lines)


Ask = Callable[[str, str | None], str]


def ask_missing(req: dict, ask: Ask, ask_secret: Callable[[str], str]) -> dict:
    """Fill what flags did not give by asking (``canopy provision`` on a terminal); empty keeps the default."""
    prompts = (("site", "site id", None), ("gateway", "gateway id", None),
               ("broker_url", "broker URL", None), ("username", "broker user name", "gateway"))
    for key, text, default_key in prompts:
        if not req.get(key):
            default = req.get(default_key) if default_key else None
            req[key] = ask(text, default) or default
    if req.get("username") and not req.get("password"):
        first = ask_secret(f"broker password for {req['username']}: ")
        if first != ask_secret("again: "):
            raise ProvisionError("the two passwords differ")
        req["password"] = first
    return req


def default_owner(user: str = "canopy") -> str | None:
    """The daemon's user when provisioning as root and it exists (the secrets must be readable by it)."""
    if os.geteuid() != 0:
        return None
    import pwd

    try:
        pwd.getpwnam(user)
    except KeyError:
        return None
    return user
