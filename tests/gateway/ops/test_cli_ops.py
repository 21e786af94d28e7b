"""The units' entry points and the operator's update hand-over, through `python -m gateway.cli.ops`."""

from __future__ import annotations

from gateway.cli.ops import main as ops_main
from gateway.ops import releases
from gateway.ops.install import install_version
from gateway.ops.layout import Layout
from gateway.ops.update import update
from tests.gateway.ops.fakes import fake_venv, make_bundle, release_key


def board(tmp_path):
    key = release_key(tmp_path)
    layout = Layout(tmp_path / "root")
    assert update(make_bundle(tmp_path, "0.1.0", key), layout, None, tmp_path / "s.json", builder=fake_venv, create_user=False).outcome == "installed"
    install_version(make_bundle(tmp_path, "0.2.0", key), layout, builder=fake_venv, create_user=False)
    releases.begin_trial(layout, "0.2.0")
    return layout, key


def test_boot_check_command_rolls_back_after_three_trial_starts(tmp_path, capsys):
    layout, _ = board(tmp_path)
    for _ in range(3):
        assert ops_main(["boot-check", "--root", str(layout.root)]) == 0
    assert layout.linked_version(layout.current) == "0.2.0"
    assert ops_main(["boot-check", "--root", str(layout.root)]) == 0  # never blocks the start itself
    assert "rolled back to 0.1.0" in capsys.readouterr().err
    assert layout.linked_version(layout.current) == "0.1.0"


def test_rollback_command(tmp_path, capsys):
    layout, _ = board(tmp_path)
    assert ops_main(["rollback", "--root", str(layout.root), "--no-restart"]) == 0
    assert "rolled back to 0.1.0" in capsys.readouterr().out
    assert ops_main(["rollback", "--root", str(layout.root), "--no-restart"]) == 0
    assert "nothing to roll back" in capsys.readouterr().out


def test_update_queue_hands_the_bundle_to_the_applier(tmp_path, capsys):
    layout, key = board(tmp_path)
    tar = make_bundle(tmp_path, "0.3.0", key)
    assert ops_main(["update", "--root", str(layout.root), "--queue", str(tar)]) == 0
    assert (layout.updates / tar.name).read_bytes() == tar.read_bytes()
    assert "handed to the applier" in capsys.readouterr().out


def test_install_refuses_a_bundle_from_another_release_key(tmp_path, capsys):
    layout, _ = board(tmp_path)
    tar = make_bundle(tmp_path, "0.3.0", release_key(tmp_path, "other"))
    assert ops_main(["install", "--root", str(layout.root), "--no-user", "--no-start", str(tar)]) == 1
    assert "signature does not verify" in capsys.readouterr().err
