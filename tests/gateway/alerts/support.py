"""Helpers for alert tests: community/farm site configs with rules and ack issuers, signed acks, and an engine harness on a FakeClock."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import yaml

from core.clock import FakeClock
from core.protocol import envelope
from core.records import Reading
from gateway.alerts.engine import AlertEngine
from gateway.config.load import load_config
from gateway.config.site import LoadedConfig
from tests.support import PROFILES

# 2023-11-14 22:13:20 UTC: FakeClock's default start
T0 = 1_700_000_000.0
EPOCH = "51fb60d06184c4c9"  # the harness's outbox epoch (its emit returns seqs 1, 2, … in one sequence)


def community_devices(poll: float = 0.2) -> list[dict]:
    return [
        {"id": "smoke-shed", "unit": 1, "profile": "smoke_gas_detector", "poll_interval": poll,
         "location": {"building": "3", "zone": "e-bike-shed"}},
        {"id": "smoke-hall", "unit": 2, "profile": "smoke_gas_detector", "poll_interval": poll,
         "location": {"building": "3", "zone": "hall"}},
        {"id": "door-101", "unit": 10, "profile": "door_lock", "poll_interval": poll,
         "location": {"building": "3", "unit": "1", "household": "101", "grid": "G7"}},
        {"id": "meter-101", "unit": 20, "profile": "water_meter", "poll_interval": poll,
         "location": {"building": "3", "unit": "1", "household": "101", "grid": "G7"}},
        {"id": "sounder", "unit": 30, "profile": "relay_module", "poll_interval": poll, "location": {"building": "3"}},
    ]


def farm_devices(poll: float = 0.2) -> list[dict]:
    return [
        {"id": f"soil-{n}", "unit": n, "profile": "soil_probe", "poll_interval": poll, "location": {"zone": f"zone-{n}"}}
        for n in (1, 2, 3)
    ] + [
        {"id": "weather", "unit": 10, "profile": "weather_station", "poll_interval": poll},
        {"id": "meter-farm", "unit": 20, "profile": "water_meter", "poll_interval": poll},
        {"id": "tank", "unit": 30, "profile": "tank_level", "poll_interval": poll},
        {"id": "valves", "unit": 40, "profile": "valve_relay", "poll_interval": poll},
    ]


GROUPS = {
    "property-office": {"recipients": ["duty-desk"]},
    "volunteers": {"recipients": ["vol-wang", "vol-li"]},
    "grid-leader": {"recipients": ["grid-7-leader"]},
}


# Who may acknowledge (commands.issuers.*.ack): the duty desk and the centre (which signs for people) anything,
# the volunteers' app what has reached the volunteers; STRANGER is nobody's key.
DESK = envelope.generate()
CENTRE = envelope.generate()
VOLUNTEERS = envelope.generate()
STRANGER = envelope.generate()


def public(key) -> str:
    return envelope.public_key_text(key.public_key())


ISSUERS = {
    "duty-desk": {"public_key": public(DESK), "ack": "all"},
    "centre-1": {"public_key": public(CENTRE), "ack": "all"},
    "vol-app": {"public_key": public(VOLUNTEERS), "ack": ["group:volunteers"]},
}


def signed_ack(alert_id: str, *, key=CENTRE, issuer: str = "centre-1", by: str | None = None, resolve: bool = False,
               note: str | None = None, now: float | None = None, valid_for: float = 300.0, id: str | None = None,
               site: str = "sunny-court", gateway: str = "gw-3", action: str | None = None, params: dict | None = None,
               **fields) -> bytes:
    """A v2 ack envelope, signed with ``key`` (``fields`` overrides envelope fields after signing: a forgery)."""
    if params is None:
        params = {"note": note} if note is not None else {}
    env = envelope.make(v=2, kind="ack", issuer=issuer, on_behalf_of=by, site=site, gateway=gateway, target=alert_id,
                        action=action or ("resolve" if resolve else "acknowledge"), params=params,
                        valid_for=valid_for, now=now, id=id)
    return orjson.dumps({**envelope.sign(env, key), **fields})


def chain(*afters: float) -> dict:
    names = ["property-office", "volunteers", "grid-leader"]
    return {"escalation": [{"group": names[i], "after": a} for i, a in enumerate(afters)]}


def site_data(tmp: Path, rules: dict, *, devices: list[dict] | None = None, sim_port: int = 5021,
              broker: dict | None = None, language: str = "en", store: dict | None = None, site: str = "sunny-court",
              issuers: dict | None = None) -> dict:
    """A site with ``rules``; ``issuers`` (default: ISSUERS, vol-app only where a volunteers group exists; {} for none)."""
    data = {
        "site": site,
        "gateway": "gw-3",
        "language": language,
        "profiles_dir": str(PROFILES),
        "store": {"path": str(tmp / "outbox.sqlite"), "commit_interval": 0.2, **(store or {})},
        "uplink": {"state_interval": 1},
        "buses": [{"id": "block-3", "type": "modbus_tcp", "host": "127.0.0.1", "port": sim_port, "timeout": 0.3,
                   "backoff_initial": 0.2, "backoff_max": 1.0, "devices": devices or community_devices()}],
        "rules": rules,
    }
    if issuers is None:
        issuers = {k: v for k, v in ISSUERS.items() if k != "vol-app" or "volunteers" in (rules.get("groups") or {})}
    if issuers:
        data["commands"] = {"issuers": issuers}
    if broker is not None:
        data["broker"] = {"backoff_initial": 0.2, "backoff_max": 1.0, **broker}
    return data


def write_site(tmp: Path, rules: dict, name: str = "site.yaml", **kw) -> Path:
    path = tmp / name
    path.write_text(yaml.safe_dump(site_data(tmp, rules, **kw), sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def load_site(tmp: Path, rules: dict, **kw) -> LoadedConfig:
    return load_config(write_site(tmp, rules, **kw))


class Harness:
    """An engine on a FakeClock; records and output writes are collected."""

    def __init__(self, cfg: LoadedConfig, state_dir: str | None = None, clock: FakeClock | None = None,
                 fail_writes: int = 0, fail_emits: int = 0):
        self.clock = clock or FakeClock(T0)
        self.records: list[tuple[str, dict]] = []
        self.writes: list[tuple[str, str, object]] = []
        self.fail_writes = fail_writes
        self.fail_emits = fail_emits
        self.engine = AlertEngine(cfg, self.clock, self._emit, self._write, state_dir, epoch=lambda: EPOCH)

    async def _emit(self, lane: str, body: bytes, topic: str | None = None):
        if self.fail_emits > 0:
            self.fail_emits -= 1
            raise RuntimeError("outbox is closing")
        record = orjson.loads(body)
        if topic is not None:  # where the uplink will send it: kept beside the record for the assertions
            record["topic"] = topic
        self.records.append((lane, record))
        return len(self.records)

    async def _write(self, device: str, point: str, value) -> None:
        if self.fail_writes > 0:
            self.fail_writes -= 1
            raise ConnectionError("relay does not answer")
        self.writes.append((device, point, value))

    def feed(self, device: str, point: str, value, unit: str = "") -> None:
        self.engine.observe([Reading(self.clock.time(), device, point, value, unit)])

    async def settle(self) -> None:
        self.engine.tick()
        await self.engine.drain()
        for _ in range(5):
            await asyncio.sleep(0)
        await self.engine.drain()

    async def advance(self, seconds: float, step: float | None = None) -> None:
        """Move time, ticking the engine every ``step`` seconds (default: once at the end)."""
        step = step or seconds
        done = 0.0
        while done < seconds - 1e-9:
            d = min(step, seconds - done)
            await self.clock.advance(d)
            done += d
            await self.settle()

    def of(self, type_: str, **match) -> list[dict]:
        """Records of ``type_`` as a de-duplicating receiver keeps them: copies of a raise (``copy_of``) left out."""
        return [r for _, r in self.records if r["type"] == type_ and "copy_of" not in r
                and all(r.get(k) == v for k, v in match.items())]

    def copies(self, **match) -> list[dict]:
        """The copies of raises sent to groups paged later (each names its raise in ``copy_of``)."""
        return [r for _, r in self.records if "copy_of" in r and all(r.get(k) == v for k, v in match.items())]

    def lanes(self, type_: str) -> set[str]:
        return {lane for lane, r in self.records if r["type"] == type_}


# --------------------------------------------------------------------------- engine scenarios (FakeClock)

# a smoke detector that sounds the sounder, escalating along chain(0, 120, 300)
SMOKE = {"id": "smoke-alarm", "type": "state", "devices": ["smoke-shed", "smoke-hall"], "point": "alarm", "to": True,
         "severity": "critical", "class": "fire", "outputs": [{"device": "sounder", "point": "sounder"}]}


def rules(*rule_list, classes=None, **extra) -> dict:
    return {"groups": GROUPS, "classes": classes or {"fire": chain(0, 120, 300)}, "rules": list(rule_list), **extra}


ACK_TOPIC = "canopy/v1/sunny-court/gw-3/alert/ack"


def ack(h: Harness, alert_id: str, by: str = "li", **kw) -> None:
    """A correctly signed ack: the centre's key, for the person ``by``."""
    h.engine.on_ack(ACK_TOPIC, signed_ack(alert_id, by=by, now=h.clock.time(), **kw))


async def smoke_on(h: Harness, device: str = "smoke-shed") -> dict | None:
    h.feed(device, "alarm", False)
    h.feed(device, "alarm", True)
    await h.settle()
    raised = h.of("alert.raised", device=device)
    return raised[-1] if raised else None


async def flap(h: Harness, times: int, gap: float) -> None:
    for _ in range(times):
        h.feed("smoke-shed", "alarm", True)
        await h.settle()
        h.feed("smoke-shed", "alarm", False)
        await h.advance(gap)


# --------------------------------------------------------------------------- scenario helpers (real broker)


def alert_messages(sub) -> list[tuple[str, dict]]:
    """(topic, envelope) of every lane message the broker delivered, whatever its topic."""
    with sub.lock:
        return [(t, m) for t, m, _ in sub.messages if isinstance(m, dict) and m.get("lane") in ("alarm", "event")]


def record_key(epoch: str, lane: str, record: dict) -> tuple[str, str, int]:
    """The protocol's one de-duplication key: the record's ``copy_of`` if it has one, else its own (epoch, lane, seq)."""
    if isinstance(record.get("copy_of"), dict):
        return record["copy_of"]["epoch"], record["copy_of"]["lane"], record["copy_of"]["seq"]
    return epoch, lane, record["seq"]


def alert_records(sub, type_: str | None = None, **match) -> list[dict]:
    """Alert records the broker delivered (both lanes, every topic), de-duplicated by their key (:func:`record_key`).

    Each record gets ``_topics``: every topic a copy of it came on (``…/event`` and the groups' topics).
    """
    found: dict[tuple[str, str, int], dict] = {}
    for topic, m in alert_messages(sub):
        for r in m["records"]:
            if not str(r.get("type", "")).startswith("alert."):
                continue
            key = record_key(m.get("epoch", ""), m["lane"], r)
            if key not in found:
                found[key] = {**r, "_topics": set()}
            found[key]["_topics"].add(topic)
    out = [r for r in found.values() if (type_ is None or r["type"] == type_) and all(r.get(k) == v for k, v in match.items())]
    return sorted(out, key=lambda r: r["ts"])


def topic_leaves(record: dict) -> set[str]:
    """The topics of a record's copies, without ``canopy/v1/{site}/{gateway}/``: {"event", "alert/volunteers", …}."""
    return {t.split("/", 4)[4] for t in record["_topics"]}


def online(sub, *devices: str):
    """The latest …/state if the gateway is online and has polled ``devices`` successfully."""
    st = sub.latest_state()
    if not st or st.get("status") != "online":
        return None
    devs = st.get("devices", {})
    return st if all(devs.get(d, {}).get("status") == "ok" for d in devices) else None
