"""Load a site file and the profiles it names; every problem names file:line:key.

An installer fixing a config on a phone over SSH needs ``site.yaml:23`` and the
key in plain words, never a traceback: pydantic's errors are mapped back onto
the YAML (``problems_from``), and the cross-checks run only on a site whose
keys are each valid.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import ValidationError

from core.yamlsrc import ConfigError, Problem, Source, load_yaml
from drivers.modbus.profile import Profile
from gateway.alerts.config import RULE_TYPES, validate_rules
from gateway.commands.config import validate_commands
from gateway.config.checks import check_broker_files, check_buses
from gateway.config.site import LoadedConfig, site_model
from gateway.controls import validate_controls
from gateway.poll.registry import SiteChecks, bus_types
from inference.config import validate_cameras


def load_config(file: str | Path, *, missing_ports_ok: bool = False) -> LoadedConfig:
    """Load and validate a site file and the profiles it names."""
    src = load_yaml(file)
    if not isinstance(src.data, dict):
        raise ConfigError([Problem(src.file, 1, "", "a site config must be a mapping of keys")])
    try:
        site = site_model().model_validate(src.data)
    except ValidationError as exc:
        raise ConfigError(problems_from(exc, src)) from None

    base_dir = os.path.dirname(os.path.abspath(src.file))
    profiles_dir = Path(site.profiles_dir if os.path.isabs(site.profiles_dir) else os.path.join(base_dir, site.profiles_dir))
    profiles = ProfileShelf(profiles_dir, src)
    problems = check_buses(site, SiteChecks(src, base_dir, profiles.get, missing_ports_ok=missing_ports_ok))
    if site.broker is not None:
        problems.extend(check_broker_files(site.broker, src, base_dir))
    if site.rules is not None and not problems:
        problems.extend(validate_rules(site, profiles.loaded, src))
    if site.commands is not None and not problems:
        problems.extend(validate_commands(site, profiles.loaded, src))
    if site.cameras and not problems:
        problems.extend(validate_cameras(site, src, base_dir))
    if site.controls and not problems:
        problems.extend(validate_controls(site, profiles.loaded, src))
    if problems:
        raise ConfigError(problems)
    return LoadedConfig(site=site, profiles=profiles.loaded, file=src.file, base_dir=base_dir)


class ProfileShelf:
    """The profiles a site names, each loaded once; a broken one is reported once, not once per device."""

    def __init__(self, folder: Path, src: Source):
        self.folder = folder
        self.src = src
        self.loaded: dict[str, Profile] = {}
        self._failed: set[str] = set()

    def get(self, name: str, key: tuple) -> Profile | list[Problem]:
        """The profile ``name``, or the problems to report at ``key`` (none if they were reported already)."""
        if name in self.loaded:
            return self.loaded[name]
        if name in self._failed:
            return []
        pfile = self.folder / f"{name}.yaml"
        if not pfile.is_file():
            return [self.src.problem(key, f"profile '{name}' not found (looked for {pfile})")]
        try:
            self.loaded[name] = load_profile(pfile)
        except ConfigError as exc:
            self._failed.add(name)
            return exc.problems
        return self.loaded[name]


def load_profile(path: Path) -> Profile:
    src = load_yaml(path)
    if not isinstance(src.data, dict):
        raise ConfigError([Problem(src.file, 1, "", "a profile must be a mapping")])
    try:
        return Profile.model_validate(src.data)
    except ValidationError as exc:
        raise ConfigError(problems_from(exc, src)) from None


def problems_from(exc: ValidationError, src: Source, prefix: tuple = ()) -> list[Problem]:
    """Pydantic's errors as Problems at the YAML lines they are about, in an installer's words."""
    return [_problem(err, src, prefix) for err in exc.errors(include_url=False)]


def _problem(err: dict, src: Source, prefix: tuple) -> Problem:
    path = _data_path(src.data, prefix + tuple(err["loc"]))
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown key (check spelling; see docs/configuration.md)"
    elif err["type"] == "missing":
        msg = "required key is missing"
    elif err["type"] in ("union_tag_invalid", "union_tag_not_found"):
        path, msg = _tag_problem(err, path)
    elif any(isinstance(k, str) and ("password" in k or k == "key") for k in err["loc"]):
        # never echo a secret into a terminal or a log
        if err["type"] == "string_type":
            msg = f"{msg} (put it in quotes to make it text)"
    elif err["type"] == "string_type" and isinstance(err.get("input"), (int, float, bool)):
        msg = f"{msg} (got {err['input']!r}; put it in quotes to make it text)"
    elif err["type"] != "value_error" and "input" in err and not isinstance(err["input"], (dict, list)):
        msg = f"{msg} (got {err['input']!r})"
    return src.problem(path, msg.removeprefix("Value error, "))


def _tag_problem(err: dict, path: tuple) -> tuple[tuple, str]:
    """A tagged union (buses, rules): point at the tag itself, in plain words."""
    ctx = err.get("ctx") or {}
    tag_key = str(ctx.get("discriminator", "type")).strip("'\"")
    if ctx.get("expected_tags"):
        expected = ctx["expected_tags"]
    elif tuple(err["loc"][:2]) == ("rules", "rules"):
        expected = ", ".join(repr(t) for t in RULE_TYPES)
    else:
        expected = ", ".join(repr(t.name) for t in bus_types())
    if err["type"] == "union_tag_invalid":
        return path + (tag_key,), f"unknown {tag_key} {ctx.get('tag')!r}; expected one of: {expected}"
    return path + (tag_key,), f"required key is missing; one of: {expected}"


def _data_path(data, loc: tuple) -> tuple:
    """Map a pydantic error location onto the YAML data.

    Pydantic inserts the discriminator tag of a tagged union into locations
    (``("buses", 0, "modbus_tcp", "port")``); the data has no such key, so the
    tag is dropped (once per mapping: a key of the same name is still a key).
    A key missing from the data is kept, so the parent's line is shown.
    """
    out: list = []
    node = data
    tag_skipped = False
    for part in loc:
        if (isinstance(node, dict) and isinstance(part, str) and not tag_skipped
                and node.get("type") == part):
            tag_skipped = True
            continue
        if isinstance(node, dict) and part in node:
            out.append(part)
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            out.append(part)
            node = node[part]
        else:
            out.append(part)
            node = None
        tag_skipped = False
    return tuple(out)
