"""`python -m simulator demo`: simulator + embedded broker + the real daemon, watched from the broker.

Everything shown comes from what the broker delivered, so the view proves the
whole path: polled -> committed -> published -> acknowledged.  A device is
made to fail for a few seconds half-way, to show errors and recovery.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import yaml
from paho.mqtt.enums import CallbackAPIVersion
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from core.yamlsrc import load_yaml
from gateway.uplink.embedded_broker import free_port

ROOT = Path(__file__).resolve().parent.parent
FAULTY = {"farm": "soil-3", "community": "meter-101"}


class Watch:
    """What the broker has delivered, per topic kind."""

    def __init__(self):
        self.latest: dict[tuple[str, str], tuple] = {}
        self.messages = 0
        self.telemetry_records = 0
        self.seqs: set[int] = set()
        self.events: list[dict] = []
        self.new_events: list[dict] = []  # not yet printed (non-interactive view)
        self.state: dict = {}
        self.final: dict = {}
        self.started = time.monotonic()

    def on_message(self, client, userdata, msg) -> None:
        try:
            body = orjson.loads(msg.payload)
        except orjson.JSONDecodeError:
            return
        self.messages += 1
        if msg.topic.endswith("/telemetry"):
            for r in body["records"]:
                self.telemetry_records += 1
                self.seqs.add(r["seq"])
                self.latest[(r["device"], r["point"])] = (r["value"], r.get("unit", ""), r["ts"])
        elif body.get("lane") in ("alarm", "event") and "records" in body:  # …/event, …/alert/{group}, …/cmd/result
            self.events.extend(body["records"])
            self.events = self.events[-6:]
            self.new_events.extend(body["records"])
            del self.new_events[:-50]
        elif msg.topic.endswith("/state"):
            if body.get("status") == "online":
                self.state = body
            else:
                self.final = body

    def gaps(self) -> int:
        if not self.seqs:
            return 0
        return (max(self.seqs) - min(self.seqs) + 1) - len(self.seqs)

    def render(self, site: str) -> Group:
        devices = self.state.get("devices", {})
        outbox = self.state.get("outbox", {}).get("telemetry", {})
        head = Text.assemble(
            ("Canopy demo ", "bold green"), (f"· site {site} · ", "dim"),
            f"{time.monotonic() - self.started:5.1f}s  ",
            ("gateway " + self.state.get("status", "connecting…"), "bold" if self.state.get("status") == "online" else "yellow"),
        )
        flow = Text.assemble(
            "readings committed ", (str(outbox.get("accepted", "–")), "cyan"),
            "  → acknowledged by broker ", (str(outbox.get("acknowledged", "–")), "cyan"),
            "  → received here ", (str(self.telemetry_records), "bold cyan"),
            f"  (seq {min(self.seqs) if self.seqs else '–'}…{max(self.seqs) if self.seqs else '–'}, gaps {self.gaps()})",
        )
        table = Table(expand=True, show_edge=False, header_style="bold")
        table.add_column("device")
        table.add_column("status")
        table.add_column("point")
        table.add_column("value", justify="right")
        table.add_column("unit")
        for dev in sorted({d for d, _ in self.latest} | set(devices)):
            st = devices.get(dev, {}).get("status", "?")
            style = "green" if st == "ok" else "red"
            points = sorted((p, v) for (d, p), v in self.latest.items() if d == dev) or [("–", ("", "", 0))]
            for i, (p, (v, unit, _)) in enumerate(points):
                table.add_row(dev if i == 0 else "", Text(st, style=style) if i == 0 else "", p,
                              f"{v:.2f}" if isinstance(v, float) else str(v), unit)
        events = Table(show_header=False, show_edge=False, box=None)
        for e in self.events:
            events.add_row(Text(f"#{e['seq']}", style="magenta"), describe(e))
        return Group(head, flow, table, Text("recent events", style="bold"), events)

    def summary_line(self) -> str:
        outbox = self.state.get("outbox", {}).get("telemetry", {})
        return (f"[{time.monotonic() - self.started:5.1f}s] broker delivered {self.telemetry_records} readings "
                f"in {self.messages} messages; gateway committed {outbox.get('accepted', 0)}, "
                f"acknowledged {outbox.get('acknowledged', 0)}; sequence gaps {self.gaps()}; events {len(self.events)}")


def describe(e: dict) -> str:
    """One line for a record of the event or alarm lane."""
    kind = e.get("type", "")
    if kind == "device.status":
        return f"{kind}: {e.get('device', '')} {e.get('previous', '')} → {e.get('status', '')} {e.get('detail', '')}"
    if kind.startswith("alert."):
        msg = e.get("message") or e.get("rule", "")
        if isinstance(msg, dict):
            msg = msg.get("en") or next(iter(msg.values()), "")
        return f"{kind} [{e.get('severity', '')}] {e.get('group') or ''} {msg}".strip()
    return f"{kind}: " + ", ".join(f"{k}={v}" for k, v in e.items() if k not in ("seq", "ts", "type"))[:120]


def _demo_config(site: str, workdir: Path, sim_port: int) -> Path:
    # Canopy's own loader: PyYAML's safe_load would turn keys like `on:` into True
    data = load_yaml(ROOT / "config" / f"{site}.yaml").data
    data["profiles_dir"] = str(ROOT / "config" / "profiles")
    data["store"] = {**data.get("store", {}), "path": str(workdir / f"{site}-outbox.sqlite")}
    for bus in data["buses"]:
        bus["port"] = sim_port
    data["uplink"] = {"state_interval": 2}
    out = workdir / f"{site}.yaml"
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


async def run_demo(site: str = "farm", duration: float = 0) -> int:
    from simulator.sites import start_site

    console = Console()
    workdir = ROOT / ".demo" / site
    if workdir.exists():
        shutil.rmtree(workdir)  # a demo starts from nothing: outbox, alert and command state
    workdir.mkdir(parents=True)
    sim, _clock = await start_site(site, port=0, speed=60)
    broker_port = free_port()
    cfg = _demo_config(site, workdir, sim.port)
    env = dict(os.environ, CANOPY_EMBEDDED_BROKER_PORT=str(broker_port))
    log_file = open(workdir / "gateway.log", "wb")  # .demo/<site>/gateway.log
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "gateway", "run", "-c", str(cfg),
                                                stdout=log_file, stderr=log_file, env=env)
    console.print(f"[bold]Canopy demo[/]: {site} simulator on 127.0.0.1:{sim.port} (60× time), embedded broker on "
                  f"127.0.0.1:{broker_port}, gateway pid {proc.pid} (log: .demo/{site}/gateway.log)")
    watch = Watch()
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"canopy-demo-{os.getpid()}")
    sub.on_message = watch.on_message
    sub.on_connect = lambda c, u, f, rc, p: c.subscribe("canopy/v1/#", qos=1)
    deadline = time.monotonic() + 15
    while True:
        try:
            sub.connect("127.0.0.1", broker_port)
            break
        except OSError:
            if time.monotonic() > deadline or proc.returncode is not None:
                console.print("[red]the gateway's embedded broker did not come up; see .demo/<site>/gateway.log[/]")
                proc.terminate()
                await sim.stop()
                return 1
            await asyncio.sleep(0.2)
    sub.loop_start()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    faulty = FAULTY[site]
    interactive = console.is_terminal and duration == 0
    t0 = time.monotonic()
    fault_on = fault_off = False

    async def tick() -> None:
        nonlocal fault_on, fault_off
        elapsed = time.monotonic() - t0
        if elapsed > 6 and not fault_on:
            sim.device(faulty).fault = "silent"
            if site == "community":
                sim.device("smoke-shed").model.trigger_smoke()  # C2: a smoke alarm, the sounder, escalation
            fault_on = True
        if elapsed > 11 and not fault_off:
            sim.device(faulty).fault = None
            if site == "community":
                sim.device("smoke-shed").model.clear()
            fault_off = True

    try:
        if interactive or console.is_terminal:
            with Live(watch.render(site), console=console, refresh_per_second=4) as live:
                while not stop.is_set() and (duration == 0 or time.monotonic() - t0 < duration):
                    await tick()
                    live.update(watch.render(site))
                    await asyncio.sleep(0.25)
        else:
            next_line = 0.0
            while not stop.is_set() and (duration == 0 or time.monotonic() - t0 < duration):
                await tick()
                for e in watch.new_events[:]:
                    print(f"           {e.get('type', '')} #{e.get('seq')}: {describe(e)}", flush=True)
                watch.new_events.clear()
                if time.monotonic() - t0 >= next_line:
                    print(watch.summary_line(), flush=True)
                    next_line += 2
                await asyncio.sleep(0.25)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = await asyncio.wait_for(proc.wait(), 10)
        except asyncio.TimeoutError:
            proc.kill()
            rc = -9
        await asyncio.sleep(0.3)
        sub.loop_stop()
        sub.disconnect()
        await sim.stop()
        log_file.close()
    print(watch.summary_line())
    print(f"gateway exited with code {rc}; last state: {watch.final.get('status', '?')} ({watch.final.get('reason', '')})")
    ok = watch.telemetry_records > 0 and watch.gaps() == 0 and rc == 0
    print("demo OK: readings flowed end to end and were acknowledged by the broker" if ok else
          "demo FAILED: see .demo/<site>/gateway.log")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    """``python -m simulator demo``: the whole site on this machine, until Ctrl-C or ``--duration``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m simulator demo",
                                     description="simulators + embedded broker + gateway, with a live view")
    parser.add_argument("--site", default="farm", choices=["farm", "community"])
    parser.add_argument("--duration", type=float, default=0, help="seconds to run (0: until Ctrl-C)")
    args = parser.parse_args(argv)
    return asyncio.run(run_demo(args.site, args.duration))
