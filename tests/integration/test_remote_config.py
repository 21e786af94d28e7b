"""Remote configuration end to end: `canopy remote configure` -> mosquitto -> the real daemon -> the applier -> result.

The board is a temporary install root; systemd is played by the test: a fake notify socket for READY, and a
service whose restart stops and starts the daemon as the unit would.  The applier runs as the unit runs it
(``update.apply_pending``), once the daemon has handed a config over.  A good config is applied; one that
names a broker that is not there comes up READY but never connected, and is rolled back within T and reported.

Needs the daemon wired to …/config (gateway/runtime.py) and the ``configure`` permission in IssuerConfig;
skipped until both are there.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import yaml

from core.protocol import envelope
from gateway.ops.layout import Layout
from gateway.ops.update import GatePolicy, apply_pending
from gateway.remote_config.handover import Handover
from tests.gateway.ops.fakes import NotifyListener
from tests.support import ROOT, GatewayProcess, free_port, site_config, wait_until

T = 8.0  # the health gate's timeout here (120 s on a board)


class DaemonService:
    """canopy.service as the applier sees it: restart = stop the daemon (SIGTERM) and start it again."""

    def __init__(self, config, listener: NotifyListener):
        self.config, self.listener = config, listener
        self.proc: GatewayProcess | None = None
        self.restarts = 0

    def restart(self) -> None:
        if self.proc is not None and self.proc.alive():
            self.proc.terminate()
        with self.listener._lock:
            self.listener.messages.clear()
        self.restarts += 1
        self.proc = GatewayProcess(self.config, env={"NOTIFY_SOCKET": self.listener.name}).start()

    def ready(self) -> bool:
        return self.listener.ready()

    def close(self) -> None:
        if self.proc is not None:
            if self.proc.alive():
                self.proc.terminate()
            self.proc.close()


def push(config: dict, tmp_path, key, port: int) -> subprocess.Popen:
    file = tmp_path / f"push-{time.monotonic_ns()}.yaml"
    file.write_text(yaml.safe_dump(config, sort_keys=False))
    return subprocess.Popen([sys.executable, "-m", "gateway", "remote", "configure", str(file), "--site", "test-site",
                             "--gateway", "gw-1", "--key", str(key), "--broker", f"127.0.0.1:{port}", "--timeout", "90",
                             "--as", "ops-li"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)


def apply_when_handed_over(layout: Layout, service: DaemonService, status: str, cli: subprocess.Popen):
    wait_until(lambda: Handover(layout.updates).pending() or cli.poll() is not None, 30, what="the config handed over")
    assert cli.poll() is None, cli.stdout.read()
    t0 = time.monotonic()
    (res,) = apply_pending(layout, service, status, policy=GatePolicy(timeout=T, settle=1.0))
    return res, time.monotonic() - t0


def test_a_good_config_is_applied_and_a_wrong_broker_is_rolled_back_and_reported(tmp_path, farm_sim, broker, subscriber_factory):
    layout = Layout(tmp_path / "root")
    layout.etc.mkdir(parents=True)
    layout.updates.mkdir(parents=True)
    os.chmod(layout.state, 0o700)
    key = envelope.generate()
    key_file = tmp_path / "admin.key"
    key_file.write_bytes(envelope.private_pem(key))
    os.chmod(key_file, 0o600)
    issuers = {"admin": {"public_key": envelope.public_key_text(key.public_key()), "actions": ["close_all"], "configure": True}}
    config = site_config(layout.etc, sim_port=farm_sim.port, broker={"host": "127.0.0.1", "port": broker.port},
                         store={"path": str(layout.state / "outbox.sqlite")}, commands={"issuers": issuers})
    assert config == layout.site_config
    document = yaml.safe_load(config.read_text())
    status = layout.state / "canopy-status.json"
    sub = subscriber_factory(broker.port)
    listener = NotifyListener()
    service = DaemonService(config, listener)
    try:
        service.restart()
        wait_until(lambda: listener.ready() and '"connected":true' in _read(status).replace(" ", ""), 20, what="the daemon up")

        cli = push({**document, "uplink": {"state_interval": 2}}, tmp_path, key_file, broker.port)
        res, _ = apply_when_handed_over(layout, service, status, cli)
        assert res.outcome == "committed", res
        out = cli.communicate(timeout=60)[0]
        assert cli.returncode == 0 and "accepted" in out and "applied" in out, out
        applied = config.read_bytes()
        assert b"state_interval: 2" in applied

        wrong = {**document, "uplink": {"state_interval": 2}, "broker": {**document["broker"], "port": free_port()}}
        cli = push(wrong, tmp_path, key_file, broker.port)
        res, took = apply_when_handed_over(layout, service, status, cli)
        assert res.outcome == "rolled_back" and "broker not connected" in res.reason, res
        assert took < T + 12  # the gate's T, plus stopping and starting the daemon twice
        assert config.read_bytes() == applied
        out = cli.communicate(timeout=60)[0]
        assert cli.returncode == 1 and "rolled_back" in out and "broker not connected" in out, out

        results = [r for r in sub.records("event") if r.get("type") == "config.result"]
        assert [r["status"] for r in results] == ["accepted", "applied", "accepted", "failed"], results
        assert all(r["on_behalf_of"] == "ops-li" for r in results)
        assert results[1]["config"] != results[1]["previous"] and results[3]["reason"] == "rolled_back"
        assert results[3]["config"] == results[1]["config"]  # back on the good config
        sub.assert_valid()
    finally:
        service.close()
        listener.close()


def _read(path) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""
