"""Site configuration: typed models, and loading that names file:line:key.

One YAML file describes a site: who the gateway is, where the broker is, the
buses and devices, and (by name) the device profiles in ``profiles_dir``.
Everything is validated before anything starts; unknown keys are errors.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Annotated, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gateway.alerts.config import RulesConfig, validate_rules
from gateway.profiles import Profile
from gateway.yamlsrc import ConfigError, Problem, Source, dotted, load_yaml

Id = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TlsConfig(Strict):
    ca: str | None = Field(None, description="CA bundle (PEM) that signed the broker's certificate")
    cert: str | None = Field(None, description="client certificate (PEM), for mutual TLS")
    key: str | None = Field(None, description="client private key (PEM), must be 0600")
    verify_hostname: bool = True

    @model_validator(mode="after")
    def _pair(self) -> "TlsConfig":
        if (self.cert is None) != (self.key is None):
            raise ValueError("cert and key go together")
        return self


class BrokerConfig(Strict):
    host: str = Field(description="broker host name or address")
    port: int = Field(8883, ge=1, le=65535)
    tls: TlsConfig | None = Field(None, description="omit for plain TCP (only sensible on loopback or a VPN)")
    username: str | None = None
    password: str | None = Field(None, description="literal or ${ENV_VAR}; prefer password_file")
    password_file: str | None = Field(None, description="file holding the password, mode 0600")
    keepalive: int = Field(30, ge=5, le=3600)
    client_id: str | None = None
    max_inflight: int = Field(32, ge=1, le=65535, description="QoS 1 messages awaiting PUBACK")
    connect_timeout: float = Field(10.0, gt=0, le=120)
    backoff_initial: float = Field(1.0, gt=0, le=60)
    backoff_max: float = Field(60.0, gt=0, le=3600)

    @model_validator(mode="after")
    def _secret(self) -> "BrokerConfig":
        if self.password is not None and self.password_file is not None:
            raise ValueError("give password or password_file, not both")
        if (self.password is not None or self.password_file is not None) and not self.username:
            raise ValueError("a password needs a username")
        return self


class StoreConfig(Strict):
    path: str = Field("canopy-outbox.sqlite", description="SQLite outbox file (relative to the config file)")
    commit_interval: float = Field(0.5, gt=0, le=10, description="seconds between telemetry commits")
    queue_size: int = Field(10000, ge=10, le=1_000_000, description="poll batches waiting for the writer")
    status_file: str = Field("canopy-status.json", description="health snapshot for `canopy status` (relative to the config file)")


class UplinkConfig(Strict):
    batch_max_records: int = Field(500, ge=1, le=10000, description="records per telemetry message")
    batch_max_bytes: int = Field(128 * 1024, ge=1024, le=16 * 1024 * 1024)
    state_interval: float = Field(30.0, ge=1, le=3600, description="seconds between health updates on …/state")


class Location(Strict):
    building: str | None = None
    unit: str | None = None
    household: str | None = None
    grid: str | None = None
    zone: str | None = None


class ModbusDevice(Strict):
    id: Id
    unit: int = Field(ge=0, le=247, description="Modbus unit (slave) id")
    profile: str = Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}$",
                         description="profile name: a file <profile>.yaml in profiles_dir")
    poll_interval: float = Field(5.0, ge=0.05, le=86400, description="seconds between polls")
    timeout: float | None = Field(None, gt=0, le=30, description="reply timeout; default: the bus's")
    location: Location | None = None
    enabled: bool = True


class ModbusTcpBus(Strict):
    type: Literal["modbus_tcp"]
    id: Id
    host: str
    port: int = Field(502, ge=1, le=65535)
    timeout: float = Field(1.0, gt=0, le=30, description="reply timeout in seconds")
    max_read_registers: int = Field(125, ge=1, le=125)
    max_gap: int = Field(8, ge=0, le=125, description="unread registers allowed inside a merged read")
    backoff_initial: float = Field(1.0, gt=0, le=60)
    backoff_max: float = Field(30.0, gt=0, le=3600)
    devices: list[ModbusDevice] = Field(default_factory=list)

    @field_validator("devices", mode="before")
    @classmethod
    def _no_devices(cls, v):  # a null "devices:" means none
        return [] if v is None else v


Bus = Annotated[ModbusTcpBus, Field(discriminator="type")]


class SiteConfig(Strict):
    site: Id
    gateway: Id
    language: Literal["en", "zh"] = "en"
    profiles_dir: str = Field("profiles", description="folder of device profiles, relative to the config file")
    broker: BrokerConfig | None = Field(None, description="omit to start an embedded broker on loopback (demo)")
    store: StoreConfig = StoreConfig()
    uplink: UplinkConfig = UplinkConfig()
    buses: list[Bus] = Field(default_factory=list)
    rules: RulesConfig | None = Field(None, description="local rules, alert classes and escalation (docs/alerts.md)")

    @field_validator("buses", mode="before")
    @classmethod
    def _list(cls, v):  # a null "buses:" means none
        return [] if v is None else v


class LoadedConfig(BaseModel):
    """A validated site with its resolved profiles and where it came from."""

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    site: SiteConfig
    profiles: dict[str, Profile]
    file: str
    base_dir: str

    def resolve(self, path: str) -> str:
        return path if os.path.isabs(path) else os.path.join(self.base_dir, path)

    def devices(self):
        for bus in self.site.buses:
            for dev in bus.devices:
                yield bus, dev


def _problems_from(exc: ValidationError, src: Source, prefix: tuple = ()) -> list[Problem]:
    problems = []
    for err in exc.errors(include_url=False):
        path = _data_path(src.data, prefix + tuple(err["loc"]))
        msg = err["msg"]
        ctx = err.get("ctx") or {}
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check spelling; see docs/configuration.md)"
        elif err["type"] == "missing":
            msg = "required key is missing"
        elif err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            # a tagged union (buses): point at the tag itself, in plain words
            tag_key = str(ctx.get("discriminator", "type")).strip("'\"")
            path = path + (tag_key,)
            expected = ctx.get("expected_tags") or ", ".join(repr(t) for t in _bus_types())
            if err["type"] == "union_tag_invalid":
                msg = f"unknown {tag_key} {ctx.get('tag')!r}; expected one of: {expected}"
            else:
                msg = f"required key is missing; one of: {expected}"
        elif err["type"] == "string_type" and isinstance(err.get("input"), (int, float, bool)):
            msg = f"{msg} (got {err['input']!r}; put it in quotes to make it text)"
        elif err["type"] != "value_error" and "input" in err and not isinstance(err["input"], (dict, list)):
            msg = f"{msg} (got {err['input']!r})"
        msg = msg.removeprefix("Value error, ")
        problems.append(src.problem(path, msg))
    return problems


def _bus_types() -> list[str]:
    """The ``type`` tags the ``Bus`` union accepts."""
    model = get_args(Bus)[0]
    models = get_args(model) or (model,)
    return [get_args(m.model_fields["type"].annotation)[0] for m in models]


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


def load_profile(path: Path) -> Profile:
    src = load_yaml(path)
    if not isinstance(src.data, dict):
        raise ConfigError([Problem(src.file, 1, "", "a profile must be a mapping")])
    try:
        return Profile.model_validate(src.data)
    except ValidationError as exc:
        raise ConfigError(_problems_from(exc, src)) from None


def read_secret(path: str, what: str) -> str:
    """Read a secret file, refusing one that others can read."""
    st = os.stat(path)
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise PermissionError(f"{what} {path} is readable by others (mode {stat.S_IMODE(st.st_mode):04o}); chmod 600 it")
    return Path(path).read_text(encoding="utf-8").strip()


def load_config(file: str | Path) -> LoadedConfig:
    """Load and validate a site file and the profiles it names."""
    src = load_yaml(file)
    if not isinstance(src.data, dict):
        raise ConfigError([Problem(src.file, 1, "", "a site config must be a mapping of keys")])
    try:
        site = SiteConfig.model_validate(src.data)
    except ValidationError as exc:
        raise ConfigError(_problems_from(exc, src)) from None

    base_dir = os.path.dirname(os.path.abspath(src.file))
    problems: list[Problem] = []
    profiles: dict[str, Profile] = {}
    profiles_dir = Path(site.profiles_dir if os.path.isabs(site.profiles_dir) else os.path.join(base_dir, site.profiles_dir))
    failed_profiles: set[str] = set()  # reported once, not once per device
    seen_devices: dict[str, tuple] = {}
    seen_buses: dict[str, tuple] = {}
    for b, bus in enumerate(site.buses):
        bpath = ("buses", b, "id")
        if bus.id in seen_buses:
            problems.append(src.problem(bpath, f"duplicate bus id '{bus.id}' (first at line {src.line_of(seen_buses[bus.id])})"))
        seen_buses.setdefault(bus.id, bpath)
        units: dict[int, str] = {}
        for d, dev in enumerate(bus.devices):
            dpath = ("buses", b, "devices", d)
            if dev.id in seen_devices:
                problems.append(src.problem(dpath + ("id",), f"duplicate device id '{dev.id}' (first at line {src.line_of(seen_devices[dev.id])})"))
            seen_devices.setdefault(dev.id, dpath + ("id",))
            if dev.unit in units:
                problems.append(src.problem(dpath + ("unit",), f"unit {dev.unit} is already used by device '{units[dev.unit]}' on bus '{bus.id}'"))
            units.setdefault(dev.unit, dev.id)
            if dev.profile in failed_profiles:
                continue
            if dev.profile not in profiles:
                pfile = profiles_dir / f"{dev.profile}.yaml"
                if not pfile.is_file():
                    problems.append(src.problem(dpath + ("profile",), f"profile '{dev.profile}' not found (looked for {pfile})"))
                    continue
                try:
                    profiles[dev.profile] = load_profile(pfile)
                except ConfigError as exc:
                    problems.extend(exc.problems)
                    failed_profiles.add(dev.profile)
                    continue
            prof = profiles[dev.profile]
            too_big = [p.name for p in prof.points if p.table in ("holding", "input") and p.count > min(bus.max_read_registers, prof.max_read_registers)]
            if too_big:
                problems.append(src.problem(dpath + ("profile",), f"points {too_big} are longer than the largest allowed read"))

    if site.broker is not None:
        problems.extend(_check_broker_files(site.broker, src, base_dir))
    if site.rules is not None and not problems:
        problems.extend(validate_rules(site, profiles, src))
    if problems:
        raise ConfigError(problems)
    return LoadedConfig(site=site, profiles=profiles, file=src.file, base_dir=base_dir)


def _check_broker_files(broker: BrokerConfig, src: Source, base_dir: str) -> list[Problem]:
    problems = []

    def resolve(p: str) -> str:
        return p if os.path.isabs(p) else os.path.join(base_dir, p)

    if broker.password_file:
        path = resolve(broker.password_file)
        try:
            read_secret(path, "password_file")
        except FileNotFoundError:
            problems.append(src.problem(("broker", "password_file"), f"file not found: {path}"))
        except PermissionError as exc:
            problems.append(src.problem(("broker", "password_file"), str(exc)))
        except IsADirectoryError:
            problems.append(src.problem(("broker", "password_file"), f"is a folder, not a file: {path}"))
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            problems.append(src.problem(("broker", "password_file"), f"cannot read {path}: {reason}"))
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


__all__ = ["ConfigError", "LoadedConfig", "SiteConfig", "load_config", "read_secret", "dotted"]
