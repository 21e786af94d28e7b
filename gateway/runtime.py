"""The daemon: wires drivers -> pollers -> outbox -> uplink, and shuts down cleanly.

Nothing here does protocol work; it builds the pieces from a validated config,
starts their tasks, publishes health and the site's retained ``…/meta``, and
stops them in the order that loses nothing: stop polling, commit what was
polled, say "offline", close.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from typing import TYPE_CHECKING

import orjson

from core.clock import Clock
from core.protocol.topics import Topics
from core.records import Reading, event_body, reading_body
from core.tasks import cancel_all
from gateway import __version__
from gateway.alerts.engine import AlertEngine
from gateway.config.broker import BrokerConfig
from gateway.config.meta import site_meta_payload
from gateway.config.site import LoadedConfig
from gateway.outbox.store import Outbox, StorePolicy
from gateway.poll.health import DeviceStatus, Health
from gateway.poll.poller import DevicePoller, Pollable
from gateway.poll.registry import BuiltBus, build_bus
from gateway.uplink.embedded_broker import EmbeddedBroker
from gateway.uplink.uplink import Uplink

if TYPE_CHECKING:  # imported where they start: OpenCV/LiteRT and the command store only where configured
    from gateway.commands.service import CommandService
    from inference.service import CameraService

log = logging.getLogger("canopy")


class Gateway:
    def __init__(self, cfg: LoadedConfig, clock: Clock | None = None):
        self.cfg = cfg
        self.site = cfg.site
        self.clock = clock or Clock()
        self.topics = Topics(self.site.site, self.site.gateway)
        self.health = Health(on_change=self._device_changed)
        self.outbox = Outbox(
            cfg.resolve(self.site.store.path),
            commit_interval=self.site.store.commit_interval,
            queue_size=self.site.store.queue_size,
            clock=self.clock,
            policy=StorePolicy(
                max_bytes=self.site.store.max_bytes,
                alarm_reserve=self.site.store.alarm_reserve,
                telemetry_ttl=self.site.store.telemetry_ttl,
                event_ttl=self.site.store.event_ttl,
                thin_keep_every=self.site.store.thin_keep_every,
            ),
        )
        self.uplink: Uplink | None = None
        self.alerts: AlertEngine | None = None
        self.commands: CommandService | None = None  # when the site has `commands:`
        self.cameras: CameraService | None = None  # when the site has cameras
        self._devices: dict[str, Pollable] = {}  # by device id; Modbus devices also `write` (commands, alert outputs)
        self.embedded: EmbeddedBroker | None = None
        self.buses: list[BuiltBus] = []
        self.pollers: list[DevicePoller] = []
        self.readings_polled = 0
        self._tasks: list[asyncio.Task] = []
        self._bg: set[asyncio.Task] = set()
        self._state_dirty = asyncio.Event()
        self.meta_version: str | None = None  # the config's hash, named in …/state -> meta
        self._meta: bytes | None = None
        self._describe_site(cfg)

    # -- assembly ---------------------------------------------------------------
    def _build_devices(self) -> None:
        for bus_cfg in self.site.buses:
            bus = build_bus(bus_cfg, self.cfg.profiles, self.clock)
            self.buses.append(bus)
            for dev_cfg, device in bus.devices:
                self._devices[dev_cfg.id] = device
                self.health.register(dev_cfg.id, bus.id)
                self.pollers.append(DevicePoller(device, dev_cfg.poll_interval, self._accept_readings, self.health, self.clock))

    async def _accept_readings(self, readings: list[Reading]) -> None:
        self.readings_polled += len(readings)
        if self.alerts is not None:
            self.alerts.observe(readings)
        if self.commands is not None:
            self.commands.observe(readings)
        await self.outbox.put("telemetry", [reading_body(r) for r in readings], ts=readings[0].ts if readings else None)

    def _device_changed(self, st: DeviceStatus, previous: str) -> None:
        if previous == "unknown" and st.status == "ok":
            return  # first successful poll is not news
        body = event_body(self.clock.time(), "device.status", device=st.id, bus=st.bus, status=st.status,
                          previous=previous, detail=st.detail)
        self._spawn(self.outbox.put("event", [body]))
        self._state_dirty.set()

    async def _emit(self, lane: str, body: bytes, topic: str | None = None) -> list[int] | None:
        """Alerts and events from the services: accepted once durably committed; returns the seqs.

        ``topic`` is the suffix under ``canopy/v1/{site}/{gateway}/`` (``cmd/result``, ``alert/{group}``);
        None sends the record on its lane's own topic.
        """
        return await self.outbox.put(lane, [body], wait_commit=True, topic=topic)

    async def write_point(self, device_id: str, point: str, value) -> None:
        """Drive a local output (sounder relay, valve) through its device's bus."""
        await self._devices[device_id].write(point, value)  # type: ignore[attr-defined]

    def _spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)

    # -- …/meta -----------------------------------------------------------------
    def _describe_site(self, cfg: LoadedConfig) -> bool:
        """Build the meta document of ``cfg``; True when its version differs from the one we had."""
        try:
            version, payload = site_meta_payload(cfg)
        except ValueError as exc:  # a validated config always has one; never let it stop the gateway
            log.error("cannot describe this site on …/meta (%s): receivers will show device ids only", exc)
            return False
        changed = version != self.meta_version
        self.meta_version, self._meta = version, payload
        return changed

    def publish_meta(self) -> None:
        """Hand ``…/meta`` to the uplink: retained, QoS 1, now when connected and again on every connect.

        Every connect rather than only when the broker's copy is older: knowing the
        broker's copy would take a subscription to our own ``…/meta``, which the
        protocol does not make, and a retained document of a few KiB per connect is
        cheap.  A broker that lost its retained store (restarted without
        persistence) is thereby repaired at once, before the gateway says "online".
        """
        if self._meta is not None and self.uplink is not None:
            self.uplink.retain(self.topics.meta, self._meta)

    def config_changed(self, cfg: LoadedConfig) -> bool:
        """A new config took effect: rebuild ``…/meta`` and republish it when its version changed."""
        if not self._describe_site(cfg):
            return False
        self.publish_meta()
        self._state_dirty.set()  # …/state names the new version
        return True

    def state(self) -> dict:
        up = self.uplink
        return {
            "version": __version__,
            "boot": self.outbox.boot,
            "ts": round(self.clock.time(), 3),
            **({"meta": self.meta_version} if self.meta_version else {}),
            "devices": self.health.snapshot(),
            "outbox": {lane: c.as_dict() for lane, c in self.outbox.counters.items()}
            | {"commits": self.outbox.commits, "commit_errors": self.outbox.commit_errors, "epoch": self.outbox.epoch,
               "degraded": self.outbox.degraded, "last_error": self.outbox.last_error},
            "uplink": up.stats() if up else {"connects": 0, "connected": False, "published": {}, "last_error": None},
            "buses": {b.id: stats for b in self.buses if (stats := b.transport.stats()) is not None},
            **({"alerts": self.alerts.snapshot()} if self.alerts is not None else {}),
            **({"commands": self.commands.snapshot()} if self.commands is not None else {}),
            **({"cameras": self.cameras.snapshot()} if self.cameras is not None else {}),
        }

    async def write_status(self) -> None:
        """Atomically write the health snapshot for `canopy status` (no socket needed).

        The snapshot is taken on the loop (the services mutate what it reads);
        only the file write goes to a worker thread.
        """
        payload = orjson.dumps({"site": self.site.site, "gateway": self.site.gateway, **self.state()}, option=orjson.OPT_INDENT_2)
        await asyncio.to_thread(self._write_file, self.cfg.status_path, payload)

    @staticmethod
    def _write_file(path: str, payload: bytes) -> None:
        tmp = f"{path}.tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(payload)
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("cannot write status file %s: %s", path, exc)

    # -- lifecycle ---------------------------------------------------------------
    async def start(self) -> None:
        """Outbox, uplink, buses, then the services in the order a restart needs (valves safe first), then polling."""
        await self.outbox.open()
        self.uplink = await self._make_uplink()
        self.outbox.on_commit.append(self.uplink.wake)
        self.publish_meta()  # retained on every connect, before "online"
        self._build_devices()
        state_dir = os.path.dirname(self.outbox.path) or "."
        if self.site.rules is not None:
            self._start_alerts(self.uplink, state_dir)
        if self.site.commands is not None:
            await self._start_commands(self.uplink, state_dir)
        if self.site.cameras:
            self._start_cameras(state_dir)
        self._tasks.append(asyncio.create_task(self.uplink.run(), name="uplink"))
        for p in self.pollers:
            self._tasks.append(asyncio.create_task(p.run(), name=f"poll-{p.device.id}"))
        self._tasks.append(asyncio.create_task(self._state_loop(), name="state"))
        log.info("canopy %s: site %s gateway %s, %d device(s) on %d bus(es), outbox %s (boot %d)",
                 __version__, self.site.site, self.site.gateway, len(self.pollers), len(self.buses),
                 self.outbox.path, self.outbox.boot)

    async def _make_uplink(self) -> Uplink:
        """The uplink to the site's broker, or to an embedded one on loopback when the site names none (demo)."""
        broker = self.site.broker
        if broker is None:
            port = int(os.environ.get("CANOPY_EMBEDDED_BROKER_PORT", "1883"))
            self.embedded = EmbeddedBroker(port=port)
            await self.embedded.start()
            broker = BrokerConfig(**self.embedded.broker_section())  # MQTT 5, or 3.1.1 with amqtt
        up = self.site.uplink
        return Uplink(broker, self.topics, self.outbox, base_dir=self.cfg.base_dir,
                      batch_max_records=up.batch_max_records, batch_max_bytes=up.batch_max_bytes, state=self.state,
                      max_messages_per_s=up.max_messages_per_s, max_bytes_per_s=up.max_bytes_per_s,
                      max_inflight_bytes=up.max_inflight_bytes, queue_delay_target=up.queue_delay_target)

    def _start_alerts(self, uplink: Uplink, state_dir: str) -> None:
        self.alerts = AlertEngine(self.cfg, self.clock, self._emit, write_point=self.write_point, state_dir=state_dir)
        self.alerts.on_change = self._state_dirty.set
        uplink.on_acked.append(self.alerts.on_delivered)
        uplink.subscribe(self.topics.alert_ack, self.alerts.on_ack)
        self._tasks.append(asyncio.create_task(self.alerts.run(), name="alerts"))

    async def _start_commands(self, uplink: Uplink, state_dir: str) -> None:
        from gateway.commands.service import CommandService

        self.commands = CommandService(self.cfg, self.clock, self._emit, self._devices, state_dir, alerts=self.alerts)
        self.commands.on_change = self._state_dirty.set
        await self.commands.start()  # fail-safe first: valves closed before anything else
        uplink.subscribe(self.topics.cmd, self.commands.on_command)
        uplink.on_link.append(self.commands.on_link)
        self._tasks.append(asyncio.create_task(self.commands.run(), name="commands"))

    def _start_cameras(self, state_dir: str) -> None:
        from inference.service import CameraService  # OpenCV/LiteRT only where cameras exist

        self.cameras = CameraService(self.cfg, self.clock, self._emit, alerts=self.alerts, state_dir=state_dir)
        self.cameras.on_change = self._state_dirty.set
        self._tasks.append(asyncio.create_task(self.cameras.run(), name="cameras"))

    async def _state_loop(self) -> None:
        interval = self.site.uplink.state_interval
        await self.write_status()  # `canopy status` works from the first second
        while True:
            try:
                await asyncio.wait_for(self._state_dirty.wait(), timeout=interval)
                await asyncio.sleep(1.0)  # coalesce bursts of changes
            except asyncio.TimeoutError:
                pass
            self._state_dirty.clear()
            if self.uplink:
                self.uplink.publish_state()
            await self.write_status()

    async def stop(self) -> None:
        """Stop polling, commit everything polled, publish 'offline', close (< 5 s)."""
        for p in self.pollers:
            p.stopping = True
        pollers = [t for t in self._tasks if t.get_name().startswith("poll-")]
        await cancel_all(pollers, deadline=1.0)
        if self._bg:
            await asyncio.wait(self._bg, timeout=1.0)
        if self.commands is not None:
            try:
                await asyncio.wait_for(self.commands.stop(), timeout=2.0)  # actuators to their safe state
            except Exception:
                log.exception("commands: clean shutdown failed")
        if self.cameras is not None:
            await self.cameras.stop()
        if self.outbox.is_open:
            await self.outbox.flush()
        if self.uplink is not None:
            await self.uplink.drain(timeout=1.0)
            await self.uplink.stop()
        await cancel_all(self._tasks, deadline=1.0)
        await self.outbox.close()
        for bus in self.buses:
            await bus.transport.close()
        if self.embedded is not None:
            await self.embedded.stop()
        log.info("stopped cleanly")


async def run_gateway(cfg: LoadedConfig) -> int:
    gw = Gateway(cfg)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await gw.start()
    except Exception as exc:
        log.error("cannot start: %s", exc, exc_info=log.isEnabledFor(logging.DEBUG))
        await asyncio.wait_for(gw.stop(), timeout=4.5)
        return 1
    await stop.wait()
    log.info("shutting down")
    try:
        await asyncio.wait_for(gw.stop(), timeout=4.5)
    except asyncio.TimeoutError:
        log.error("shutdown took longer than 4.5 s; exiting anyway (committed data is safe)")
        return 1
    return 0
