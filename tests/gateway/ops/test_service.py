"""SystemdService against a fake `systemctl`: READY only from the invocation started by the restart."""

from __future__ import annotations

import os

from gateway.ops.service import SystemdService


def fake_systemctl(tmp_path, state: str) -> str:
    (tmp_path / "state").write_text(state)
    script = tmp_path / "systemctl"
    script.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/calls\ncase "$1" in show) cat {tmp_path}/state;; esac\n')
    os.chmod(script, 0o755)
    return str(script)


def test_ready_needs_a_new_invocation_that_is_active_and_running(tmp_path):
    svc = SystemdService(systemctl=fake_systemctl(tmp_path, "ActiveState=active\nSubState=running\nInvocationID=old\n"))
    svc.restart()
    assert "restart --no-block canopy.service" in (tmp_path / "calls").read_text()
    assert not svc.ready()  # still the old process: the restart job has not run yet
    (tmp_path / "state").write_text("ActiveState=activating\nSubState=start\nInvocationID=new\n")
    assert not svc.ready()  # started, not READY yet
    (tmp_path / "state").write_text("ActiveState=active\nSubState=running\nInvocationID=new\n")
    assert svc.ready()
