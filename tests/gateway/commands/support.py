"""Helpers for command tests: a site with valves and a lock, fake devices, a service on a FakeClock.

The fake valve module has position inputs (``zone_N_open``) that follow the coil
unless a test makes the valve stuck; valves use them only where the site's
config names them as ``feedback:`` (:func:`with_feedback`).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import yaml

from core.clock import FakeClock
from core.protocol import envelope
from core.records import Reading
from gateway.commands.service import CommandService
from gateway.config.load import load_config, load_profile
from tests.support import PROFILES

T0 = 1_700_000_000.0  # FakeClock's default start
SITE, GATEWAY = "green-valley", "gw-1"

FARMER = envelope.generate()
DUTY = envelope.generate()
CENTRE = envelope.generate()  # a service that signs for people (v2 on_behalf_of)
STRANGER = envelope.generate()


def devices() -> list[dict]:
    return [
        {"id": f"soil-{n}", "unit": n, "profile": "soil_probe", "poll_interval": 5} for n in (1, 2, 3)
    ] + [
        {"id": "weather", "unit": 10, "profile": "weather_station", "poll_interval": 5},
        {"id": "meter-farm", "unit": 20, "profile": "water_meter", "poll_interval": 5},
        {"id": "tank", "unit": 30, "profile": "tank_level", "poll_interval": 5},
        {"id": "valves", "unit": 40, "profile": "valve_relay", "poll_interval": 2},
        {"id": "door-101", "unit": 50, "profile": "door_lock", "poll_interval": 1, "location": {"building": "3"}},
        {"id": "door-201", "unit": 51, "profile": "door_lock", "poll_interval": 1, "location": {"building": "4"}},
    ]


def commands(**over) -> dict:
    data = {
        "issuers": {
            "farmer": {"public_key": envelope.public_key_text(FARMER.public_key()),
                       "actions": ["irrigate", "close", "close_all", "resume_programs"], "targets": ["zone-*"]},
            "duty": {"public_key": envelope.public_key_text(DUTY.public_key()),
                     "actions": ["unlock", "lock", "reset_lockout"], "buildings": ["3"]},
            "centre": {"public_key": envelope.public_key_text(CENTRE.public_key()),
                       "actions": ["unlock", "lock", "reset_lockout"], "buildings": ["3"]},
        },
        "valves": [
            {"id": f"zone-{n}", "zone": n, "device": "valves", "point": f"zone_{n}", "pulse_point": f"zone_{n}_pulse",
             "max_run": "30m",
             "interlocks": {"moisture": {"device": f"soil-{n}", "above": 40}, "rain": {"device": "weather"},
                            "tank": {"device": "tank", "below": 0.5}}}
            for n in (1, 2, 3)
        ] + [{"id": "zone-4", "zone": 4, "device": "valves", "point": "zone_4", "max_run": "10m"}],
        "locks": [
            {"id": "door-101", "device": "door-101", "relock_after": 10},
            {"id": "door-201", "device": "door-201", "relock_after": 10, "relock": "gateway"},
        ],
        "timezone": "Asia/Shanghai",
    }
    data.update(over)
    return data


def with_feedback(cmds: dict, zones=(1, 2, 3), confirm_within: float = 5) -> dict:
    """``cmds`` with the position input of each of ``zones`` as its valve's feedback."""
    for v in cmds["valves"]:
        if v.get("zone") in zones:
            v.update(feedback={"device": "valves", "point": f"zone_{v['zone']}_open"}, confirm_within=confirm_within)
    return cmds


def write_site(tmp: Path, cmds: dict | None = None, name: str = "site.yaml", devs: list[dict] | None = None,
               extra: dict | None = None) -> Path:
    data = {
        "site": SITE, "gateway": GATEWAY, "profiles_dir": str(PROFILES),
        "store": {"path": str(tmp / "outbox.sqlite")},
        "buses": [{"id": "field", "type": "modbus_tcp", "host": "127.0.0.1", "port": 5020, "devices": devs or devices()}],
        "commands": commands() if cmds is None else cmds,
        **(extra or {}),
    }
    path = tmp / name
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


class FakeDevice:
    """A driver double: holds values per point, records writes, can fail on demand."""

    def __init__(self, id: str, profile: str, values: dict | None = None):
        self.id = id
        self.profile = load_profile(PROFILES / f"{profile}.yaml")
        self.points = {p.name: p for p in self.profile.points}
        self.values = {p.name: (False if p.type == "bool" else 0) for p in self.profile.points}
        self.values.update(values or {})
        self.writes: list[tuple[str, object]] = []
        self.fail: str | None = None  # "write" or "all": raise; "stuck": writes are ignored
        self.on_write = None

    async def write(self, point: str, value) -> None:
        if self.fail in ("write", "all"):
            raise ConnectionError(f"{self.id}: no answer")
        if not self.points[point].writable:
            raise ValueError(f"{point} is not writable")
        self.writes.append((point, value))
        if self.fail == "stuck":
            return
        self.values[point] = value
        if self.on_write:
            self.on_write(point, value)

    async def read_all(self):
        if self.fail == "all":
            raise ConnectionError(f"{self.id}: no answer")
        return [(p, self.values[p.name]) for p in self.profile.points]


class FakeValves(FakeDevice):
    """The valve module double: each ``zone_N_open`` input follows its coil, unless the valve is stuck."""

    def __init__(self):
        super().__init__("valves", "valve_relay")
        self.stuck: dict[int, bool] = {}
        self.on_write = self._follow

    def _follow(self, point, value):
        if point.startswith("zone_") and point[5:].isdigit():
            n = int(point[5:])
            self.values[f"zone_{n}_open"] = self.stuck.get(n, bool(value))

    def stick(self, zone: int, state: bool | None) -> None:
        """The valve stays open (True) or closed (False) whatever its coil says; None frees it."""
        if state is None:
            self.stuck.pop(zone, None)
            self.values[f"zone_{zone}_open"] = bool(self.values[f"zone_{zone}"])
        else:
            self.stuck[zone] = state
            self.values[f"zone_{zone}_open"] = state


class FakeLock(FakeDevice):
    """Door lock double: unlock coil drives 'locked'; optional device-side relock is driven by the test."""

    def __init__(self, id: str):
        super().__init__(id, "door_lock", {"locked": True, "battery": 80, "relock_time": 10})
        self.on_write = self._follow

    def _follow(self, point, value):
        if point == "unlock":
            if value:
                self.values["locked"] = False
            elif not self.values["door_open"]:
                self.values["locked"] = True

    def device_relock(self):
        if not self.values["door_open"]:
            self.values["locked"] = True
            self.values["unlock"] = False


class Harness:
    def __init__(self, tmp: Path, cmds: dict | None = None, devs: list[dict] | None = None, start: float = T0,
                 on_commit=None, extra: dict | None = None):
        self.tmp = tmp
        self.on_commit = on_commit  # the command store's commit hook (a slow SD card)
        self.cfg = load_config(write_site(tmp, cmds, devs=devs, extra=extra))
        self.clock = FakeClock(start)
        self.records: list[tuple[str, dict]] = []
        self.valves = FakeValves()
        self.doors = {"door-101": FakeLock("door-101"), "door-201": FakeLock("door-201")}
        self.devices = {"valves": self.valves, **self.doors}
        self.state_dir = tmp / "state"
        self.state_dir.mkdir(exist_ok=True)
        self.svc: CommandService | None = None
        self.task: asyncio.Task | None = None

    async def emit(self, lane: str, body: bytes, topic: str | None = None) -> None:
        record = orjson.loads(body)
        if topic is not None:  # where the uplink will send it: kept beside the record for the assertions
            record["topic"] = topic
        self.records.append((lane, record))

    async def start(self, readings: bool = True, controls=None) -> CommandService:
        self.svc = CommandService(self.cfg, self.clock, self.emit, self.devices, str(self.state_dir), on_commit=self.on_commit,
                                  controls=controls)
        await self.svc.start()
        self.task = asyncio.create_task(self.svc.run())
        self.svc.on_link(True)
        if readings:
            self.observe_farm()
        return self.svc

    async def stop(self, clean: bool = True) -> None:
        if clean:
            await self.svc.stop()
        else:  # like kill -9: nothing more runs, the files stay as they are
            for t in list(self.svc.jobs.timers.values()) + list(self.svc.jobs.jobs):
                t.cancel()
            await self.svc.store.close()  # what was written so far is on disk, as with the synchronous store
        if self.task:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    def observe(self, device: str, **points) -> None:
        now = self.clock.time()
        self.svc.observe([Reading(now, device, k, v) for k, v in points.items()])

    def observe_farm(self, moisture: float = 25.0, rain: bool = False, level: float = 1.5, flow: float = 0.0) -> None:
        for n in (1, 2, 3):
            self.observe(f"soil-{n}", moisture=moisture)
        self.observe("weather", rain_detected=rain)
        self.observe("tank", level=level)
        self.observe("meter-farm", flow_rate=flow)

    def env(self, action: str, target: str, params: dict | None = None, *, key=FARMER, issuer: str = "farmer",
            valid_for: float = 300, now: float | None = None, v: int = 1, on_behalf_of: str | None = None,
            **over) -> dict:
        """A signed command (v1 unless ``v=2`` or ``on_behalf_of``); ``over`` changes fields before signing."""
        if on_behalf_of is not None:
            v = 2
        env = envelope.make(issuer=issuer, site=SITE, gateway=GATEWAY, target=target, action=action, params=params,
                            valid_for=valid_for, now=self.clock.time() if now is None else now, v=v,
                            on_behalf_of=on_behalf_of)
        env.update(over)
        return envelope.sign(env, key) if key is not None else env

    async def submit(self, env: dict) -> None:
        """Hand a command over and let the service take it as far as it goes without time passing."""
        self.svc.on_command("canopy/v1/x/y/cmd", orjson.dumps(env))
        await self.svc.drain()

    async def send(self, env: dict | bytes) -> dict | None:
        payload = env if isinstance(env, bytes) else orjson.dumps(env)
        self.svc.on_command("canopy/v1/x/y/cmd", payload)
        await self.svc.drain()
        if isinstance(env, dict):
            return self.final(env["id"])
        return None

    async def advance(self, seconds: float, step: float | None = None) -> None:
        if step is None:
            await self.clock.advance(seconds)
            await self.svc.drain()
            return
        left = seconds
        while left > 1e-9:
            dt = min(step, left)
            await self.clock.advance(dt)
            await self.svc.drain()
            left -= dt

    # -- views --------------------------------------------------------------
    def of(self, type_: str, lane: str | None = None) -> list[dict]:
        return [r for ln, r in self.records if r.get("type") == type_ and (lane is None or ln == lane)]

    def results(self, id: str | None) -> list[dict]:
        return [r for r in self.of("cmd.result") if r.get("id") == id]

    def junk(self, kind: str, reason: str | None = None) -> int:
        """How many messages the service counted as junk of that kind (and reason)."""
        reasons = self.svc.counters["junk"].get(kind, {})
        return sum(reasons.values()) if reason is None else reasons.get(reason, 0)

    def answers(self) -> list[dict]:
        """Every durable record of the command path: results and audit (junk must cost none of these)."""
        return self.of("cmd.result") + self.of("cmd.audit")

    def final(self, id: str) -> dict | None:
        done = [r for r in self.results(id) if r["status"] in ("executed", "rejected", "failed")]
        return done[-1] if done else None

    def audits(self, id: str | None) -> list[dict]:
        return [r for r in self.of("cmd.audit") if r.get("id") == id]

    def device_writes(self) -> list:
        return [w for d in self.devices.values() for w in d.writes]
