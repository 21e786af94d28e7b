"""A pushed configuration: the params of a ``config`` envelope, checked exactly as ``canopy validate`` checks a file.

The params (docs/protocol.md#config) are ``config``, the site document as JSON,
``sha256``, the hex sha256 of its canonical JSON, and optionally ``profiles``,
``{name: profile document}`` for device models the board does not have yet.

The document is rendered as the YAML text the board will run, and that text is
loaded by the site loader in a staging folder that mirrors the live config's
folder (its TLS files, password file and profiles linked in, pushed profiles laid
over them), so relative paths resolve as they will once applied and every problem
reads ``site.yaml:LINE: key: message`` of the text written on the board.

A remote config may not cut the gateway off or strand what it holds, so beyond
the loader's checks it must keep the gateway's identity (``site``, ``gateway``:
its topics), name a ``broker`` (without one the embedded demo broker starts on
loopback: cut off, and yet "connected"), keep ``store.path`` and
``store.status_file`` (the unsent records and the health gate's status file) and
carry no literal broker password (it would travel through the broker).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import orjson
import yaml

from core.yamlsrc import ConfigError, Problem, Source, load_yaml
from gateway.config.load import load_config
from gateway.config.meta import config_version
from gateway.config.security import review, security_mode
from gateway.config.site import LoadedConfig

PARAMS = ("config", "sha256", "profiles")
MAX_PROBLEMS = 20  # in one answer; the first ones are what an operator fixes first
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_PROFILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_PLAIN_DIR = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class Refused(Exception):
    """The params are not a config bundle: ``reason`` for the result, the text says why."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class Invalid(Exception):
    """The pushed config does not validate: ``problems`` as ``file:line: key: message`` lines."""

    def __init__(self, problems: list[str]):
        super().__init__(f"{len(problems)} problem(s): " + "; ".join(problems[:3]))
        self.problems = problems


@dataclass(frozen=True)
class Bundle:
    document: dict
    sha256: str
    profiles: dict[str, dict]


@dataclass(frozen=True)
class Checked:
    """A config that validated: its meta version, the exact text to write, and every profile it loads."""

    version: str
    site_text: str
    profiles: dict[str, bytes]  # name -> file content (pushed ones rendered, the others as on the board)
    profiles_dir: Path  # where the profiles live on the board (absolute)


def digest(document: dict) -> str:
    """The bundle's identity: hex sha256 of the document's canonical JSON (keys sorted, compact)."""
    return hashlib.sha256(orjson.dumps(document, option=orjson.OPT_SORT_KEYS)).hexdigest()


def read_params(params: dict) -> Bundle:
    """The envelope's params as a bundle; raises Refused (``invalid_params``) naming what is wrong."""
    extra = sorted(set(params) - set(PARAMS))
    if extra:
        raise Refused("invalid_params", f"unknown parameter(s) {', '.join(extra)}; a config takes {', '.join(PARAMS)}")
    document, sha, profiles = params.get("config"), params.get("sha256"), params.get("profiles", {})
    if not isinstance(document, dict) or not document:
        raise Refused("invalid_params", "params.config must be the site document (a JSON object)")
    if not isinstance(sha, str) or not _HEX64.match(sha):
        raise Refused("invalid_params", "params.sha256 must be 64 lowercase hex digits")
    if sha != digest(document):
        raise Refused("invalid_params", "params.sha256 is not the sha256 of params.config's canonical JSON")
    if not isinstance(profiles, dict):
        raise Refused("invalid_params", "params.profiles must map profile names to profile documents")
    for name, doc in profiles.items():
        if not _PROFILE_NAME.match(name) or not isinstance(doc, dict):
            raise Refused("invalid_params", f"params.profiles.{name[:64]}: a profile name (letters, digits, _ -) "
                                            "mapped to a profile document")
    return Bundle(document, sha, dict(profiles))


def header(*, issuer: str, envelope_id: str, sha256: str, issued_at: float, on_behalf_of: str | None = None) -> str:
    """The comment on top of a pushed site file: who sent it; the same envelope always gives the same text."""
    when = datetime.fromtimestamp(issued_at, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    who = issuer + (f" for {on_behalf_of}" if on_behalf_of else "")
    return (f"# Pushed by {who} at {when} (config envelope {envelope_id}, sha256 {sha256[:16]}).\n"
            "# The applier keeps earlier configs in configs/ beside this file (docs/operations.md#remote-configuration).\n")


def render(document: dict, head: str = "") -> str:
    """The YAML text of a JSON document: block style, the sender's key order, strings quoted where YAML would retype them.

    libyaml's emitter when PyYAML has it (ten times faster); the daemon and the applier run the same PyYAML, so
    both render the same text.
    """
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    return head + yaml.dump(document, Dumper=dumper, sort_keys=False, allow_unicode=True, default_flow_style=False,
                            width=100)


def check(bundle: Bundle, live: LoadedConfig, head: str, workdir: Path | str) -> Checked:
    """Validate ``bundle`` as the next config of the gateway running ``live``; raises Invalid with every problem."""
    live_file = Path(live.file)
    stage = Path(tempfile.mkdtemp(prefix=".config-check-", dir=workdir))
    try:
        site_file = _stage(stage, live_file, render(bundle.document, head), bundle)
        try:
            cfg = load_config(site_file, missing_ports_ok=True)
        except ConfigError as exc:
            raise Invalid(_texts(exc.problems, stage)) from None
        if security_mode(cfg.site) == "strict" or _own_rules(cfg, live, None, bundle):  # the text again, for the lines
            src = load_yaml(site_file)
            problems = list(review(cfg.site, src).refused) + _own_rules(cfg, live, src, bundle)
            if problems:
                raise Invalid(_texts(problems, stage))
        profiles_dir = _profiles_dir(cfg, live_file.parent)
        staged_profiles = Path(cfg.resolve(cfg.site.profiles_dir))
        profiles = {name: (staged_profiles / f"{name}.yaml").read_bytes() for name in sorted(cfg.profiles)}
        return Checked(config_version(cfg), site_file.read_text(encoding="utf-8"), profiles, profiles_dir)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _stage(stage: Path, live_file: Path, text: str, bundle: Bundle) -> Path:
    """The live config's folder, linked entry by entry, with the new site file and the pushed profiles in it."""
    profiles_dir = bundle.document.get("profiles_dir", "profiles")
    own = {live_file.name}
    if bundle.profiles:
        if not isinstance(profiles_dir, str) or not _PLAIN_DIR.match(profiles_dir):
            raise Invalid([f"{live_file.name}: profiles_dir: pushed profiles need profiles_dir to be a folder beside "
                           f"{live_file.name} (such as `profiles`), not {profiles_dir!r}"])
        own.add(profiles_dir)
    for entry in os.scandir(live_file.parent):
        if entry.name not in own:
            os.symlink(entry.path, stage / entry.name)
    if bundle.profiles:
        folder = stage / profiles_dir
        folder.mkdir()
        live_profiles = live_file.parent / profiles_dir
        if live_profiles.is_dir():
            for entry in os.scandir(live_profiles):
                os.symlink(entry.path, folder / entry.name)
        for name, doc in bundle.profiles.items():
            target = folder / f"{name}.yaml"
            if target.is_symlink():
                target.unlink()
            target.write_text(render(doc), encoding="utf-8")
    site_file = stage / live_file.name
    site_file.write_text(text, encoding="utf-8")
    return site_file


def _own_rules(new: LoadedConfig, live: LoadedConfig, src: Source | None, bundle: Bundle) -> list[Problem]:
    """What a remote config may not change: identity, broker, store files; no literal password on the wire.

    Without ``src`` (the first, cheap look) the problems carry no line.
    """
    src = src or Source("site.yaml", bundle.document)
    out = []
    for key in ("site", "gateway"):
        if getattr(new.site, key) != getattr(live.site, key):
            out.append(src.problem((key,), f"a remote config cannot change the gateway's identity "
                                           f"({getattr(live.site, key)!r} -> {getattr(new.site, key)!r}): its topics change with it"))
    if new.site.broker is None:
        out.append(src.problem((), "a remote config must name its `broker:`; without one the gateway would start the "
                                   "embedded demo broker on loopback and be cut off"))
    elif "password" in (bundle.document.get("broker") or {}):
        out.append(src.problem(("broker", "password"), "a pushed config must not carry the broker password (it travels "
                                                       "through the broker): name a `password_file` on the board"))
    placed = new.model_copy(update={"file": live.file, "base_dir": live.base_dir})  # its paths as they will resolve
    outbox = live.resolve(live.site.store.path)
    if os.path.realpath(placed.resolve(new.site.store.path)) != os.path.realpath(outbox):
        out.append(src.problem(("store", "path"), f"a remote config cannot move the outbox from {outbox}: the records "
                                                  "waiting in it would be stranded"))
    if os.path.realpath(placed.status_path) != os.path.realpath(live.status_path):
        out.append(src.problem(("store", "status_file"), f"a remote config cannot move the status file from "
                                                         f"{live.status_path}: the health gate reads it"))
    return out


def _profiles_dir(cfg: LoadedConfig, live_dir: Path) -> Path:
    """Where the new config's profiles are on the board: its profiles_dir, resolved against the live folder."""
    folder = cfg.site.profiles_dir
    return Path(folder) if os.path.isabs(folder) else live_dir / folder


def _texts(problems: list[Problem], stage: Path) -> list[str]:
    """Problems as lines naming files relative to the config's folder (``site.yaml:12: …``, ``profiles/x.yaml:3: …``)."""
    prefix = str(stage) + os.sep
    out = []
    for p in problems[:MAX_PROBLEMS]:
        file = p.file[len(prefix):] if p.file.startswith(prefix) else p.file
        out.append(str(Problem(file, p.line, p.key, p.message)))
    if len(problems) > MAX_PROBLEMS:
        out.append(f"… and {len(problems) - MAX_PROBLEMS} more")
    return out
