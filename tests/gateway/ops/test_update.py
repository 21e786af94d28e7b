"""Install side by side, health-gated updates, automatic rollback, the boot counter, forward-only versions."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import pytest

from gateway.ops import bundle, releases
from gateway.ops.install import InstallError, install_version
from gateway.ops.layout import Layout
from gateway.ops.update import GatePolicy, apply_pending, hand_over, update
from tests.gateway.ops.fakes import FakeService, NotifyListener, fake_venv, make_bundle, release_key, write_status

FAST = GatePolicy(timeout=2.0, settle=0.2)


@pytest.fixture
def board(tmp_path):
    """A board with 0.1.0 installed (committed) and a fake systemd notify socket."""
    key = release_key(tmp_path)
    layout = Layout(tmp_path / "root")
    first = update(make_bundle(tmp_path, "0.1.0", key), layout, None, tmp_path / "status.json", builder=fake_venv, create_user=False)
    assert first.outcome == "installed", first
    listener = NotifyListener()
    yield layout, key, listener, tmp_path
    listener.close()


def service(board, healthy: set[str]) -> FakeService:
    layout, _, listener, tmp = board
    return FakeService(listener, tmp / "status.json", layout, healthy)


def run_update(board, version: str, svc: FakeService, **kw):
    layout, key, _, tmp = board
    return update(make_bundle(tmp, version, kw.pop("key", key)), layout, svc, tmp / "status.json", policy=FAST,
                  builder=fake_venv, create_user=False)


def test_first_install_lays_out_the_board(board):
    layout, key, _, _ = board
    assert layout.linked_version(layout.current) == layout.linked_version(layout.good) == "0.1.0"
    assert (layout.version_dir("0.1.0") / "requirement.txt").read_text() == "canopy-gateway==0.1.0"
    assert layout.release_key.read_bytes() == bundle.public_pem(key.public_key())
    for d in (layout.state, layout.updates):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700
    units = sorted(p.name for p in layout.units.iterdir())
    assert units == ["canopy-applier.path", "canopy-applier.service", "canopy-rollback.service", "canopy.service"]
    wrapper = layout.bin / "canopy-ops"
    assert os.access(wrapper, os.X_OK) and f"{layout.opt}/good" in wrapper.read_text()
    rel = releases.load(layout)
    assert (rel.current, rel.good, rel.trial) == ("0.1.0", "0.1.0", False)


def test_healthy_update_is_committed(board):
    layout = board[0]
    svc = service(board, {"0.1.0", "0.2.0"})
    res = run_update(board, "0.2.0", svc)
    assert (res.outcome, res.version, res.previous) == ("committed", "0.2.0", "0.1.0"), res
    assert layout.linked_version(layout.current) == layout.linked_version(layout.good) == "0.2.0"
    assert svc.restarts == ["0.2.0"]
    assert (layout.version_dir("0.1.0")).is_dir()  # the previous version stays, side by side


def test_a_version_that_never_becomes_ready_is_rolled_back_within_t(board):
    layout = board[0]
    svc = service(board, {"0.1.0"})
    t0 = time.monotonic()
    res = run_update(board, "0.2.0", svc)
    assert res.outcome == "rolled_back" and "not healthy within 2 s: not READY" in res.reason, res
    assert time.monotonic() - t0 < FAST.timeout + 1.5
    assert layout.linked_version(layout.current) == layout.linked_version(layout.good) == "0.1.0"
    assert svc.restarts == ["0.2.0", "0.1.0"]  # the old version is started again
    assert res.line() == f"0.2.0 rolled back to 0.1.0: {res.reason}"
    history = releases.load(layout).history
    assert history[-1]["event"] == "rollback" and history[-1]["version"] == "0.2.0"


def test_ready_but_broker_unreachable_is_rolled_back(board):
    layout, _, listener, tmp = board

    class CutOff(FakeService):
        def _come_up(self):
            from gateway.ops.sd_notify import Notifier

            Notifier(self.listener.name).notify("READY=1")
            write_status(self.status, connected=False, devices={"soil-1": "ok"})

    svc = CutOff(listener, tmp / "status.json", layout, {"0.2.0"})
    res = run_update(board, "0.2.0", svc)
    assert res.outcome == "rolled_back" and "broker not connected (refused)" in res.reason, res
    assert layout.linked_version(layout.current) == "0.1.0"


def test_devices_that_polled_before_must_poll_after(board):
    layout, _, listener, tmp = board
    write_status(tmp / "status.json", connected=True, devices={"soil-1": "ok", "soil-2": "ok"})

    class Deaf(FakeService):
        def _come_up(self):
            from gateway.ops.sd_notify import Notifier

            Notifier(self.listener.name).notify("READY=1")
            write_status(self.status, connected=True, devices={"soil-1": "timeout", "soil-2": "timeout"})

    res = run_update(board, "0.2.0", Deaf(listener, tmp / "status.json", layout, {"0.2.0"}))
    assert res.outcome == "rolled_back" and "0 of 2 devices polling ok (were 2 before)" in res.reason, res


def test_a_stale_status_file_proves_nothing(board):
    layout, _, listener, tmp = board

    class Silent(FakeService):
        def _come_up(self):
            from gateway.ops.sd_notify import Notifier

            Notifier(self.listener.name).notify("READY=1")  # but never writes a status file

    write_status(tmp / "status.json", connected=True, devices={"soil-1": "ok"}, ts=time.time() - 60)
    res = run_update(board, "0.2.0", Silent(listener, tmp / "status.json", layout, {"0.2.0"}))
    assert res.outcome == "rolled_back" and "no status written since the restart" in res.reason, res


def test_a_bundle_signed_by_another_key_is_refused(board):
    layout, _, _, tmp = board
    svc = service(board, {"0.2.0"})
    res = run_update(board, "0.2.0", svc, key=release_key(tmp, "intruder"))
    assert res.outcome == "refused" and "signature does not verify" in res.reason
    assert svc.restarts == [] and not layout.version_dir("0.2.0").exists()


def test_versions_only_go_forward_unless_a_signed_pin_names_the_older_one(board):
    layout, key, _, tmp = board
    svc = service(board, {"0.1.0", "0.2.0", "0.1.5"})
    assert run_update(board, "0.2.0", svc).outcome == "committed"
    res = run_update(board, "0.1.5", svc)
    assert res.outcome == "refused" and "0.1.5 is not newer than the installed 0.2.0" in res.reason
    pin = json.dumps({"version": "0.1.5"}).encode()
    layout.version_pin.write_bytes(pin)
    layout.version_pin.with_suffix(".sig").write_bytes(bundle.sign(pin, release_key(tmp, "forger")))
    res = run_update(board, "0.1.5", svc)
    assert res.outcome == "refused" and "signature does not verify" in res.reason
    layout.version_pin.with_suffix(".sig").write_bytes(bundle.sign(pin, key))
    res = run_update(board, "0.1.5", svc)
    assert res.outcome == "committed", res
    assert layout.linked_version(layout.current) == "0.1.5"


def test_same_version_again_is_refused(board):
    res = run_update(board, "0.1.0", service(board, {"0.1.0"}))
    assert res.outcome == "refused" and "already installed and running" in res.reason


def test_boot_counter_rolls_a_trial_back_after_three_starts(board):
    layout = board[0]
    inst = install_version(make_bundle(board[3], "0.2.0", board[1]), layout, builder=fake_venv, create_user=False)
    releases.begin_trial(layout, inst.version)
    for _ in range(releases.MAX_TRIAL_BOOTS):
        assert releases.boot_check(layout) is None
        assert layout.linked_version(layout.current) == "0.2.0"
    assert releases.boot_check(layout) == "0.1.0"  # the 4th start runs the good version
    assert layout.linked_version(layout.current) == "0.1.0"
    assert releases.boot_check(layout) is None  # the good version is never counted
    assert "started 3 times without passing the health gate" in releases.load(layout).history[-1]["reason"]


def test_on_failure_rollback_only_takes_back_a_trial(board):
    layout = board[0]
    assert releases.rollback(layout, "canopy.service failed") is None  # the good version failed: nothing older to run
    install_version(make_bundle(board[3], "0.2.0", board[1]), layout, builder=fake_venv, create_user=False)
    releases.begin_trial(layout, "0.2.0")
    assert releases.rollback(layout, "canopy.service failed") == "0.1.0"
    assert layout.linked_version(layout.current) == "0.1.0"


def test_a_failed_venv_build_leaves_nothing(board):
    layout, key, _, tmp = board

    def broken_pip(target: Path, wheels: Path, requirement: str) -> None:
        (target / "bin").mkdir(parents=True)
        raise InstallError("pip install failed: no matching distribution")

    with pytest.raises(InstallError, match="no matching distribution"):
        install_version(make_bundle(tmp, "0.2.0", key), layout, builder=broken_pip, create_user=False)
    assert not layout.version_dir("0.2.0").exists()
    assert layout.linked_version(layout.current) == "0.1.0"


def test_old_versions_are_pruned_but_never_the_good_one(board):
    svc = service(board, {f"0.{i}.0" for i in range(1, 7)})
    for i in range(2, 7):
        assert run_update(board, f"0.{i}.0", svc).outcome == "committed"
    layout = board[0]
    kept = sorted(p.name for p in layout.opt.iterdir() if p.is_dir() and not p.is_symlink() and (p / "bin").is_dir())
    assert kept == ["0.4.0", "0.5.0", "0.6.0"]


def test_applier_takes_handed_over_bundles_and_writes_results(board):
    layout, key, _, tmp = board
    svc = service(board, {"0.2.0"})
    queued = hand_over(make_bundle(tmp, "0.2.0", key), layout)
    assert queued.parent == layout.updates and not list(layout.updates.glob("*.part"))
    results = apply_pending(layout, svc, tmp / "status.json", policy=FAST, builder=fake_venv, create_user=False)
    assert [r.outcome for r in results] == ["committed"]
    assert not queued.exists()
    record = json.loads((layout.updates / "results" / "canopy-0.2.0-sensor.json").read_text())
    assert record["outcome"] == "committed" and record["version"] == "0.2.0" and record["previous"] == "0.1.0"


def test_the_ops_wrapper_runs_from_the_good_version(board):
    layout = board[0]
    wrapper = (layout.bin / "canopy-ops").read_text()
    assert wrapper.index(f"{layout.opt}/good") < wrapper.index(f"{layout.opt}/current")


def test_a_snapshot_from_the_old_process_while_it_stops_proves_nothing(board):
    layout, _, listener, tmp = board
    write_status(tmp / "status.json", connected=True, devices={"soil-1": "ok"}, boot=7)

    class OldOneWritesLast(FakeService):
        def _come_up(self):
            from gateway.ops.sd_notify import Notifier

            Notifier(self.listener.name).notify("READY=1")  # the new process is READY but never connects …
            write_status(self.status, connected=True, devices={"soil-1": "ok"}, boot=7)  # … the old one wrote this at shutdown

    res = run_update(board, "0.2.0", OldOneWritesLast(listener, tmp / "status.json", layout, {"0.2.0"}))
    assert res.outcome == "rolled_back" and "no status written since the restart" in res.reason, res
