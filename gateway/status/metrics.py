"""The health snapshot as Prometheus metrics: a node_exporter textfile, or an opt-in endpoint on loopback.

A monitoring system already on the board (node_exporter with
``--collector.textfile.directory``) picks up ``canopy.prom`` from its folder;
the file is replaced atomically and is world-readable (node_exporter runs as
its own user; the daemon's umask would make it 0600).  Without node_exporter,
``--metrics-port`` serves the same text on 127.0.0.1 only: the board is not a
server, and the snapshot names the site's devices.  Names are ``canopy_*``,
each with HELP and TYPE (``prometheus_client`` writes the format).
``canopy_snapshot_timestamp_seconds`` lets an alert rule see a stale file.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from prometheus_client import generate_latest, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from gateway.status.status_file import RUNNING, atomic_write

LOOPBACK = "127.0.0.1"


def check_options(textfile: str | None, port: int | None) -> list[str]:
    """What is wrong with the metrics options of `canopy run` (a config problem: exit 2)."""
    problems = []
    if textfile is not None:
        folder = os.path.dirname(os.path.abspath(textfile))
        if not textfile.endswith(".prom"):
            problems.append(f"--metrics-file {textfile}: node_exporter's textfile collector reads only files ending in .prom")
        if not os.path.isdir(folder):
            problems.append(f"--metrics-file {textfile}: folder {folder} does not exist (the textfile collector's "
                            "--collector.textfile.directory)")
        elif not os.access(folder, os.W_OK | os.X_OK):
            problems.append(f"--metrics-file {textfile}: folder {folder} is not writable by this user")
    if port is not None and not 1 <= port <= 65535:
        problems.append(f"--metrics-port {port} is outside 1..65535")
    return problems


def _gauge(name: str, doc: str, value, labels: dict[str, str] | None = None) -> Metric | None:
    if value is None or isinstance(value, str):
        return None
    g = GaugeMetricFamily(name, doc, labels=list(labels or {}))
    g.add_metric(list((labels or {}).values()), float(value))
    return g


def _per(kind, name: str, doc: str, label: str, values: dict) -> Metric:
    family = kind(name, doc, labels=[label])
    for key, value in values.items():
        if isinstance(value, (int, float)):  # None (unknown) is left out
            family.add_metric([str(key)], float(value))
    return family


def _process(s: dict) -> Iterator[Metric | None]:
    daemon, host = s.get("daemon") or {}, s.get("host") or {}
    info = GaugeMetricFamily("canopy_info", "Canopy version, site, gateway and config version (always 1)",
                             labels=["site", "gateway", "version", "config"])
    info.add_metric([str(s.get("site", "")), str(s.get("gateway", "")), str(s.get("version", "")), str(s.get("meta") or "")], 1)
    yield info
    yield _gauge("canopy_running", "1 while the daemon runs, 0 in the snapshot written when it stopped",
                 1 if daemon.get("state", RUNNING) == RUNNING else 0)
    yield _gauge("canopy_snapshot_timestamp_seconds", "When this snapshot was taken (epoch seconds)", s.get("ts"))
    yield _gauge("canopy_uptime_seconds", "Seconds since the daemon started", s.get("uptime_s"))
    yield _gauge("canopy_boot", "Start counter of the outbox (one more at every start)", s.get("boot"))
    yield _gauge("canopy_disk_free_bytes", "Free bytes on the filesystem that holds the outbox", host.get("disk_free_bytes"))
    yield _gauge("canopy_disk_size_bytes", "Size of the filesystem that holds the outbox", host.get("disk_total_bytes"))
    yield _gauge("canopy_resident_memory_bytes", "Resident memory of the daemon", host.get("rss_bytes"))
    yield _gauge("canopy_cpu_temperature_celsius", "CPU temperature (boards with a thermal zone)", host.get("cpu_temp_c"))


def _devices(s: dict) -> Iterator[Metric]:
    devices = {d: v for d, v in (s.get("devices") or {}).items() if isinstance(v, dict)}
    up = GaugeMetricFamily("canopy_device_up", "1 when the device's last poll succeeded", labels=["device", "bus"])
    polls = CounterMetricFamily("canopy_device_polls", "Polls of the device", labels=["device", "bus"])
    failures = CounterMetricFamily("canopy_device_failures", "Failed polls of the device", labels=["device", "bus"])
    for dev, st in devices.items():
        labels = [dev, str(st.get("bus", ""))]
        up.add_metric(labels, 1.0 if st.get("status") == "ok" else 0.0)
        polls.add_metric(labels, float(st.get("polls") or 0))
        failures.add_metric(labels, float(st.get("failures") or 0))
    yield from (up, polls, failures)
    queues = {b: st["queue"] for b, st in (s.get("buses") or {}).items() if isinstance(st, dict) and isinstance(st.get("queue"), int)}
    yield _per(GaugeMetricFamily, "canopy_bus_queue_depth", "Requests waiting for a serial line", "bus", queues)


def _outbox(s: dict) -> Iterator[Metric | None]:
    box = s.get("outbox") or {}
    lanes = {lane: c for lane, c in box.items() if isinstance(c, dict) and "pending" in c}

    def per_lane(kind, name: str, doc: str, key: str) -> Metric:
        return _per(kind, name, doc, "lane", {lane: c.get(key) for lane, c in lanes.items()})

    yield per_lane(GaugeMetricFamily, "canopy_outbox_pending_records", "Records in the outbox, not yet acknowledged", "pending")
    yield per_lane(GaugeMetricFamily, "canopy_outbox_oldest_pending_age_seconds",
                   "Age of the oldest record still to be delivered (absent when the lane is empty)", "oldest_age_s")
    yield per_lane(CounterMetricFamily, "canopy_outbox_produced_records", "Records accepted (committed)", "produced")
    yield per_lane(CounterMetricFamily, "canopy_outbox_acknowledged_records", "Records the broker acknowledged", "acknowledged")
    yield per_lane(CounterMetricFamily, "canopy_outbox_expired_records", "Records that expired unsent (TTL)", "expired")
    dropped = CounterMetricFamily("canopy_outbox_dropped_records", "Records dropped unsent, by reason", labels=["lane", "reason"])
    for lane, c in lanes.items():
        for reason, n in (c.get("dropped") or {}).items():
            dropped.add_metric([lane, str(reason)], float(n))
    yield dropped
    if isinstance(box.get("commits"), int):
        yield CounterMetricFamily("canopy_outbox_commits", "Outbox commits", value=box["commits"])
    if isinstance(box.get("commit_errors"), int):
        yield CounterMetricFamily("canopy_outbox_commit_errors", "Failed outbox commits", value=box["commit_errors"])
    yield _gauge("canopy_outbox_degraded", "1 while commits fail (full disk?)", int(bool(box.get("degraded"))) if box else None)


def _uplink(s: dict) -> Iterator[Metric | None]:
    up = s.get("uplink") or {}
    yield _gauge("canopy_uplink_connected", "1 while the broker connection is up", int(bool(up.get("connected"))) if up else None)
    if isinstance(up.get("connects"), int):
        yield CounterMetricFamily("canopy_uplink_connects", "Connections made to the broker", value=up["connects"])
    if isinstance(up.get("attempts"), int):
        yield CounterMetricFamily("canopy_uplink_connect_attempts", "Connection attempts (each a TCP connection)",
                                  value=up["attempts"])
    yield _per(CounterMetricFamily, "canopy_uplink_published_messages", "MQTT messages sent per lane (re-sends included)",
               "lane", up.get("published") or {})
    yield _gauge("canopy_uplink_last_puback_timestamp_seconds", "When the broker last acknowledged records (epoch seconds)",
                 up.get("last_puback_ts"))


def families(snapshot: dict) -> Iterator[Metric]:
    """Every metric of one snapshot; sections it lacks are left out, never an error."""
    for part in (_process, _devices, _outbox, _uplink):
        yield from (m for m in part(snapshot) if m is not None)


class _Latest(Collector):
    """Serves the last snapshot handed to it (read by the HTTP thread, replaced whole by the daemon)."""

    def __init__(self) -> None:
        self.snapshot: dict = {}

    def collect(self) -> Iterator[Metric]:
        return families(self.snapshot)


class MetricsExport:
    """The textfile and/or the loopback endpoint, fed one snapshot at a time."""

    def __init__(self, textfile: str | None = None, port: int | None = None):
        self.textfile = textfile
        self.port = port
        self.registry = CollectorRegistry(auto_describe=False)
        self._latest = _Latest()
        self.registry.register(self._latest)
        self._server = None

    def start(self) -> None:
        """Open the endpoint (a thread of prometheus_client's); OSError if the port is taken."""
        if self.port is not None:
            self._server, _thread = start_http_server(self.port, addr=LOOPBACK, registry=self.registry)

    def update(self, snapshot: dict) -> None:
        """Take a new snapshot; rewrite the textfile. Blocking: call in a thread."""
        self._latest.snapshot = snapshot
        if self.textfile is not None:
            atomic_write(self.textfile, generate_latest(self.registry), mode=0o644)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
