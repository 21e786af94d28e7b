"""`python -m simulator demo` (what `make demo DURATION=…` runs) exits 0 having shown acknowledged readings."""

from __future__ import annotations

import os
import subprocess
import sys

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
    if site == "community":  # the smoke triggered half-way is a critical alarm to the property office
        assert "alert.raised" in out and "[critical] property-office" in out, out[-3000:]
