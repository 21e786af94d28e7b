"""`python -m simulator demo`: simulator + embedded broker + the real daemon, watched from the broker.

Everything shown comes from what the broker delivered, so the view proves the
whole path: polled -> committed -> published -> acknowledged.  A device is
made to fail for a few seconds half-way, to show errors and recovery.

The demo starts the broker itself: mosquitto (MQTT 5) when it is installed,
else amqtt, which speaks MQTT 3.1.1 only; the screen then says what that loses.

The centre runs beside the gateway (simulator/demo_centre.py): SQLite in
.demo/<site>/, demo users with one-time passwords, the site's issuer key
trusted by the gateway, the console URL printed, its figures in the view.

Ctrl-C or SIGTERM stops it the way it stops with ``--duration``: the gateway
gets SIGTERM (if a terminal's Ctrl-C has not reached it already), the view
reads what the broker still delivers, the centre takes the rest and stops,
and the verdict is printed.  Exit codes: 0 readings flowed end to end (and,
run to its end, the centre stored every one), 1 they did not, 130 stopped
before the first readings arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import yaml
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from core.mqtt import BrokerEndpoint, MqttClient, MqttConnectError, MqttError
from core.protocol.meta import describe as place
from core.protocol.receiver import Receiver
from core.yamlsrc import load_yaml
from gateway.uplink.embedded_broker import MQTT311_LOSES, EmbeddedBroker

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
        self.meta: dict = {}
        self.new_meta = False  # not yet printed (non-interactive view)
        self.receiver = Receiver()
        self.started = time.monotonic()
        self.centre = None  # simulator.demo_centre.DemoCentre, once it runs: its line in the view

    def on_message(self, topic: str, payload: bytes) -> None:
        """Through the reference receiver: a lifecycle record comes on …/event and on every paged
        group's topic, and is shown once (de-duplicated by epoch, lane and seq)."""
        got = self.receiver.receive(topic, payload)
        if got.kind not in ("batch", "state", "meta"):
            return
        self.messages += 1
        if got.kind == "batch" and got.lane == "telemetry":
            for r in got.records:
                self.telemetry_records += 1
                self.seqs.add(r["seq"])
                self.latest[(r["device"], r["point"])] = (r["value"], r.get("unit", ""), r["ts"])
        elif got.kind == "batch":  # …/event, …/alert/{group}, …/cmd/result
            self.events = [*self.events, *got.records][-6:]
            self.new_events = [*self.new_events, *got.records][-50:]
        elif got.kind == "state":
            body = self.receiver.state(got.topic.site, got.topic.gateway) or {}
            if body.get("status") == "online":
                self.state = body
            else:
                self.final = body
        else:  # retained: what the devices are and where, for people
            self.meta, self.new_meta = self.receiver.meta(got.topic.site, got.topic.gateway) or {}, True

    def where(self, device: str) -> str:
        """A device's place in words, from the retained …/meta alone (its id until meta arrived)."""
        return place(self.meta, device, (self.meta.get("languages") or ["en"])[0]) if self.meta else device

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
            "readings committed ", (str(outbox.get("produced", "–")), "cyan"),
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
            name = Text.assemble(dev, ("\n" + self.where(dev), "dim")) if self.where(dev) != dev else Text(dev)
            for i, (p, (v, unit, _)) in enumerate(points):
                table.add_row(name if i == 0 else "", Text(st, style=style) if i == 0 else "", p,
                              f"{v:.2f}" if isinstance(v, float) else str(v), unit)
        events = Table(show_header=False, show_edge=False, box=None)
        for e in self.events:
            events.add_row(Text(f"#{e['seq']}", style="magenta"), describe(e))
        centre = [Text(self.centre.line(), style="blue")] if self.centre is not None else []
        return Group(head, flow, *centre, table, Text("recent events", style="bold"), events)

    def summary_line(self) -> str:
        outbox = self.state.get("outbox", {}).get("telemetry", {})
        return (f"[{time.monotonic() - self.started:5.1f}s] broker delivered {self.telemetry_records} readings "
                f"in {self.messages} messages; gateway committed {outbox.get('produced', 0)}, "
                f"acknowledged {outbox.get('acknowledged', 0)}; sequence gaps {self.gaps()}; events {len(self.events)}"
                + (f"; centre stored {int(self.centre.figures.get('stored', 0))}" if self.centre is not None else ""))


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


def _site_config(site: str) -> dict:
    # Canopy's own loader: PyYAML's safe_load would turn keys like `on:` into True
    return load_yaml(ROOT / "config" / f"{site}.yaml").data


def _demo_config(site: str, workdir: Path, sim_port: int, broker: EmbeddedBroker, commands: dict | None) -> Path:
    """The site's config on the demo's simulator, broker and folder; ``commands:`` trusting the centre, if it runs."""
    data = _site_config(site)
    data["profiles_dir"] = str(ROOT / "config" / "profiles")
    data["broker"] = {**broker.broker_section(), "backoff_initial": 0.2, "backoff_max": 2.0}
    data["store"] = {**data.get("store", {}), "path": str(workdir / f"{site}-outbox.sqlite")}
    for bus in data["buses"]:
        bus["port"] = sim_port
    data["uplink"] = {"state_interval": 2}
    if commands:
        data["commands"] = commands
    out = workdir / f"{site}.yaml"
    out.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return out


def _stop_event() -> asyncio.Event:
    """Set by Ctrl-C or SIGTERM: from then on the demo winds down instead of raising KeyboardInterrupt."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, _stopped_by, stop, sig)
    return stop


def _stopped_by(stop: asyncio.Event, sig: int) -> None:
    """A terminal's Ctrl-C reaches the whole process group: the children stop by themselves then."""
    stop.group_interrupted = getattr(stop, "group_interrupted", False) or sig == signal.SIGINT
    stop.set()


async def _start_gateway(cfg: Path, log_file) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(sys.executable, "-m", "gateway", "run", "-c", str(cfg),
                                                stdout=log_file, stderr=log_file)


async def _start_broker(console: Console, workdir: Path) -> EmbeddedBroker:
    """mosquitto (MQTT 5) when installed, else amqtt (MQTT 3.1.1), said on screen with what 3.1.1 loses."""
    handler = logging.FileHandler(workdir / "broker.log")  # amqtt runs in this process: its log is not the view
    for name in ("amqtt", "transitions", "canopy.broker"):
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.propagate = False
    broker = EmbeddedBroker()
    await broker.start()
    if broker.protocol == "5":
        console.print(f"broker: {broker.kind} on 127.0.0.1:{broker.port}, MQTT 5")
    else:
        console.print(f"[yellow]broker: {broker.kind} on 127.0.0.1:{broker.port}, MQTT 3.1.1 only "
                      f"(install mosquitto for MQTT 5). What 3.1.1 loses:[/]")
        for line in MQTT311_LOSES:
            console.print(f"[yellow]  - {line}[/]")
    return broker


async def _stop_gateway(proc: asyncio.subprocess.Process, group_interrupted: bool = False) -> int:
    """SIGTERM, then its exit code; after a terminal's Ctrl-C it is given time to stop by itself first."""
    if group_interrupted:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(proc.wait()), 10)
    if proc.returncode is None:
        try:
            proc.send_signal(signal.SIGTERM)
        except ProcessLookupError:  # it exited on its own, and was not reaped yet
            pass
    try:
        return await asyncio.wait_for(proc.wait(), 10)
    except TimeoutError:
        try:
            proc.kill()
        except ProcessLookupError:
            pass
        await proc.wait()
        return -9


async def _connect_view(broker: EmbeddedBroker, stop: asyncio.Event, timeout: float = 15.0) -> MqttClient | None:
    """Connect the view to the broker, in the broker's MQTT version; None if it never answered (or we were stopped)."""
    client = MqttClient(BrokerEndpoint(broker.host, broker.port), client_id=f"canopy-demo-{os.getpid()}",
                        connect_timeout=2.0, protocol=broker.protocol)  # type: ignore[arg-type]
    deadline = time.monotonic() + timeout
    while not stop.is_set():
        try:
            await client.connect()
            await client.subscribe("canopy/v1/#", qos=1)
            return client
        except MqttConnectError:
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(0.2)
    return None


async def _read_into(client: MqttClient, watch: Watch) -> None:
    """Feed the view until the broker goes away (it stops with the gateway)."""
    try:
        async for msg in client.messages():
            watch.on_message(msg.topic, msg.payload)
    except MqttError:
        pass


class FaultScript:
    """Half-way through, one device goes silent for ~5 s (and, on the community site, smoke in the shed)."""

    def __init__(self, site: str, sim):
        self.site, self.sim = site, sim
        self.t0 = time.monotonic()
        self.on = self.off = False

    def tick(self) -> None:
        elapsed = time.monotonic() - self.t0
        faulty = self.sim.device(FAULTY[self.site])
        if elapsed > 6 and not self.on:
            faulty.fault = "silent"
            if self.site == "community":
                self.sim.device("smoke-shed").model.trigger_smoke()  # C2: a smoke alarm, the sounder, escalation
            self.on = True
        if elapsed > 11 and not self.off:
            faulty.fault = None
            if self.site == "community":
                self.sim.device("smoke-shed").model.clear()
            self.off = True


async def _show(console: Console, site: str, watch: Watch, script: FaultScript, stop: asyncio.Event, duration: float) -> None:
    """The live view on a terminal, else a summary line every 2 s; until stopped or ``duration`` is over."""
    def running() -> bool:
        return not stop.is_set() and (duration == 0 or time.monotonic() - script.t0 < duration)

    if console.is_terminal:
        with Live(watch.render(site), console=console, refresh_per_second=4) as live:
            while running():
                script.tick()
                live.update(watch.render(site))
                await _pause(stop, 0.25)
        return
    next_line = 0.0
    while running():
        script.tick()
        if watch.new_meta:
            devices = watch.meta.get("devices", {})
            example = next((d for d in devices if watch.where(d) != d), next(iter(devices), None))
            print(f"           meta {watch.meta.get('version')}: {len(watch.meta.get('devices', {}))} devices described"
                  + (f", e.g. {example}: {watch.where(example)}" if example else ""), flush=True)
            watch.new_meta = False
        for e in watch.new_events[:]:
            print(f"           {e.get('type', '')} #{e.get('seq')}: {describe(e)}", flush=True)
        watch.new_events.clear()
        if time.monotonic() - script.t0 >= next_line:
            print(watch.summary_line(), flush=True)
            next_line += 2
        await _pause(stop, 0.25)


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        pass


def _verdict(watch: Watch, rc: int, interrupted: bool, log_path: str, centre: tuple[bool, str]) -> int:
    print(watch.summary_line())
    print(f"gateway exited with code {rc}; last state: {watch.final.get('status', '?')} ({watch.final.get('reason', '')})")
    print(centre[1])
    if watch.telemetry_records > 0 and watch.gaps() == 0 and rc == 0 and centre[0]:
        print("demo OK: readings flowed end to end, were acknowledged by the broker and stored by the centre")
        return 0
    if interrupted and watch.telemetry_records == 0:  # the gateway may not even have had its signal handlers yet
        print("demo stopped before the first readings arrived")
        return 130
    print(f"demo FAILED: see {log_path}" + ("" if centre[0] else " and the centre's log beside it"))
    return 1


async def run_demo(site: str = "farm", duration: float = 0) -> int:
    from simulator.demo_centre import start_centre
    from simulator.sites import start_site

    stop = _stop_event()
    console = Console()
    workdir = ROOT / ".demo" / site
    if workdir.exists():
        shutil.rmtree(workdir)  # a demo starts from nothing: outbox, alert and command state
    workdir.mkdir(parents=True, mode=0o700)  # the gateway and the centre keep keys and state in it
    log_path = os.path.relpath(workdir / "gateway.log")
    sim, _clock = await start_site(site, port=0, speed=60)
    watch, broker, client, reader, proc, rc = Watch(), None, None, None, None, -1
    centre, centre_verdict = None, (False, "centre: not started")
    log_file = open(log_path, "wb")
    try:
        try:
            broker = await _start_broker(console, workdir)
        except RuntimeError as exc:
            console.print(f"[red]{exc}[/]")
            return 1
        client = await _connect_view(broker, stop)
        if client is None and not stop.is_set():
            console.print(f"[red]the broker on port {broker.port} did not answer; see {workdir / 'broker.log'}[/]")
            return 1
        if client is not None:
            centre, commands = await start_centre(console, site, _site_config(site)["site"], workdir, broker, stop)
            watch.centre = centre
        if client is not None and not stop.is_set():
            reader = asyncio.create_task(_read_into(client, watch), name="demo-view")
            watch.started = time.monotonic()
            proc = await _start_gateway(_demo_config(site, workdir, sim.port, broker, commands), log_file)
            console.print(f"[bold]Canopy demo[/]: {site} simulator on 127.0.0.1:{sim.port} (60× time), broker on "
                          f"127.0.0.1:{broker.port}, gateway pid {proc.pid} (log: {log_path})")
            if centre.problem is None:
                for line in centre.announce():
                    console.print(line, markup=False, highlight=False, soft_wrap=True)
            await _show(console, site, watch, FaultScript(site, sim), stop, duration)
    finally:
        if proc is not None:
            rc = await _stop_gateway(proc, getattr(stop, "group_interrupted", False))
        await _last_words(watch, reader)
        if centre is not None:  # after the gateway: it takes what the gateway said last
            centre_verdict = await centre.finish(watch.telemetry_records, stop.is_set(),
                                                   getattr(stop, "group_interrupted", False))
        if client is not None:
            await client.disconnect()
        if broker is not None:
            await broker.stop()
        await sim.stop()
        log_file.close()
    return _verdict(watch, rc, stop.is_set(), log_path, centre_verdict)


async def _last_words(watch: Watch, reader: asyncio.Task | None, timeout: float = 2.0) -> None:
    """Let the view read what the broker still delivers (the gateway's `offline`), then stop reading."""
    deadline = time.monotonic() + timeout
    while reader is not None and not reader.done() and not watch.final and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    if reader is not None:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)


def main(argv: list[str] | None = None) -> int:
    """``python -m simulator demo``: the whole site on this machine, until Ctrl-C or ``--duration``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m simulator demo",
                                     description="simulators + embedded broker + gateway, with a live view")
    parser.add_argument("--site", default="farm", choices=["farm", "community"])
    parser.add_argument("--duration", type=float, default=0, help="seconds to run (0: until Ctrl-C)")
    args = parser.parse_args(argv)
    try:
        return asyncio.run(run_demo(args.site, args.duration))
    except KeyboardInterrupt:  # before the demo's own handlers were in place
        return 130
