#!/usr/bin/env python3
"""Event-loop lag while 100 commands are stored on a slow disk (the command store's fsync off the loop).

Prints exactly one JSON line on stdout (progress goes to stderr).

What runs: the real ``CommandService`` (intake, Ed25519 verification, replay
ids, the valve arbiter, the async ``CommandStore`` in WAL with
``synchronous=FULL``) with a real clock, on the site of the command tests
(tests/gateway/commands/support.py) with in-memory relay and lock doubles.
100 commands -- ``irrigate`` and ``close`` on zones 1-3 and ``unlock`` and
``lock`` on a door, in turn -- are signed with real Ed25519 keys and handed to
``on_command`` at once (``commands.queue`` raised to hold them); the run ends
when all 100 are answered.  Records go to an in-memory sink, not the outbox
(the outbox has its own writer; this measures the command path).

The slow disk: fsync is slowed through the store's injectable commit hook
(``CommandStore(on_commit=...)``), called on the store's writer thread as each
COMMIT starts, i.e. right before SQLite's fsync; it sleeps ``--fsync-ms``.
No LD_PRELOAD shim.  The baseline is the same run with no hook (the real
fsync of this machine's disk).

A ticker on the loop sleeps 1 ms and records how late it woke: that lateness
is the loop's lag (``loop_lag_p99_ms``, target < 5 ms).  ``ratio`` is the slow
run's p99 over the baseline's.  The measured process is pinned to core 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import log, machine, pin_self  # noqa: E402
from core.clock import Clock  # noqa: E402
from core.protocol import envelope  # noqa: E402
from core.records import Reading  # noqa: E402
from gateway.commands.service import CommandService  # noqa: E402
from gateway.config.load import load_config  # noqa: E402
from tests.gateway.commands.support import DUTY, FARMER, GATEWAY, SITE, FakeDevice, FakeLock, commands, write_site  # noqa: E402

TARGET_MS = 5.0
TICK_S = 0.001
TOPIC = f"canopy/v1/{SITE}/{GATEWAY}/cmd"


def command_payloads(n: int) -> list[bytes]:
    """``n`` signed commands: irrigate/close per zone and unlock/lock on door-101, in turn."""
    plan = [("farmer", FARMER, "irrigate", "zone-1", {"duration_s": 600}), ("farmer", FARMER, "close", "zone-1", None),
            ("farmer", FARMER, "irrigate", "zone-2", {"duration_s": 600}), ("farmer", FARMER, "close", "zone-2", None),
            ("duty", DUTY, "unlock", "door-101", None), ("duty", DUTY, "lock", "door-101", None),
            ("farmer", FARMER, "irrigate", "zone-3", {"duration_s": 600}), ("farmer", FARMER, "close", "zone-3", None)]
    out = []
    for i in range(n):
        issuer, key, action, target, params = plan[i % len(plan)]
        env = envelope.make(issuer=issuer, site=SITE, gateway=GATEWAY, target=target, action=action, params=params,
                            valid_for=600, id=f"bench-{i:04d}")
        out.append(json.dumps(envelope.sign(env, key)).encode())
    return out


def farm_readings(now: float) -> list[Reading]:
    """Fresh readings that keep every interlock open (moist enough, no rain, tank full)."""
    out = [Reading(now, f"soil-{n}", "moisture", 25.0) for n in (1, 2, 3)]
    return out + [Reading(now, "weather", "rain_detected", False), Reading(now, "tank", "level", 1.5),
                  Reading(now, "meter-farm", "flow_rate", 0.0)]


async def started_service(cfg, state: Path, sink, on_commit) -> CommandService:
    """The real service on relay and lock doubles, started, its link up, fresh readings in."""
    devices = {"valves": FakeDevice("valves", "valve_relay"), "door-101": FakeLock("door-101"),
               "door-201": FakeLock("door-201")}
    state.mkdir()
    svc = CommandService(cfg, Clock(), sink, devices, str(state), on_commit=on_commit)
    await svc.start()
    svc.on_link(True)
    svc.observe(farm_readings(time.time()))
    await svc.drain()
    return svc


async def one_run(n: int, fsync_s: float | None) -> dict:
    commits = 0

    def slow_fsync() -> None:
        nonlocal commits
        commits += 1
        time.sleep(fsync_s)

    with tempfile.TemporaryDirectory(prefix="canopy-looplag-") as d:
        tmp = Path(d)
        cfg = load_config(write_site(tmp, commands(queue=max(64, n))))
        answered: set[str] = set()

        async def sink(lane: str, body: bytes, topic: str | None = None) -> None:
            rec = json.loads(body)
            if rec.get("type") == "cmd.result" and rec.get("status") in ("executed", "rejected", "failed"):
                answered.add(rec["id"])
                if rec["status"] != "executed":
                    log(f"  {rec['id']}: {rec['status']} {rec.get('reason')} {rec.get('detail')}")

        svc = await started_service(cfg, tmp / "state", sink, slow_fsync if fsync_s else None)
        worker = asyncio.create_task(svc.run())
        payloads = command_payloads(n)
        commits_before = commits
        loop = asyncio.get_running_loop()
        lags: list[float] = []
        done = asyncio.Event()

        async def ticker() -> None:
            while not done.is_set():
                t = loop.time()
                await asyncio.sleep(TICK_S)
                lags.append(loop.time() - t - TICK_S)

        tick = asyncio.create_task(ticker())
        await asyncio.sleep(0.05)
        t0 = time.perf_counter()
        for p in payloads:
            svc.on_command(TOPIC, p)
        while len(answered) < n:
            await asyncio.sleep(0.01)
        seconds = time.perf_counter() - t0
        done.set()
        await tick
        await svc.stop()
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)
    lags_ms = sorted(x * 1000 for x in lags)
    return {"loop_lag_p50_ms": round(statistics.median(lags_ms), 3),
            "loop_lag_p99_ms": round(lags_ms[min(len(lags_ms) - 1, int(0.99 * len(lags_ms)))], 3),
            "loop_lag_max_ms": round(lags_ms[-1], 3), "ticks": len(lags_ms), "seconds": round(seconds, 3),
            "commands_per_s": round(n / seconds, 1), "executed": svc.counters["executed"],
            "slow_commits": commits - commits_before if fsync_s else None}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--commands", type=int, default=100)
    ap.add_argument("--fsync-ms", type=float, default=100.0, help="how long each COMMIT's fsync takes on the slow disk")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    pinned = pin_self()
    load_before = os.getloadavg()
    log(f"slow disk: {args.commands} commands, fsync {args.fsync_ms:g} ms")
    slow = asyncio.run(one_run(args.commands, args.fsync_ms / 1000))
    log(f"  {slow}")
    log("baseline: the same with a fast commit")
    fast = asyncio.run(one_run(args.commands, None))
    log(f"  {fast}")
    out = {"bench": "looplag", "commands": args.commands, "slow_fsync_ms": args.fsync_ms,
           "loop_lag_p99_ms": slow["loop_lag_p99_ms"], "baseline_loop_lag_p99_ms": fast["loop_lag_p99_ms"],
           "ratio": round(slow["loop_lag_p99_ms"] / fast["loop_lag_p99_ms"], 3) if fast["loop_lag_p99_ms"] > 0 else None,
           "target_ms": TARGET_MS, "ok": slow["loop_lag_p99_ms"] < TARGET_MS,
           "slow": slow, "baseline": fast,
           "machine": {**machine(), "pinned_core": 0 if pinned else None,
                       "loadavg_1m": [round(load_before[0], 2), round(os.getloadavg()[0], 2)]}}
    print(json.dumps(out, separators=(",", ":")), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
