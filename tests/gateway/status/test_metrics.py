"""Prometheus metrics: canopy_* names with HELP and TYPE, an atomic world-readable textfile, a loopback endpoint."""

from __future__ import annotations

import os
import stat
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from gateway.status.metrics import MetricsExport, check_options
from tests.support import free_port

SNAPSHOT = {
    "site": "farm-a", "gateway": "gw-1", "version": "0.1.0", "meta": "abc123", "boot": 4, "ts": 1_800_000_000.5,
    "uptime_s": 3600.0,
    "devices": {"soil-1": {"bus": "field", "status": "ok", "polls": 10, "failures": 1},
                "tank": {"bus": "field", "status": "timeout", "polls": 10, "failures": 10}},
    "outbox": {"alarm": {"produced": 1, "acknowledged": 1, "pending": 0, "expired": 0, "dropped": {}, "last_seq": 1,
                         "oldest_age_s": None},
               "telemetry": {"produced": 900, "acknowledged": 600, "pending": 300, "expired": 0,
                             "dropped": {"cap": 5}, "last_seq": 905, "oldest_age_s": 42.5},
               "commits": 12, "commit_errors": 0, "epoch": "e", "degraded": False, "last_error": None},
    "uplink": {"connects": 2, "connected": True, "published": {"telemetry": 7}, "last_error": None,
               "last_puback_ts": 1_799_999_999.0},
    "buses": {"rs485-1": {"queue": 3}},
    "host": {"disk_free_bytes": 5 * 2**30, "disk_total_bytes": 16 * 2**30, "rss_bytes": 60 * 2**20, "cpu_temp_c": 51.5},
    "daemon": {"pid": 1, "state": "running"},
}


def samples(text: str) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_textfile_has_every_figure_with_help_and_type(tmp_path):
    path = tmp_path / "canopy.prom"
    old = os.umask(0o077)  # the daemon's umask
    try:
        MetricsExport(str(path)).update(SNAPSHOT)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # node_exporter reads it as its own user
    text = path.read_text()
    got = samples(text)
    names = {name for name, _ in got}
    assert all(n.startswith("canopy_") for n in names)
    for name in names:
        assert f"# HELP {name} " in text and f"# TYPE {name} " in text, name
    assert got[("canopy_device_up", (("bus", "field"), ("device", "tank")))] == 0
    assert got[("canopy_device_up", (("bus", "field"), ("device", "soil-1")))] == 1
    assert got[("canopy_outbox_pending_records", (("lane", "telemetry"),))] == 300
    assert got[("canopy_outbox_oldest_pending_age_seconds", (("lane", "telemetry"),))] == 42.5
    assert ("canopy_outbox_oldest_pending_age_seconds", (("lane", "alarm"),)) not in got  # an empty lane has no age
    assert got[("canopy_outbox_dropped_records_total", (("lane", "telemetry"), ("reason", "cap")))] == 5
    assert got[("canopy_uplink_last_puback_timestamp_seconds", ())] == 1_799_999_999.0
    assert got[("canopy_cpu_temperature_celsius", ())] == 51.5 and got[("canopy_disk_free_bytes", ())] == 5 * 2**30
    assert got[("canopy_running", ())] == 1 and got[("canopy_bus_queue_depth", (("bus", "rs485-1"),))] == 3
    assert got[("canopy_info", (("config", "abc123"), ("gateway", "gw-1"), ("site", "farm-a"), ("version", "0.1.0")))] == 1
    assert not list(tmp_path.glob("*.tmp"))


def test_a_partial_snapshot_gives_fewer_metrics_not_an_error(tmp_path):
    MetricsExport(str(tmp_path / "canopy.prom")).update({"site": "s", "ts": 1.0, "daemon": {"state": "stopped"}})
    got = samples((tmp_path / "canopy.prom").read_text())
    assert got[("canopy_running", ())] == 0 and ("canopy_cpu_temperature_celsius", ()) not in got


def test_endpoint_serves_the_latest_snapshot_on_loopback_only():
    port = free_port()
    export = MetricsExport(port=port)
    export.start()
    try:
        export.update(SNAPSHOT)
        assert export._server.server_address[0] == "127.0.0.1"
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        assert samples(text)[("canopy_uptime_seconds", ())] == 3600
    finally:
        export.stop()


def test_metrics_options_are_checked_before_start(tmp_path):
    assert check_options(None, None) == [] and check_options(str(tmp_path / "canopy.prom"), 9464) == []
    assert "ending in .prom" in check_options(str(tmp_path / "canopy.txt"), None)[0]
    assert "does not exist" in check_options(str(tmp_path / "nope" / "canopy.prom"), None)[0]
    assert "outside" in check_options(None, 70000)[0]
