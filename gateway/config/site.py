"""Site configuration: typed models, and loading that names file:line:key.

One YAML file describes a site: who the gateway is, where the broker is, the
buses and devices, and (by name) the device profiles in ``profiles_dir``.
Everything is validated before anything starts; unknown keys are errors.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Annotated, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from core.model import Id, Location, Strict
from core.yamlsrc import ConfigError, Problem, Source, dotted, load_yaml
from drivers.modbus.profile import Profile, require_unique_points
from gateway.alerts.config import RULE_TYPES, RulesConfig, validate_rules
from gateway.commands.config import CommandsConfig, validate_commands
from inference.config import CameraConfig, validate_cameras


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
    status_file: str | None = Field(None, description="health snapshot for `canopy status`; default: canopy-status.json beside the outbox")
    max_bytes: int = Field(256 * 1024 * 1024, ge=1024 * 1024, description="size cap of the outbox file (bytes)")
    alarm_reserve: float = Field(0.1, ge=0.01, le=0.9, description="share of max_bytes only alarms may use")
    telemetry_ttl: float | None = Field(7 * 86400, gt=0, description="seconds before unsent telemetry expires (null: never)")
    event_ttl: float | None = Field(30 * 86400, gt=0, description="seconds before unsent events expire (null: never); alarms never expire")
    thin_keep_every: int = Field(2, ge=1, le=100, description="over the cap, keep every Nth of the oldest half of telemetry (1: no thinning)")


class UplinkConfig(Strict):
    batch_max_records: int = Field(500, ge=1, le=10000, description="records per telemetry message")
    batch_max_bytes: int = Field(128 * 1024, ge=1024, le=16 * 1024 * 1024)
    state_interval: float = Field(30.0, ge=1, le=3600, description="seconds between health updates on …/state")
    max_messages_per_s: float | None = Field(None, gt=0, description="replay rate limit for events and telemetry (alarms exempt)")
    max_bytes_per_s: float | None = Field(None, gt=0, description="replay byte-rate limit for events and telemetry (alarms exempt)")
    max_inflight_bytes: int = Field(1024 * 1024, ge=4096, description="upper bound of unacknowledged event/telemetry bytes")
    queue_delay_target: float | None = Field(0.03, gt=0, le=5, description="seconds of queueing allowed in front of the next alarm: the in-flight window adapts to the link (null: fixed max_inflight_bytes)")



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


# -- serial buses (RS-485 / RS-232) ---------------------------------------------------------
STANDARD_BAUDS = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400)
_PARITY_WORDS = {"n": "N", "none": "N", "e": "E", "even": "E", "o": "O", "odd": "O"}


class SerialPortFields(Strict):
    """How to open a serial port; the port's existence is checked by load_config."""

    port: str = Field(min_length=1, max_length=4096,
                      description="device path; prefer /dev/serial/by-id/... (stable across reboots and replugs)")
    baudrate: int = Field(9600, description="bits per second: " + ", ".join(map(str, STANDARD_BAUDS)))
    bytesize: int = Field(8, description="data bits: 7 or 8")
    parity: str = Field("N", description="N (none), E (even) or O (odd)")
    stopbits: int = Field(1, description="stop bits: 1 or 2")
    backoff_initial: float = Field(1.0, gt=0, le=60, description="first delay before reopening a vanished port")
    backoff_max: float = Field(30.0, gt=0, le=3600, description="longest delay between reopen attempts")

    @field_validator("baudrate", mode="before")
    @classmethod
    def _baud(cls, v):
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"baud rate must be a whole number, one of {', '.join(map(str, STANDARD_BAUDS))} (got {v!r})")
        if v not in STANDARD_BAUDS:
            raise ValueError(f"baud rate {v} is not a standard rate; use one of {', '.join(map(str, STANDARD_BAUDS))}")
        return v

    @field_validator("bytesize", mode="before")
    @classmethod
    def _bytesize(cls, v):
        if isinstance(v, bool) or v not in (7, 8):
            raise ValueError(f"bytesize must be 7 or 8 (got {v!r})")
        return v

    @field_validator("parity", mode="before")
    @classmethod
    def _parity(cls, v):
        p = _PARITY_WORDS.get(str(v).strip().lower()) if isinstance(v, str) else None
        if p is None:
            raise ValueError(f"parity must be N (none), E (even) or O (odd) (got {v!r})")
        return p

    @field_validator("stopbits", mode="before")
    @classmethod
    def _stopbits(cls, v):
        if isinstance(v, bool) or v not in (1, 2):
            raise ValueError(f"stopbits must be 1 or 2 (got {v!r})")
        return v


class ModbusRtuBus(SerialPortFields):
    """Modbus RTU or ASCII slaves sharing one RS-485 line."""

    type: Literal["modbus_rtu"]
    id: Id
    framer: Literal["rtu", "ascii"] = Field("rtu", description="rtu (binary, CRC) or ascii (':' hex LRC CR LF)")
    timeout: float = Field(0.5, gt=0, le=30, description="reply timeout in seconds, counted from the end of the request")
    max_read_registers: int = Field(125, ge=1, le=125)
    max_gap: int = Field(8, ge=0, le=125, description="unread registers allowed inside a merged read")
    quarantine_after: int = Field(5, ge=1, le=1000, description="consecutive failures before a slave is quarantined")
    reprobe_interval: float = Field(30.0, ge=0.1, le=86400, description="seconds between re-probes of a quarantined slave")
    slave_backoff_initial: float = Field(1.0, ge=0, le=60, description="first retry delay after a slave fails (doubles per failure)")
    slave_backoff_max: float = Field(10.0, ge=0, le=3600, description="longest retry delay before quarantine")
    engine: Literal["raw", "pymodbus"] = Field("raw", description="raw (own framing, default) or pymodbus (AsyncModbusSerialClient)")
    devices: list[ModbusDevice] = Field(default_factory=list)

    @field_validator("devices", mode="before")
    @classmethod
    def _no_devices(cls, v):  # a null "devices:" means none
        return [] if v is None else v

    @model_validator(mode="after")
    def _rtu_is_8_bit(self) -> "ModbusRtuBus":
        if self.framer == "rtu" and self.bytesize != 8:
            raise ValueError("Modbus RTU needs bytesize 8 (7 data bits only with framer: ascii)")
        return self


class LinePoint(Strict):
    """One value taken from a parsed line."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="point name, lower_snake_case")
    key: str = Field(min_length=1, max_length=64, description="field of the parsed line: 'MDA.5', 'XDR.TempAir', 't'")
    type: Literal["float", "int", "str", "bool"] = "float"
    scale: float = Field(1.0, description="engineering = raw * scale + offset (numbers only)")
    offset: float = 0.0
    unit: str = ""

    @field_validator("scale")
    @classmethod
    def _scale(cls, v: float) -> float:
        if v == 0:
            raise ValueError("scale must not be 0")
        return v


class SerialLineDevice(Strict):
    id: Id
    poll_interval: float = Field(5.0, ge=0.05, le=86400, description="seconds between published samples")
    stale_after: float = Field(30.0, gt=0, le=86400, description="a value older than this is not published; no fresh value at all means status 'timeout'")
    match: dict[str, str] = Field(default_factory=dict, description="only lines whose fields equal these (e.g. {sentence: MDA}, {id: ws1})")
    points: list[LinePoint] = Field(min_length=1)
    location: Location | None = None
    enabled: bool = True

    @property
    def profile(self) -> None:
        """Line sensors have no Modbus profile: their points are inline (``points``)."""
        return None

    @model_validator(mode="after")
    def _unique(self) -> "SerialLineDevice":
        require_unique_points(self.points)
        return self


class SerialLineBus(SerialPortFields):
    """Line-oriented ASCII sensors (NMEA 0183, key=value) on one serial port."""

    type: Literal["serial_line"]
    id: Id
    parser: Literal["nmea", "kv"] = Field(description="nmea ($..*hh sentences) or kv (key=value,key=value[*hh])")
    require_checksum: bool | None = Field(None, description="refuse lines without a checksum; default: yes for nmea, no for kv")
    max_line: int = Field(256, ge=16, le=4096, description="longest accepted line in bytes; longer ones are dropped and counted")
    devices: list[SerialLineDevice] = Field(default_factory=list)

    @field_validator("devices", mode="before")
    @classmethod
    def _no_devices(cls, v):
        return [] if v is None else v


Bus = Annotated[ModbusTcpBus | ModbusRtuBus | SerialLineBus, Field(discriminator="type")]
SERIAL_BUS_TYPES = (ModbusRtuBus, SerialLineBus)


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
    commands: CommandsConfig | None = Field(None, description="remote commands: issuers, authorisation, valves, locks (docs/commands.md)")
    cameras: list[CameraConfig] = Field(default_factory=list, description="cameras and their detectors (docs/cameras.md)")

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

    @property
    def status_path(self) -> str:
        """Where the daemon writes its health snapshot (beside the outbox by default)."""
        store = self.site.store
        if store.status_file:
            return self.resolve(store.status_file)
        return os.path.join(os.path.dirname(self.resolve(store.path)), "canopy-status.json")

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
            if ctx.get("expected_tags"):
                expected = ctx["expected_tags"]
            elif tuple(err["loc"][:2]) == ("rules", "rules"):
                expected = ", ".join(repr(t) for t in RULE_TYPES)
            else:
                expected = ", ".join(repr(t) for t in _bus_types())
            if err["type"] == "union_tag_invalid":
                msg = f"unknown {tag_key} {ctx.get('tag')!r}; expected one of: {expected}"
            else:
                msg = f"required key is missing; one of: {expected}"
        elif any(isinstance(k, str) and ("password" in k or k == "key") for k in err["loc"]):
            # never echo a secret into a terminal or a log
            if err["type"] == "string_type":
                msg = f"{msg} (put it in quotes to make it text)"
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


def load_config(file: str | Path, *, missing_ports_ok: bool = False) -> LoadedConfig:
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
    seen_ports: dict[str, tuple] = {}
    for b, bus in enumerate(site.buses):
        bpath = ("buses", b, "id")
        if bus.id in seen_buses:
            problems.append(src.problem(bpath, f"duplicate bus id '{bus.id}' (first at line {src.line_of(seen_buses[bus.id])})"))
        seen_buses.setdefault(bus.id, bpath)
        units: dict[int, str] = {}
        if isinstance(bus, SERIAL_BUS_TYPES):
            problems.extend(_check_serial_port(bus, b, src, base_dir, seen_ports, missing_ok=missing_ports_ok))
        for d, dev in enumerate(bus.devices):
            dpath = ("buses", b, "devices", d)
            if dev.id in seen_devices:
                problems.append(src.problem(dpath + ("id",), f"duplicate device id '{dev.id}' (first at line {src.line_of(seen_devices[dev.id])})"))
            seen_devices.setdefault(dev.id, dpath + ("id",))
            if isinstance(bus, SerialLineBus):
                continue  # no units or profiles: points are mapped inline
            if isinstance(bus, ModbusRtuBus) and dev.unit == 0:
                problems.append(src.problem(dpath + ("unit",), "unit 0 is the RS-485 broadcast address and never answers; use 1..247"))
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
    if site.commands is not None and not problems:
        problems.extend(validate_commands(site, profiles, src))
    if site.cameras and not problems:
        problems.extend(validate_cameras(site, src, base_dir))
    if problems:
        raise ConfigError(problems)
    return LoadedConfig(site=site, profiles=profiles, file=src.file, base_dir=base_dir)


def _serial_ports_hint() -> str:
    """The serial ports present now, stable names first, for an installer who typed the wrong one."""
    names: list[str] = []
    by_id = Path("/dev/serial/by-id")
    if by_id.is_dir():
        names += sorted(str(p) for p in by_id.iterdir())
    try:
        from serial.tools import list_ports

        names += sorted(p.device for p in list_ports.comports())
    except Exception:  # pragma: no cover - listing is a courtesy
        pass
    return f"; ports present: {', '.join(names[:12])}" if names else "; no serial ports are present (adapter plugged in?)"


def _check_serial_port(bus, b: int, src: Source, base_dir: str, seen: dict[str, tuple], missing_ok: bool = False) -> list[Problem]:
    """The port must exist now and be a character device, and only one bus may own it.

    ``missing_ok`` (for `canopy run`): an adapter that is unplugged at boot is
    a warning, not a reason to keep the whole gateway (alarms, other buses)
    down; the bus keeps trying to open it.  `canopy validate` reports it.
    """
    path = ("buses", b, "port")
    port = bus.port
    if "://" in port:
        return [src.problem(path, f"{port!r}: URLs are not supported; give a device path such as /dev/serial/by-id/...")]
    if not os.path.isabs(port):
        guess = f"/dev/{port}" if "/" not in port else port
        return [src.problem(path, f"give the full device path, e.g. {guess} or /dev/serial/by-id/... (got {port!r})")]
    full = port
    problems = []
    real = os.path.realpath(full)
    if real in seen:
        problems.append(src.problem(path, f"port {port} is already used by bus '{seen[real][1]}' (line {src.line_of(seen[real][0])}); one bus per port"))
    seen.setdefault(real, (path, bus.id))
    if not os.path.exists(full):
        link = " (a broken link: the adapter is unplugged?)" if os.path.islink(full) else ""
        problem = src.problem(path, f"serial port {full} not found{link}{_serial_ports_hint()}")
        if missing_ok:
            logging.getLogger("canopy.config").warning("%s; starting anyway, the bus will keep trying to open it", problem)
        else:
            problems.append(problem)
    elif not stat.S_ISCHR(os.stat(full).st_mode):
        problems.append(src.problem(path, f"{full} is not a serial device (not a character device)"))
    return problems


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
