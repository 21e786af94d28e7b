"""`python -m simulator demo` (what `make demo DURATION=…` runs) exits 0 having shown acknowledged readings,
says which MQTT version its broker speaks (and what the 3.1.1 fallback loses), and stops cleanly on Ctrl-C or SIGTERM.
It also runs the centre: the console URL and the demo logins are printed, the centre stores every reading the
view received, and an ack and a command made through the centre's API with a printed login reach the gateway."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from tests.support import ROOT, wait_until


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
    # the centre ran beside it: its console, the demo logins, and every reading the view got is in its store
    assert "centre: console http://127.0.0.1:" in out, out[:3000]
    assert {"duty-desk", "volunteer-wang", "farmer-zhang"} <= set(_logins(out)), out[:3000]
    stored = [line for line in out.splitlines() if line.startswith("centre exited with code 0; its store holds ")]
    assert stored, out[-3000:]
    held, seen = stored[0].split("holds ")[1].split(" readings")[0], stored[0].split("view received ")[1].split(")")[0]
    assert int(held) == int(seen) == delivered, stored[0]
    if site == "community":
        assert "王阿姨家门" in out, "a place rendered from …/meta alone"  # the smoke triggered half-way is a critical alarm to the property office
        assert "alert.raised" in out and "[critical] property-office" in out, out[-3000:]


def _logins(out: str) -> dict[str, str]:
    """The demo logins printed under the console URL: name -> one-time password."""
    lines = out.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("centre: console http")), None)
    if start is None:
        return {}
    found = {}
    for line in lines[start + 1:start + 4]:
        parts = line.split()
        if len(parts) >= 2 and line.startswith("  "):
            found[parts[0]] = parts[1]
    return found


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


def test_the_demo_centre_takes_an_ack_and_a_command_from_a_printed_login():
    """Community demo: the duty desk logs in with the printed one-time password, sets their own, acknowledges the
    smoke alert raised half-way and unlocks Mrs Wang's door through the centre's API; both end executed, so the
    gateway trusts the centre's key.  Then SIGTERM: exit 0, no traceback."""
    proc = subprocess.Popen([sys.executable, "-m", "simulator", "demo", "--site", "community"], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any("alert.raised" in line for line in lines):
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
        out = "".join(lines)
        url = next(line.split("console ")[1].split()[0] for line in lines if line.startswith("centre: console http"))
        password = _logins(out)["duty-desk"]
        with httpx.Client(base_url=url, timeout=10) as http:
            me = http.post("/api/login", json={"username": "duty-desk", "password": password})
            assert me.status_code == 200 and me.json()["must_change_password"], me.text
            http.headers["X-CSRF-Token"] = me.json()["csrf"]
            assert http.post("/api/password", json={"current": password, "new": "my own desk password"}).status_code == 200
            me = http.post("/api/login", json={"username": "duty-desk", "password": "my own desk password"})
            http.headers["X-CSRF-Token"] = me.json()["csrf"]
            alert = wait_until(lambda: http.get("/api/alerts", params={"state": "open"}).json(), 15, interval=0.2,
                               what="the smoke alert at the centre")[0]
            ack = http.post(f"/api/alerts/{alert['site']}/{alert['gateway']}/{alert['alert']}/ack", json={"note": "demo"})
            unlock = http.post("/api/commands", json={"site": alert["site"], "gateway": alert["gateway"],
                                                      "action": "unlock", "target": "door-101"})
            assert ack.status_code == unlock.status_code == 202, ack.text + unlock.text
            for cid in (ack.json()["id"], unlock.json()["id"]):
                wait_until(lambda: http.get(f"/api/intents/{cid}").json()["status"] in ("executed", "rejected", "failed"),
                           20, interval=0.2, what=f"{cid} answered")
                assert http.get(f"/api/intents/{cid}").json()["status"] == "executed", http.get(f"/api/intents/{cid}").text
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=40)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    out = "".join(lines) + rest
    assert "Traceback" not in out, out[-3000:]
    assert proc.returncode == 0 and "demo OK" in out, out[-3000:]
