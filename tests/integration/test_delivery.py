"""Delivery contract with the real daemon: recovery from a corrupt store, counters in …/state."""

from __future__ import annotations

import os

from tests.support import site_config, wait_until


def test_corrupt_store_at_start_is_moved_aside_alarm_raised_and_gateway_runs(tmp_path, farm_sim, broker, subscriber_factory, gateway_factory):
    store = tmp_path / "outbox.sqlite"
    store.write_bytes(b"\x00garbage from a dying SD card" * 1000)
    sub = subscriber_factory(broker.port)
    cfg = site_config(tmp_path, sim_port=farm_sim.port, broker={"host": "127.0.0.1", "port": broker.port})
    gw = gateway_factory(cfg)
    alarm = wait_until(lambda: next((r for r in sub.records("alarm") if r["type"] == "store.corrupt"), None), 15,
                       what="store.corrupt alarm on the broker")
    assert alarm["seq"] == 1 and alarm["severity"] == "critical"
    assert os.path.exists(alarm["moved_to"]) and open(alarm["moved_to"], "rb").read().startswith(b"\x00garbage")
    wait_until(lambda: len(sub.seqs("telemetry")) > 20, 10, what="telemetry after recovery")
    state = wait_until(lambda: (s := sub.latest_state()) and s.get("outbox", {}).get("alarm", {}).get("acknowledged") and s, 10,
                       what="state with counters")
    for lane in ("alarm", "event", "telemetry"):
        c = state["outbox"][lane]
        assert c["produced"] == c["acknowledged"] + c["pending"] + c["expired"] + sum(c["dropped"].values()), (lane, c)
    rc, _ = gw.terminate()
    assert rc == 0
