"""The applier and remote configs: checked again, put in place on trial, health-gated, committed or rolled back.

A temporary install root; the gateway is a fake service that comes up READY (fake notify socket) and writes
a status file saying the broker is connected only when site.yaml names the broker that exists.
"""

from __future__ import annotations

import json
import threading
import time

import orjson
import pytest
import yaml

from gateway.ops import releases
from gateway.ops.config_apply import apply_config, apply_pending_configs
from gateway.ops.config_store import KEEP, ConfigStore
from gateway.ops.update import GatePolicy, apply_pending
from gateway.remote_config.handover import Handover, entry_name
from tests.gateway.ops.fakes import NotifyListener, write_status
from tests.gateway.remote_config.board import Board, grant_configure

FAST = GatePolicy(timeout=2.0, settle=0.2)
GOOD_PORT = 1883


class ConfigService:
    """``restart`` starts a fake daemon: READY, then a status file with the broker connected if site.yaml says 1883."""

    def __init__(self, board, listener: NotifyListener, on_restart=None):
        self.board, self.listener, self.on_restart = board, listener, on_restart
        self.restarts: list[int] = []
        self._writing = threading.Lock()  # two fake daemons may overlap for a moment
        self.threads: list[threading.Thread] = []

    def restart(self) -> None:
        port = yaml.safe_load(self.board.site_file.read_text())["broker"]["port"]
        self.restarts.append(port)
        with self.listener._lock:
            self.listener.messages.clear()
        self.threads.append(threading.Thread(target=self.come_up, args=(port == GOOD_PORT,), daemon=True))
        self.threads[-1].start()
        if self.on_restart is not None:
            self.on_restart(len(self.restarts))

    def come_up(self, connected: bool = True) -> None:
        time.sleep(0.05)
        from gateway.ops.sd_notify import Notifier

        n = Notifier(self.listener.name)
        n.notify("READY=1")
        n.close()
        with self._writing:
            write_status(self.board.status_path, connected=connected, devices={"soil-1": "ok"})

    def ready(self) -> bool:
        return self.listener.ready()


@pytest.fixture
def board(tmp_path, monkeypatch) -> Board:
    grant_configure(monkeypatch)
    return Board(tmp_path)


@pytest.fixture
def gateway(board):
    listener = NotifyListener()
    write_status(board.status_path, connected=True, devices={"soil-1": "ok"})
    service = ConfigService(board, listener)
    yield service
    for thread in service.threads:
        thread.join(2)
    listener.close()


def hand_over(board, payload: bytes):
    return Handover(board.layout.updates).submit(entry_name("admin", orjson.loads(payload)["id"]), payload)


def apply(board, gateway, payload: bytes):
    return apply_config(hand_over(board, payload), board.layout, gateway, board.status_path, policy=FAST)


def results(board) -> list[dict]:
    return [body for _, body in Handover(board.layout.updates).results()]


def test_a_healthy_config_is_committed_and_reported(board, gateway):
    before = board.site_file.read_bytes()
    res = apply(board, gateway, board.payload(board.variant(uplink={"state_interval": 5}), on_behalf_of="ops-li"))
    assert res.outcome == "committed" and res.previous != res.version, res
    assert gateway.restarts == [GOOD_PORT]
    text = board.site_file.read_text()
    assert text.startswith("# Pushed by admin for ops-li") and "state_interval: 5" in text
    (result,) = results(board)
    assert (result["status"], result["config"], result["previous"], result["on_behalf_of"]) == (
        "applied", res.version, res.previous, "ops-li")
    st = ConfigStore(board.layout).load()
    assert st.trial is None and st.good == st.current and st.good.endswith(res.version)
    kept = sorted(p.name for p in ConfigStore(board.layout).dir.iterdir() if p.is_dir())
    assert len(kept) == 2 and (ConfigStore(board.layout).dir / kept[0] / "site.yaml").read_bytes() == before


def test_a_config_that_cuts_the_gateway_off_is_rolled_back_within_t_and_reported(board, gateway):
    before = board.site_file.read_bytes()
    t0 = time.monotonic()
    res = apply(board, gateway, board.payload(board.variant(broker={"host": "127.0.0.1", "port": 1884})))
    assert time.monotonic() - t0 < FAST.timeout + 1.5
    assert res.outcome == "rolled_back" and "not healthy within 2 s: broker not connected" in res.reason, res
    assert board.site_file.read_bytes() == before
    assert gateway.restarts == [1884, GOOD_PORT]  # the good config is started again
    (result,) = results(board)
    assert (result["status"], result["reason"]) == ("failed", "rolled_back")
    assert (result["config"], result["previous"]) == (res.previous, res.version)  # running now / the one it replaced
    assert "broker not connected" in result["detail"]
    assert res.line() == f"config {res.version} rolled back to {res.previous}: {res.reason}"


def test_the_applier_trusts_nothing_the_daemon_handed_over(board, gateway):
    env = board.envelope(board.variant(uplink={"state_interval": 5}))
    env["params"]["config"]["broker"]["port"] = 1884  # changed after signing
    res = apply(board, gateway, orjson.dumps(env))
    assert res.outcome == "refused" and res.reason.startswith("bad_signature"), res
    assert gateway.restarts == [] and results(board)[0]["reason"] == "bad_signature"
    payload = board.payload(board.variant(uplink={"state_interval": 5}))
    assert apply(board, gateway, payload).outcome == "committed"
    again = apply(board, gateway, payload)
    assert again.outcome == "refused" and again.reason.startswith("replayed")
    invalid = apply(board, gateway, board.payload(board.variant(uplink={"state_interval": -1})))
    assert invalid.outcome == "refused" and "invalid_config: site.yaml:" in invalid.reason


def test_the_same_config_again_changes_nothing(board, gateway):
    res = apply(board, gateway, board.payload())
    assert (res.outcome, res.reason) == ("committed", "unchanged") and gateway.restarts == []
    assert results(board)[0]["status"] == "applied"


def test_pushed_profiles_are_put_in_place_and_taken_back_with_the_config(board, gateway):
    original = (board.etc / "profiles" / "soil_probe.yaml").read_bytes()
    profile = yaml.safe_load(original)
    profile["description"] = "re-flashed probe"
    doc = board.variant(broker={"host": "127.0.0.1", "port": 1884})
    res = apply(board, gateway, board.payload(doc, profiles={"soil_probe": profile}))
    assert res.outcome == "rolled_back"
    assert (board.etc / "profiles" / "soil_probe.yaml").read_bytes() == original
    res = apply(board, gateway, board.payload(board.variant(uplink={"state_interval": 5}), profiles={"soil_probe": profile}))
    assert res.outcome == "committed"
    assert b"re-flashed probe" in (board.etc / "profiles" / "soil_probe.yaml").read_bytes()


def test_the_last_configs_are_kept(board, gateway):
    for i in range(KEEP + 3):
        assert apply(board, gateway, board.payload(board.variant(uplink={"state_interval": 5 + i}))).outcome == "committed"
    store = ConfigStore(board.layout)
    kept = [p for p in store.dir.iterdir() if p.is_dir()]
    assert len(kept) == KEEP + 1  # KEEP besides the good (= current) one
    assert (store.dir / store.load().good / "site.yaml").read_text() == board.site_file.read_text()


def start_trial(board) -> dict:
    """A config put on trial by an applier that then died (power cut): no gate, no result."""
    from gateway.config.meta import config_version
    from gateway.remote_config.bundle import check, header, read_params

    live = board.loaded()
    env = board.envelope(board.variant(broker={"host": "127.0.0.1", "port": 1884}))
    checked = check(read_params(env["params"]), live, header(issuer="admin", envelope_id=env["id"], sha256=env["params"]["sha256"],
                                                               issued_at=env["issued_at"]), board.state)
    trial = {"id": env["id"], "issuer": "admin", "name": entry_name("admin", env["id"]), "version": checked.version,
             "previous": config_version(live)}
    ConfigStore(board.layout).begin_trial(live, config_version(live), checked, trial, env["expires_at"])
    return trial


def test_the_boot_counter_takes_a_config_back_after_three_starts(board):
    before = board.site_file.read_bytes()
    trial = start_trial(board)
    assert board.site_file.read_bytes() != before
    for _ in range(3):
        assert releases.boot_check(board.layout) is None
    assert ConfigStore(board.layout).load().boots == 3 and board.site_file.read_bytes() != before
    releases.boot_check(board.layout)
    assert board.site_file.read_bytes() == before
    (result,) = results(board)
    assert (result["id"], result["reason"]) == (trial["id"], "rolled_back")
    assert "started 3 times without passing the health gate" in result["detail"]


def test_on_failure_takes_a_config_on_trial_back(board):
    before = board.site_file.read_bytes()
    trial = start_trial(board)
    to = releases.rollback(board.layout, "canopy.service failed")
    assert to == f"the last good config ({trial['previous']})"
    assert board.site_file.read_bytes() == before
    assert releases.rollback(board.layout, "again") is None  # nothing on trial any more


def test_a_rollback_by_the_unit_while_the_gate_waits_is_reported_once(board, gateway):
    gateway.on_restart = lambda n: releases.rollback(board.layout, "canopy.service failed") if n == 1 else None
    res = apply(board, gateway, board.payload(board.variant(broker={"host": "127.0.0.1", "port": 1884})))
    assert (res.outcome, res.reason) == ("rolled_back", "canopy.service failed")
    assert len(results(board)) == 1


def test_a_trial_left_by_a_dead_applier_is_judged_on_the_next_run(board, gateway):
    trial = start_trial(board)
    (board.layout.updates / f"{trial['name']}.config").write_bytes(b"{}")  # its envelope, still handed over
    gateway.restarts.clear()
    threading.Thread(target=gateway.come_up, args=(False,), daemon=True).start()  # it runs, but is cut off
    (res,) = apply_pending_configs(board.layout, gateway, board.status_path, policy=FAST)
    assert res.outcome == "rolled_back" and "broker not connected" in res.reason
    assert not Handover(board.layout.updates).pending() and len(results(board)) == 1


def test_the_applier_run_takes_bundles_then_configs(board, gateway):
    hand_over(board, board.payload(board.variant(uplink={"state_interval": 5})))
    (res,) = apply_pending(board.layout, gateway, board.status_path, policy=FAST)
    assert res.outcome == "committed" and res.line().startswith("config ")
    assert not Handover(board.layout.updates).pending()
    assert json.loads(ConfigStore(board.layout).state_file.read_text())["history"][-1]["event"] == "commit"


def test_an_unexpected_failure_takes_the_trial_back_and_is_reported(board, gateway):
    def broken_restart(n):
        if n == 1:
            raise RuntimeError("systemctl restart canopy.service: Access denied")

    gateway.on_restart = broken_restart
    before = board.site_file.read_bytes()
    hand_over(board, board.payload(board.variant(uplink={"state_interval": 5})))
    (res,) = apply_pending_configs(board.layout, gateway, board.status_path, policy=FAST)
    assert res.outcome == "rolled_back" and "Access denied" in res.reason
    assert board.site_file.read_bytes() == before and not Handover(board.layout.updates).pending()
    (result,) = results(board)
    assert (result["status"], result["reason"]) == ("failed", "rolled_back") and "Access denied" in result["detail"]


def test_the_units_hand_configs_to_the_applier_and_let_it_write_the_config():
    from pathlib import Path

    units = Path(__file__).resolve().parents[3] / "systemd"
    assert "PathExistsGlob=/var/lib/canopy/updates/*.config" in (units / "canopy-applier.path").read_text()
    for unit in ("canopy-applier.service", "canopy-rollback.service"):
        paths = next(line for line in (units / unit).read_text().splitlines() if line.startswith("ReadWritePaths="))
        assert {"/etc/canopy", "/var/lib/canopy"} <= set(paths.split("=", 1)[1].split()), unit
