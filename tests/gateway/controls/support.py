"""Helpers for control tests: a greenhouse site with ``controls:``, and a service harness on a FakeClock.

``load_site`` validates ``controls:`` exactly as the loader will once SiteConfig
has the key (gateway/config is another engineer's): with a site model extended
by ``controls`` and ``validate_controls``, or with ``load_config`` itself when
SiteConfig already has it.  The harness simulates the relay: a coil write moves
its running contact unless the test made it stuck.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import yaml
from pydantic import Field, ValidationError, create_model

from core.clock import FakeClock
from core.records import Reading
from core.yamlsrc import ConfigError, load_yaml
from gateway.alerts.engine import AlertEngine
from gateway.config.load import load_config, problems_from
from gateway.config.site import LoadedConfig, SiteConfig, site_model
from gateway.controls import ControlConfig, validate_controls
from gateway.controls.service import ControlService
from tests.support import PROFILES

T0 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC

FAN = {"id": "gh-fan", "kind": "fan", "sensor": {"device": "gh-air", "point": "temperature"},
       "output": {"device": "gh-relay", "point": "fan"}, "feedback": {"device": "gh-relay", "point": "fan_running"},
       "on_when": "above", "setpoint": 30.0, "hysteresis": 2.0, "min_on": 60, "min_off": 120,
       "labels": {"en": "Greenhouse 1 fan", "zh-CN": "1号温室风机"}}


def greenhouse_devices(poll: float = 1.0) -> list[dict]:
    return [
        {"id": "gh-air", "unit": 1, "profile": "climate_sensor", "poll_interval": poll, "location": {"zone": "greenhouse 1"}},
        {"id": "gh-relay", "unit": 2, "profile": "fan_relay", "poll_interval": poll, "location": {"zone": "greenhouse 1"}},
    ]


def site_data(tmp: Path, controls: list[dict], *, rules: dict | None = None, devices: list[dict] | None = None,
              sim_port: int = 5021, broker: dict | None = None, store: dict | None = None) -> dict:
    data = {
        "site": "green-valley", "gateway": "gh-gw",
        "profiles_dir": str(PROFILES),
        "store": {"path": str(tmp / "outbox.sqlite"), "commit_interval": 0.2, **(store or {})},
        "uplink": {"state_interval": 1},
        "buses": [{"id": "gh-bus", "type": "modbus_tcp", "host": "127.0.0.1", "port": sim_port, "timeout": 0.3,
                   "backoff_initial": 0.2, "backoff_max": 1.0, "devices": devices or greenhouse_devices()}],
        "controls": controls,
    }
    if rules is not None:
        data["rules"] = rules
    if broker is not None:
        data["broker"] = {"backoff_initial": 0.2, "backoff_max": 1.0, **broker}
    return data


def write_site(tmp: Path, controls: list[dict], name: str = "site.yaml", **kw) -> Path:
    path = tmp / name
    path.write_text(yaml.safe_dump(site_data(tmp, controls, **kw), sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def has_controls_key() -> bool:
    return "controls" in SiteConfig.model_fields


def load_file(path: Path) -> LoadedConfig:
    """The site file with ``controls:`` validated: by load_config once SiteConfig has the key, else as it will."""
    if has_controls_key():
        return load_config(path)
    src = load_yaml(path)
    model = create_model("SiteConfig", __base__=site_model(), controls=(list[ControlConfig], Field(default_factory=list)))
    try:
        site = model.model_validate(src.data)
    except ValidationError as exc:
        raise ConfigError(problems_from(exc, src)) from None
    rest = path.with_name(path.stem + ".without-controls.yaml")
    rest.write_text(yaml.safe_dump({k: v for k, v in src.data.items() if k != "controls"}, sort_keys=False), encoding="utf-8")
    base = load_config(rest)
    problems = validate_controls(site, base.profiles, src)
    if problems:
        raise ConfigError(problems)
    return LoadedConfig(site=site, profiles=base.profiles, file=src.file, base_dir=base.base_dir)


def load_site(tmp: Path, controls: list[dict], **kw) -> LoadedConfig:
    return load_file(write_site(tmp, controls, **kw))


class Greenhouse:
    """The simulated air and relay: the test sets the temperature; a coil write moves its running contact."""

    def __init__(self):
        self.temperature: float | None = 25.0
        self.coils = {"fan": False, "mister": False}
        self.stuck: set[str] = set()  # coils whose running contact never follows
        self.running = {"fan": False, "mister": False}

    def write(self, point: str, value) -> None:
        self.coils[point] = bool(value)
        if point not in self.stuck:
            self.running[point] = bool(value)

    def readings(self, ts: float) -> list[Reading]:
        out = [Reading(ts, "gh-relay", p, v) for p, v in self.coils.items()]
        out += [Reading(ts, "gh-relay", f"{p}_running", v) for p, v in self.running.items()]
        if self.temperature is not None:
            out.append(Reading(ts, "gh-air", "temperature", self.temperature, "degC"))
        return out


class Harness:
    """A ControlService (and an AlertEngine when the site has rules) on a FakeClock, records collected."""

    def __init__(self, cfg: LoadedConfig, state_dir: str | None = None, clock: FakeClock | None = None, fail_writes: int = 0):
        self.clock = clock or FakeClock(T0)
        self.records: list[tuple[str, dict]] = []
        self.writes: list[tuple[str, str, object]] = []
        self.fail_writes = fail_writes
        self.house = Greenhouse()
        self.engine = AlertEngine(cfg, self.clock, self._emit, None, state_dir) if cfg.site.rules is not None else None
        self.service = ControlService(cfg, self.clock, self._emit, self._write, alerts=self.engine, state_dir=state_dir)

    async def _emit(self, lane: str, body: bytes, topic: str | None = None):
        self.records.append((lane, orjson.loads(body)))
        return len(self.records)

    async def _write(self, device: str, point: str, value) -> None:
        if self.fail_writes > 0:
            self.fail_writes -= 1
            raise ConnectionError("relay does not answer")
        self.writes.append((device, point, value))
        self.house.write(point, value)

    def poll(self) -> None:
        readings = self.house.readings(self.clock.time())
        self.service.observe(readings)
        if self.engine is not None:
            self.engine.observe(readings)

    async def settle(self) -> None:
        await self.service.drain()
        for _ in range(5):
            await asyncio.sleep(0)
        await self.service.drain()
        if self.engine is not None:
            self.engine.tick()
            await self.engine.drain()

    async def advance(self, seconds: float, step: float = 1.0, poll: bool = True) -> None:
        """Move time in ``step``s, polling the greenhouse (``poll``) and deciding after each."""
        done = 0.0
        while done < seconds - 1e-9:
            d = min(step, seconds - done)
            await self.clock.advance(d)
            done += d
            if poll:
                self.poll()
            await self.settle()

    def of(self, type_: str, **match) -> list[dict]:
        return [r for _, r in self.records if r["type"] == type_ and all(r.get(k) == v for k, v in match.items())]

    def fan_writes(self) -> list:
        return [v for d, p, v in self.writes if (d, p) == ("gh-relay", "fan")]
