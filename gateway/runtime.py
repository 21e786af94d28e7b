"""The daemon: wires drivers -> pollers -> outbox -> uplink, and shuts down cleanly.

Nothing here does protocol work; it builds the pieces from a validated config,
starts their tasks, publishes health (``gateway/status/``: …/state, the status
file, metrics) and the site's retained ``…/meta``, and stops them in the order
that loses nothing: stop polling, commit what was polled, say "offline", close,
and leave a last snapshot that says "stopped".
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from core.clock import Clock
from core.protocol.messages.state import StateOnline
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
from gateway.status.backlog import BacklogAge
from gateway.status.host import HostSample, sample
from gateway.status.reporter import HealthReporter, ReportPolicy
from gateway.uplink.embedded_broker import EmbeddedBroker
from gateway.uplink.uplink import Uplink

if TYPE_CHECKING:  # imported where they start: OpenCV/LiteRT, the command store and metrics only where configured
    from gateway.commands.service import CommandService
    from gateway.controls.service import ControlService
    from gateway.remote_config.service import RemoteConfig
    from gateway.replay.service import ReplayService
    from gateway.status.metrics import MetricsExport
    from inference.service import CameraService

log = logging.getLogger("canopy")
# …/state carries only what the protocol defines (StateOnline is closed); the status file and metrics carry all
_PUBLISHED = frozenset(StateOnline.model_fields)


@dataclass(frozen=True)
class StartOptions:
    """What `canopy run` adds to the site config: where the health goes besides …/state."""

    metrics_file: str | None = None  # a node_exporter textfile (…/canopy.prom)
    metrics_port: int | None = None  # an endpoint on 127.0.0.1


class StartError(Exception):
    """The gateway cannot start; the message says why in one line (exit code 1)."""


class Gateway:
    def __init__(self, cfg: LoadedConfig, clock: Clock | None = None, options: StartOptions | None = None):
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
                retain_for=self.site.store.retention.window,
                retain_bytes=self.site.store.retention.max_bytes,
            ),
        )
        self.uplink: Uplink | None = None
        self.alerts: AlertEngine | None = None
        self.commands: CommandService | None = None  # when the site has `commands:`
        self.cameras: CameraService | None = None  # when the site has cameras
        self.controls: ControlService | None = None  # when the site has `controls:`
        self.remote_config: RemoteConfig | None = None  # …/config, and the applier's results
        self.replay: ReplayService | None = None  # …/replay: acknowledged records sent again (gap repair)
        self._devices: dict[str, Pollable] = {}  # by device id; Modbus devices also `write` (commands, alert outputs)
        self.embedded: EmbeddedBroker | None = None
        self.buses: list[BuiltBus] = []
        self.pollers: list[DevicePoller] = []
        self.readings_polled = 0
        self._tasks: list[asyncio.Task] = []
        self._bg: set[asyncio.Task] = set()
        self.options = options or StartOptions()
        self.started_mono = self.clock.monotonic()
        self.backlog = BacklogAge(self.outbox, self.clock)
        self.host = HostSample()  # refreshed in a thread before each snapshot
        self.metrics: MetricsExport | None = None
        self.reporter = HealthReporter(
            state=self.health_snapshot, publish=self._publish_state, refresh=self._refresh_health, backlog=self._backlog,
            status_path=cfg.status_path, policy=ReportPolicy(interval=self.site.uplink.state_interval),
            identity={"site": self.site.site, "gateway": self.site.gateway}, clock=self.clock)
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
        if self.controls is not None:
            self.controls.observe(readings)
        await self.outbox.put("telemetry", [reading_body(r) for r in readings], ts=readings[0].ts if readings else None)

    def _device_changed(self, st: DeviceStatus, previous: str) -> None:
        self.reporter.changed()  # the first successful poll too: …/state must not say "unknown" for 30 s
        if previous == "unknown" and st.status == "ok":
            return  # first successful poll is not news
        body = event_body(self.clock.time(), "device.status", device=st.id, bus=st.bus, status=st.status,
                          previous=previous, detail=st.detail)
        self._spawn(self.outbox.put("event", [body]))

    async def _emit(self, lane: str, body: bytes, topic: str | None = None, mark: str | None = None) -> list[int] | None:
        """Alerts and events from the services: accepted once durably committed; returns the seqs.

        ``topic`` is the suffix under ``canopy/v1/{site}/{gateway}/`` (``cmd/result``, ``alert/{group}``);
        None sends the record on its lane's own topic.  ``mark``: committed with it (gateway/outbox/marks.py).
        """
        return await self.outbox.put(lane, [body], wait_commit=True, topic=topic, mark=mark)

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
        self.reporter.changed()  # …/state names the new version
        return True

    def health_snapshot(self) -> dict:
        """Everything the gateway knows of its health: the status file and the metrics carry all of it."""
        up = self.uplink
        ages = self.backlog.ages()
        lanes = {lane: c.as_dict() | {"oldest_age_s": ages.get(lane)} for lane, c in self.outbox.counters.items()}
        uplink = up.stats() if up else {"connects": 0, "connected": False, "published": {}, "last_error": None}
        return {
            "version": __version__,
            "boot": self.outbox.boot,
            "ts": round(self.clock.time(), 3),
            "uptime_s": round(self.clock.monotonic() - self.started_mono, 1),
            **({"meta": self.meta_version} if self.meta_version else {}),
            "devices": self.health.snapshot(),
            "outbox": lanes | {"commits": self.outbox.commits, "commit_errors": self.outbox.commit_errors,
                               "epoch": self.outbox.epoch, "degraded": self.outbox.degraded, "last_error": self.outbox.last_error,
                               "memory_epoch": self.outbox.memory.epoch,
                               "degraded_reason": self.outbox.episode.reason if self.outbox.episode else None},
            "uplink": uplink | {"last_puback_ts": self.backlog.last_puback_ts},
            "buses": {b.id: stats for b in self.buses if (stats := b.transport.stats()) is not None},
            "host": self.host.as_dict(),
            **({"alerts": self.alerts.snapshot()} if self.alerts is not None else {}),
            **({"commands": self.commands.snapshot()} if self.commands is not None else {}),
            **({"cameras": self.cameras.snapshot()} if self.cameras is not None else {}),
            **({"controls": self.controls.snapshot()} if self.controls is not None else {}),
            **({"remote_config": self.remote_config.snapshot()} if self.remote_config is not None else {}),
            **({"replay": self.replay.snapshot()} if self.replay is not None else {}),
        }

    def state(self) -> dict:
        """The health on ``…/state``: the snapshot less the sections the protocol does not define (yet), so the
        message stays valid; ``uptime_s`` and ``host`` go out once ``StateOnline`` has them."""
        return {k: v for k, v in self.health_snapshot().items() if k in _PUBLISHED}

    def _publish_state(self) -> None:
        if self.uplink is not None:
            self.uplink.publish_state()

    def _backlog(self) -> int:
        return sum(c.pending for c in self.outbox.counters.values())

    async def _refresh_health(self) -> None:
        """The figures that take I/O, read just before a snapshot: host (in a thread) and the backlog's age."""
        folder = os.path.dirname(self.outbox.path) or "."
        self.host = await asyncio.to_thread(sample, folder)
        await self.backlog.refresh()

    # -- lifecycle ---------------------------------------------------------------
    async def start(self) -> None:
        """Outbox, uplink, buses, then the services in the order a restart needs (valves safe first), then polling."""
        await self._open_outbox()
        self._start_metrics()
        self.uplink = await self._make_uplink()
        self.outbox.on_commit.append(self.uplink.committed)
        self.uplink.on_acked.append(self.backlog.on_acked)
        self.uplink.on_link.append(lambda _up: self.reporter.changed(publish=False))
        self.publish_meta()  # retained on every connect, before "online"
        self._build_devices()
        state_dir = os.path.dirname(self.outbox.path) or "."
        if self.site.rules is not None:
            self._start_alerts(self.uplink, state_dir)
        if self.site.controls:
            self._start_controls(state_dir)  # after alerts (failures are alerts), before commands and polling
        if self.site.commands is not None:
            await self._start_commands(self.uplink, state_dir)
        if self.site.cameras:
            self._start_cameras(state_dir)
        self._start_remote_config(self.uplink, state_dir)
        self._start_replay(self.uplink)
        self._tasks.append(asyncio.create_task(self.uplink.run(), name="uplink"))
        for p in self.pollers:
            self._tasks.append(asyncio.create_task(p.run(), name=f"poll-{p.device.id}"))
        self._tasks.append(asyncio.create_task(self.reporter.run(), name="state"))
        log.info("canopy %s: site %s gateway %s, %d device(s) on %d bus(es), outbox %s (boot %d)",
                 __version__, self.site.site, self.site.gateway, len(self.pollers), len(self.buses),
                 self.outbox.path, self.outbox.boot)

    async def _open_outbox(self) -> None:
        try:
            await self.outbox.open()
        except (RuntimeError, OSError) as exc:
            raise StartError(str(exc)) from None

    def _start_metrics(self) -> None:
        opts = self.options
        if opts.metrics_file is None and opts.metrics_port is None:
            return
        from gateway.status.metrics import MetricsExport

        metrics = MetricsExport(opts.metrics_file, opts.metrics_port)
        try:
            metrics.start()
        except OSError as exc:
            raise StartError(f"cannot serve metrics on 127.0.0.1:{opts.metrics_port}: {exc.strerror or exc}") from None
        self.metrics = self.reporter.metrics = metrics

    async def _make_uplink(self) -> Uplink:
        """The uplink to the site's broker, or to an embedded one on loopback when the site names none (demo)."""
        broker = self.site.broker
        if broker is None:
            port = int(os.environ.get("CANOPY_EMBEDDED_BROKER_PORT", "1883"))
            self.embedded = EmbeddedBroker(port=port)
            try:
                await self.embedded.start()
            except OSError as exc:
                raise StartError(f"cannot start the embedded broker on port {port}: {exc.strerror or exc}") from None
            broker = BrokerConfig(**self.embedded.broker_section())  # MQTT 5, or 3.1.1 with amqtt
        up = self.site.uplink
        return Uplink(broker, self.topics, self.outbox, base_dir=self.cfg.base_dir,
                      batch_max_records=up.batch_max_records, batch_max_bytes=up.batch_max_bytes, state=self.state,
                      max_messages_per_s=up.max_messages_per_s, max_bytes_per_s=up.max_bytes_per_s,
                      max_inflight_bytes=up.max_inflight_bytes, queue_delay_target=up.queue_delay_target)

    def _start_alerts(self, uplink: Uplink, state_dir: str) -> None:
        self.alerts = AlertEngine(self.cfg, self.clock, self._emit, write_point=self.write_point, state_dir=state_dir,
                                  epoch=lambda: self.outbox.epoch, committed=self.outbox.marked)
        self.alerts.on_change = self.reporter.changed
        uplink.on_acked.append(self.alerts.on_delivered)
        uplink.subscribe(self.topics.alert_ack, self.alerts.on_ack)
        self._tasks.append(asyncio.create_task(self.alerts.run(), name="alerts"))

    async def _start_commands(self, uplink: Uplink, state_dir: str) -> None:
        from gateway.commands.service import CommandService

        self.commands = CommandService(self.cfg, self.clock, self._emit, self._devices, state_dir, alerts=self.alerts,
                                       controls=self.controls)
        self.commands.on_change = self.reporter.changed
        await self.commands.start()  # fail-safe first: valves closed before anything else
        uplink.subscribe(self.topics.cmd, self.commands.on_command)
        uplink.on_link.append(self.commands.on_link)
        self._tasks.append(asyncio.create_task(self.commands.run(), name="commands"))

    def _start_controls(self, state_dir: str) -> None:
        from gateway.controls.service import ControlService

        self.controls = ControlService(self.cfg, self.clock, self._emit, self.write_point, alerts=self.alerts, state_dir=state_dir)
        self.controls.on_change = self.reporter.changed
        self._tasks.append(asyncio.create_task(self.controls.run(), name="controls"))

    def _start_remote_config(self, uplink: Uplink, state_dir: str) -> None:
        """…/config when an issuer may configure (capability `config`); the applier's results are relayed either way."""
        from gateway.remote_config.service import RemoteConfig

        self.remote_config = RemoteConfig(self.cfg, self.clock, self._emit, state_dir=state_dir)
        if self.remote_config.takes_configs:
            uplink.subscribe(self.topics.config, self.remote_config.on_config)
        self._tasks.append(asyncio.create_task(self.remote_config.run(), name="remote-config"))

    def _start_replay(self, uplink: Uplink) -> None:
        """…/replay when an issuer may replay (capability `replay`): retained records sent again, paced."""
        from gateway.replay.service import ReplayService

        self.replay = ReplayService(self.cfg, self.clock, self.outbox, uplink, self._emit,
                                    publish_state=self._publish_state, publish_meta=self.publish_meta,
                                    bytes_per_s=self.site.store.retention.replay_bytes_per_s)
        if self.replay.takes_requests:
            uplink.subscribe(self.topics.replay, self.replay.on_request)
            self._tasks.append(asyncio.create_task(self.replay.run(), name="replay"))

    def _start_cameras(self, state_dir: str) -> None:
        from inference.service import CameraService  # OpenCV/LiteRT only where cameras exist

        self.cameras = CameraService(self.cfg, self.clock, self._emit, alerts=self.alerts, state_dir=state_dir)
        self.cameras.on_change = self.reporter.changed
        self._tasks.append(asyncio.create_task(self.cameras.run(), name="cameras"))

    async def stop(self) -> None:
        """Stop polling, commit everything polled, publish 'offline', close (< 5 s)."""
        for p in self.pollers:
            p.stopping = True
        pollers = [t for t in self._tasks if t.get_name().startswith("poll-")]
        await cancel_all(pollers, deadline=1.0)
        if self._bg:
            await asyncio.wait(self._bg, timeout=1.0)
        if self.controls is not None:
            try:
                await asyncio.wait_for(self.controls.stop(), timeout=1.5)  # outputs to their safe state
            except Exception:
                log.exception("controls: clean shutdown failed")
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
        await self._refresh_health()  # the last backlog ages, while the outbox is still open
        await self.outbox.close()
        for bus in self.buses:
            await bus.transport.close()
        if self.embedded is not None:
            await self.embedded.stop()
        if self.outbox.boot:  # it opened: leave a last snapshot that says "stopped"
            await self.reporter.stopped()
        if self.metrics is not None:
            self.metrics.stop()
        log.info("stopped cleanly")
