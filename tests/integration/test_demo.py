"""`python -m simulator demo` (what `make demo DURATION=…` runs) exits 0 having shown acknowledged readings,
says which MQTT version its broker speaks (and what the 3.1.1 fallback loses), and stops cleanly on Ctrl-C or SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.support import ROOT


@pytest.mark.parametrize("site,broker", [("farm", "mosquitto"), ("community", "amqtt")])
def test_demo_runs_end_to_end_and_exits_0(site, broker):
    env = dict(os.environ)
    if broker == "amqtt":
        env["CANOPY_EMBEDDED_BROKER"] = "amqtt"  # what a machine without mosquitto gets
    proc = subprocess.run([sys.executable, "-m", "simulator", "demo", "--site", site, "--duration", "10"], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=60)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "demo OK" in out
    last = [line for line in out.splitlines() if "broker delivered" in line][-1]
    delivered = int(last.split("broker delivered ")[1].split()[0])
    assert delivered > 20, last
    assert "sequence gaps 0" in last
    if broker == "mosquitto":  # the demo starts an MQTT 5 broker when it can
        assert "broker: mosquitto" in out and "MQTT 5" in out, out[:2000]
    else:  # and says on screen what the 3.1.1 fallback loses
        assert "MQTT 3.1.1 only" in out and "no shared subscriptions" in out and "no Maximum Packet Size" in out, out[:2000]
    assert "devices described" in out, "the retained …/meta reached the view"
    if site == "community":
        assert "王阿姨家门" in out, "a place rendered from …/meta alone"  # the smoke triggered half-way is a critical alarm to the property office
        assert "alert.raised" in out and "[critical] property-office" in out, out[-3000:]


def _delivered(line: str) -> int:
    return int(line.split("broker delivered ")[1].split()[0]) if "broker delivered " in line else 0


@pytest.mark.parametrize("how,when", [("ctrl-c", "running"), ("sigterm", "running"), ("ctrl-c", "starting")])
def test_demo_stops_cleanly_on_ctrl_c_and_sigterm(how, when):
    """Ctrl-C (SIGINT to the whole foreground process group, as a terminal sends it) or SIGTERM to the demo
    alone: exit 0 once readings flowed (130 if stopped before), and never a traceback."""
    proc = subprocess.Popen([sys.executable, "-m", "simulator", "demo", "--site", "farm"], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if (when == "starting" and line.startswith("Canopy demo")) or _delivered(line) > 0:
                break
        if how == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=40)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    out = "".join(lines) + rest
    assert "Traceback" not in out, out[-3000:]
    assert "demo FAILED" not in out and "<site>" not in out, out[-3000:]
    if when == "running":
        assert proc.returncode == 0, out[-3000:]
        # the gateway said goodbye through its broker before that broker stopped
        assert "demo OK" in out and "last state: offline (shutdown)" in out, out[-3000:]
    else:
        assert proc.returncode in (0, 130), out[-3000:]
