"""Chaos engine: the real daemon under random faults, judged by what the broker delivered.

Used by tests/integration/test_chaos.py (≥ 30 cycles, default suite) and
bench/chaos.py (≥ 500 cycles).  Faults: kill -9 of the gateway at a random
moment, mosquitto restart, proxy blackhole / reset, slow link, device faults
(events) and alarms from the simulator.  At the end the link is healed, the
outbox drains, and every accepted sequence number of every lane must have
reached the subscriber at least once, first arrivals in order, duplicates only
around faults, and the counters must reconcile exactly.
"""

from __future__ import annotations

import random
import sqlite3
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from simulator.netfault import FaultProxyThread
from tests.support import GatewayProcess, Mosquitto, Subscriber, site_config, wait_until

LANES = ("alarm", "event", "telemetry")
FAULTS = ("kill9", "broker_restart", "blackhole", "reset", "slow", "device")

# The community site: smoke detectors whose alarm bit raises an alarm each episode.
COMMUNITY_DEVICES = [
    {"id": "smoke-shed", "unit": 1, "profile": "smoke_gas_detector", "poll_interval": 0.2},
    {"id": "smoke-hall", "unit": 2, "profile": "smoke_gas_detector", "poll_interval": 0.2},
    {"id": "door-101", "unit": 10, "profile": "door_lock", "poll_interval": 0.3},
    {"id": "meter-101", "unit": 20, "profile": "water_meter", "poll_interval": 0.3},
    {"id": "sounder", "unit": 30, "profile": "relay_module", "poll_interval": 0.5},
]
COMMUNITY_RULES = {"rules": [{"id": "smoke-alarm", "type": "state", "devices": ["smoke-shed", "smoke-hall"], "point": "alarm",
                              "to": True, "severity": "critical", "reraise": "each_episode",
                              "outputs": [{"device": "sounder", "point": "sounder"}]}]}
FAULTY_DEVICES = {"farm": ["soil-1", "soil-2", "weather", "tank"], "community": ["door-101", "meter-101"]}


def smoke_alarms(sim):
    """Each cycle, toggle a smoke detector: every new episode is an alarm."""
    def source(rng):
        dev = sim.device(rng.choice(["smoke-shed", "smoke-hall"])).model
        if rng.random() < 0.5:
            dev.trigger_smoke()
        else:
            dev.clear()
    return source


@dataclass
class ChaosResult:
    cycles: int
    faults: Counter
    accepted: dict[str, int]
    delivered: dict[str, int]
    lost: dict[str, list[int]]
    duplicated: dict[str, int]
    out_of_order: dict[str, int]
    reconciled: bool
    counters: dict[str, dict]
    seconds: float
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(self.lost.values()) and not any(self.out_of_order.values()) and self.reconciled

    def as_json(self) -> dict:
        return {
            "bench": "chaos",
            "cycles": self.cycles,
            "faults": dict(self.faults),
            "accepted": self.accepted,
            "delivered_unique": self.delivered,
            "lost": sum(len(v) for v in self.lost.values()),
            "lost_by_lane": {k: len(v) for k, v in self.lost.items()},
            "duplicated": sum(self.duplicated.values()),
            "duplicated_by_lane": self.duplicated,
            "out_of_order": sum(self.out_of_order.values()),
            "reconciled": self.reconciled,
            "seconds": round(self.seconds, 1),
            "ok": self.ok,
        }


def run_chaos(workdir: Path, sim, *, cycles: int = 30, seed: int = 1, cycle_seconds: tuple[float, float] = (0.6, 1.6),
              log=lambda msg: None, alarm_source=None, site: str = "farm") -> ChaosResult:
    """Run ``cycles`` random faults against a gateway polling ``sim`` (a SimThread).

    ``alarm_source(rng)``, if given, is called every cycle and may make the
    simulator raise an alarm condition (e.g. trigger smoke).
    """
    rng = random.Random(seed)
    t0 = time.monotonic()
    broker = Mosquitto(workdir).start()
    proxy = FaultProxyThread("127.0.0.1", broker.port)
    sub = Subscriber(broker.port, client_id=f"chaos-sub-{seed}")
    extra = {"rules": COMMUNITY_RULES} if site == "community" else {}
    if site == "community" and alarm_source is None:
        alarm_source = smoke_alarms(sim)
    cfg = site_config(
        workdir, sim_port=sim.port,
        broker={"host": "127.0.0.1", "port": proxy.port, "keepalive": 5, "max_inflight": 16, "connect_timeout": 3},
        devices=COMMUNITY_DEVICES if site == "community" else None, store={"commit_interval": 0.2}, **extra,
    )
    gw = GatewayProcess(cfg).start()
    faults: Counter = Counter()
    notes: list[str] = []
    try:
        wait_until(lambda: sub.seqs("telemetry"), 20, what="first telemetry")
        for i in range(cycles):
            fault = rng.choice(FAULTS)
            faults[fault] += 1
            if alarm_source is not None:
                alarm_source(rng)
            hold = rng.uniform(*cycle_seconds)
            if fault == "kill9":
                time.sleep(rng.uniform(0, hold))
                gw.kill9()
                gw = GatewayProcess(cfg).start()
            elif fault == "broker_restart":
                broker.stop()
                sub.client.loop_stop()  # the subscriber reconnects with its persistent session
                time.sleep(hold)
                broker.start()
                sub.close()
                sub = _resubscribe(sub, broker.port, seed)
            elif fault == "blackhole":
                proxy.blackhole()
                time.sleep(hold)
                proxy.passthrough()
            elif fault == "reset":
                proxy.reset()
                time.sleep(hold / 2)
            elif fault == "slow":
                proxy.throttle(rng.choice([2_000, 20_000, 200_000]))
                time.sleep(hold)
                proxy.passthrough()
            elif fault == "device":
                dev = rng.choice(FAULTY_DEVICES[site])
                sim.device(dev).fault = rng.choice(["silent", "exception", None])
                time.sleep(hold)
            log(f"cycle {i + 1}/{cycles}: {fault}")
        proxy.passthrough()
        if not gw.alive():
            gw = GatewayProcess(cfg).start()
        # Heal the link and stop new readings (every device answers with an exception:
        # a finite number of status events, no telemetry), so the outbox can drain to
        # a true zero; everything accepted must then have arrived.
        for dev in sim.sim.devices:
            dev.fault = "exception"
        store = workdir / "outbox.sqlite"
        wait_until(lambda: _pending(store) == 0 and (time.sleep(0.6) or _pending(store) == 0), 90, interval=0.3,
                   what="outbox drained after the chaos")
        rc, _ = gw.terminate()
        if rc != 0:
            notes.append(f"gateway exit code {rc}")
        time.sleep(0.5)
        accepted = _accepted(store)
        counters = _counters(store)
        received = {lane: sub.seqs(lane) for lane in LANES}
    finally:
        gw.close()
        sub.close()
        proxy.stop()
        broker.stop()
    lost, dup, ooo, delivered = {}, {}, {}, {}
    for lane in LANES:
        seen = received[lane]
        unique = set(seen)
        delivered[lane] = len(unique)
        dropped = counters.get(lane, {}).get("dropped", 0) + counters.get(lane, {}).get("expired", 0)
        missing = sorted(set(range(1, accepted[lane] + 1)) - unique)
        lost[lane] = missing if not dropped else []  # a policy drop is not a loss: it is counted
        if dropped:
            notes.append(f"{lane}: {dropped} records dropped/expired by policy")
        dup[lane] = len(seen) - len(unique)
        firsts, seen_set, bad = [], set(), 0
        for s in seen:
            if s not in seen_set:
                if firsts and s < firsts[-1]:
                    bad += 1
                firsts.append(s)
                seen_set.add(s)
        ooo[lane] = bad
    reconciled = all(c["produced"] == c["acknowledged"] + c["pending"] + c["expired"] + c["dropped"] for c in counters.values())
    return ChaosResult(cycles, faults, accepted, delivered, lost, dup, ooo, reconciled, counters, time.monotonic() - t0, notes)


def _resubscribe(old: Subscriber, port: int, seed: int) -> Subscriber:
    new = Subscriber(port, client_id=f"chaos-sub-{seed}")
    with old.lock:
        new.messages[:0] = old.messages  # keep what arrived before the restart
    return new


def _pending(store: Path) -> int:
    con = sqlite3.connect(store)
    try:
        return sum(con.execute(f"SELECT count(*) FROM {lane}").fetchone()[0] for lane in LANES)
    finally:
        con.close()


def _accepted(store: Path) -> dict[str, int]:
    con = sqlite3.connect(store)
    try:
        rows = dict(con.execute("SELECT name, seq FROM sqlite_sequence").fetchall())
    finally:
        con.close()
    return {lane: rows.get(lane, 0) for lane in LANES}


def _counters(store: Path) -> dict[str, dict]:
    con = sqlite3.connect(store)
    try:
        out: dict[str, dict] = {lane: {"produced": 0, "acknowledged": 0, "expired": 0, "dropped": 0} for lane in LANES}
        for lane, name, value in con.execute("SELECT lane, name, value FROM counters"):
            key = "dropped" if name.startswith("dropped:") else name
            out[lane][key] = out[lane].get(key, 0) + value
        for lane in LANES:
            out[lane]["pending"] = con.execute(f"SELECT count(*) FROM {lane}").fetchone()[0]
        return out
    finally:
        con.close()
