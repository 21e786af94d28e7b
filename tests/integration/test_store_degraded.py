"""Alarms never wait on the disk (issue 12, item 4): the real daemon, mosquitto and the community simulator.

The state directory is a tmpfs of its own, filled to the last page with a
file once the gateway runs: every test first checks that commits really fail
(SQLite may reuse WAL pages, so a full disk alone proves nothing) through the
gateway's own ``…/state`` (``outbox.degraded``, ``commit_errors``).  Records
published from memory carry a memory epoch of their own; a receiver keys on
``(epoch, lane, seq)``, so no key may ever stand for two different records.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import orjson
import pytest

from tests.gateway.alerts.support import GROUPS, alert_records, chain, online, write_site
from tests.support import Mosquitto, wait_until

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("mount") is None,
                                reason="mounting a tmpfs needs root")

SMOKE = {"id": "smoke-alarm", "type": "state", "devices": ["smoke-shed", "smoke-hall"], "point": "alarm", "to": True,
         "severity": "critical", "class": "fire", "outputs": [{"device": "sounder", "point": "sounder"}],
         "message": {"en": "Smoke alarm at {where} ({device})"}}
RULES = {"groups": {"property-office": GROUPS["property-office"]}, "classes": {"fire": chain(0)}, "rules": [SMOKE]}


@pytest.fixture
def tmpfs(tmp_path):
    """A 6 MiB tmpfs as the state directory (unmounted, lazily, at teardown: a killed gateway may hold files)."""
    state = tmp_path / "state"
    state.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m,mode=0700", "tmpfs", str(state)]).returncode:
        pytest.skip("cannot mount a tmpfs here")
    yield state
    subprocess.run(["umount", "-l", str(state)], check=False)


def fill(folder: Path) -> Path:
    """Take every free page of the file system with one file; returns it (delete it to give the space back)."""
    path = folder / "filler"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for chunk in (1 << 20, 1 << 16, 4096, 512, 1):
            try:
                while True:
                    os.write(fd, b"\0" * chunk)
            except OSError:
                pass
    finally:
        os.close(fd)
    assert shutil.disk_usage(folder).free < 4096
    return path


def site(tmp_path: Path, state: Path, sim_port: int, broker_port: int) -> Path:
    return write_site(tmp_path, RULES, sim_port=sim_port, broker={"host": "127.0.0.1", "port": broker_port},
                      store={"path": str(state / "outbox.sqlite"), "commit_interval": 0.2})


def failing(sub) -> dict | None:
    """The latest …/state once it says the outbox's commits fail (the proof the disk is really full)."""
    st = sub.latest_state()
    box = (st or {}).get("outbox") or {}
    return st if box.get("degraded") and box.get("commit_errors", 0) > 0 else None


def records(sub, type_: str) -> list[tuple[dict, dict]]:
    """(envelope, record) of every copy of a record of this type the broker delivered."""
    with sub.lock:
        msgs = [m for _, m, _ in sub.messages if isinstance(m, dict) and "records" in m]
    return [(m, r) for m in msgs for r in m["records"] if r.get("type") == type_]


def no_key_reused(sub) -> None:
    """Every (epoch, lane, seq) a receiver would de-duplicate by stands for one record only."""
    seen: dict[tuple[str, str, int], bytes] = {}
    with sub.lock:
        msgs = [m for _, m, _ in sub.messages if isinstance(m, dict) and "records" in m]
    for m in msgs:
        for r in m["records"]:
            key, body = (m["epoch"], m["lane"], r["seq"]), orjson.dumps(r, option=orjson.OPT_SORT_KEYS)
            assert seen.setdefault(key, body) == body, f"{key} was used for two records: {seen[key]!r} and {body!r}"


def reconciled(sub) -> dict | None:
    """The latest …/state once nothing is pending or held and every lane's counters reconcile."""
    st = sub.latest_state()
    box = (st or {}).get("outbox") or {}
    lanes = [box.get(lane) or {} for lane in ("alarm", "event", "telemetry")]
    if not st or box.get("degraded") or any(c.get("in_memory") for c in lanes):
        return None
    ok = all(c["produced"] == c["acknowledged"] + c["pending"] + c["expired"] + sum(c["dropped"].values()) for c in lanes)
    return st if ok and lanes[0]["pending"] == 0 and lanes[1]["pending"] == 0 else None


def test_full_disk_smoke_alarm_reaches_the_broker_within_1s_and_everything_is_committed_afterwards(
        tmp_path, tmpfs, community_sim, broker, subscriber_factory, gateway_factory):
    sub = subscriber_factory(broker.port)
    gw = gateway_factory(site(tmp_path, tmpfs, community_sim.port, broker.port))
    wait_until(lambda: online(sub, "smoke-shed", "sounder"), 15, what="gateway online and polling")
    filler = fill(tmpfs)
    st = wait_until(lambda: failing(sub), 15, what="…/state saying the outbox's commits fail")
    errors = st["outbox"]["commit_errors"]
    degraded = wait_until(lambda: records(sub, "store.degraded"), 5, what="store.degraded on the broker")
    env, alarm = degraded[0]
    assert env["lane"] == "alarm" and alarm["severity"] == "critical" and alarm["reason"] == "disk_full"
    assert env["epoch"] == alarm["memory_epoch"] != st["outbox"]["epoch"]

    t0 = time.monotonic()
    community_sim.device("smoke-shed").model.trigger_smoke()
    raised = wait_until(lambda: alert_records(sub, "alert.raised", device="smoke-shed"), 3, 0.01, what="the smoke alarm")
    latency = time.monotonic() - t0
    assert latency < 1.0, f"the smoke alarm took {latency:.2f} s with the disk full"
    assert raised[0]["severity"] == "critical"
    wait_until(lambda: community_sim.device("sounder").model.outputs["sounder"], 2, what="the sounder on")
    st = wait_until(lambda: (s := sub.latest_state()) and s["outbox"]["commit_errors"] > errors and s, 5,
                    what="commits still failing after the alarm")
    assert st["outbox"]["degraded"] and not os.path.exists(tmpfs / "outbox.sqlite.corrupt")

    filler.unlink()  # the space returns
    recovered = wait_until(lambda: records(sub, "store.recovered"), 10, what="store.recovered")[0][1]
    assert recovered["reason"] == "disk_full" and recovered["memory_epoch"] == alarm["memory_epoch"]
    assert recovered["held"] >= 2 and recovered["delivered_from_memory"] >= 2  # store.degraded + alert.raised at least
    st = wait_until(lambda: reconciled(sub), 15, what="everything committed, counters reconciled")
    assert st["outbox"]["alarm"]["produced"] >= 2 and gw.alive()
    status = orjson.loads((tmpfs / "canopy-status.json").read_bytes())
    assert all(status["outbox"][lane]["produced"] == status["outbox"][lane]["acknowledged"] + status["outbox"][lane]["pending"]
               + status["outbox"][lane]["expired"] + sum(status["outbox"][lane]["dropped"].values())
               for lane in ("alarm", "event", "telemetry"))
    no_key_reused(sub)
    rc, _ = gw.terminate()
    assert rc == 0


def test_kill_9_while_degraded_then_restart_loses_no_alarm_and_reuses_no_sequence_number(
        tmp_path, tmpfs, community_sim, broker, subscriber_factory, gateway_factory):
    sub = subscriber_factory(broker.port)
    cfg = site(tmp_path, tmpfs, community_sim.port, broker.port)
    gw = gateway_factory(cfg)
    wait_until(lambda: online(sub, "smoke-shed"), 15, what="gateway online and polling")
    epoch = sub.latest_state()["outbox"]["epoch"]
    filler = fill(tmpfs)
    wait_until(lambda: failing(sub), 15, what="…/state saying the outbox's commits fail")
    community_sim.device("smoke-shed").model.trigger_smoke()
    shed = wait_until(lambda: alert_records(sub, "alert.raised", device="smoke-shed"), 3, what="the first smoke alarm")[0]
    first = wait_until(lambda: records(sub, "store.degraded"), 5, what="store.degraded")[0][0]["epoch"]
    gw.kill9()

    gw = gateway_factory(cfg)  # the disk is still full: it starts degraded
    wait_until(lambda: len(records(sub, "store.degraded")) >= 2, 20, what="store.degraded of the second process")
    second = records(sub, "store.degraded")[-1][0]["epoch"]
    assert second not in (first, epoch), "the restarted gateway must publish from memory under a fresh epoch"
    wait_until(lambda: online(sub, "smoke-hall"), 15, what="the restarted gateway polling")
    t0 = time.monotonic()
    community_sim.device("smoke-hall").model.trigger_smoke()
    wait_until(lambda: alert_records(sub, "alert.raised", device="smoke-hall"), 3, 0.01, what="the second smoke alarm")
    assert time.monotonic() - t0 < 1.0
    no_key_reused(sub)

    filler.unlink()
    wait_until(lambda: records(sub, "store.recovered"), 10, what="store.recovered")
    st = wait_until(lambda: reconciled(sub), 15, what="everything committed, counters reconciled")
    assert st["outbox"]["epoch"] == epoch and st["boot"] == 2, "same outbox file: its epoch, boot saved once it could"
    devices = {r["device"] for r in alert_records(sub, "alert.raised")}
    assert {"smoke-shed", "smoke-hall"} <= devices, "an alarm was lost"
    assert shed["alert"] in {r["alert"] for r in alert_records(sub, "alert.raised", device="smoke-shed")}
    no_key_reused(sub)
    rc, _ = gw.terminate()
    assert rc == 0


def test_a_deleted_outbox_raises_the_alarm_within_10s_and_nothing_accepted_afterwards_is_lost(
        tmp_path, community_sim, subscriber_factory, gateway_factory):
    broker = Mosquitto(tmp_path).start()
    try:
        sub = subscriber_factory(broker.port)
        state = tmp_path / "state"
        state.mkdir()
        cfg = site(tmp_path, state, community_sim.port, broker.port)
        gw = gateway_factory(cfg)
        wait_until(lambda: online(sub, "smoke-shed"), 15, what="gateway online and polling")
        epoch = sub.latest_state()["outbox"]["epoch"]
        t0 = time.monotonic()
        (state / "outbox.sqlite").unlink()
        env, alarm = wait_until(lambda: records(sub, "store.degraded"), 10, 0.05, what="the alarm for the deleted outbox")[0]
        assert time.monotonic() - t0 < 10.0 and alarm["reason"] == "deleted" and alarm["severity"] == "critical"
        wait_until(lambda: records(sub, "store.recovered"), 10, what="the outbox put back")
        assert (state / "outbox.sqlite").exists()
        assert sub.latest_state()["outbox"]["epoch"] == epoch, "put back from the open file: same epoch, same sequences"

        # accepted afterwards, while nothing can be delivered: must survive a kill -9
        broker.stop()
        community_sim.device("smoke-shed").model.trigger_smoke()
        status = state / "canopy-status.json"
        wait_until(lambda: orjson.loads(status.read_bytes())["outbox"]["alarm"]["pending"] >= 1, 10,
                   what="the smoke alarm accepted while the broker is away")
        gw.kill9()
        broker.start()
        gateway_factory(cfg)
        raised = wait_until(lambda: alert_records(sub, "alert.raised", device="smoke-shed"), 20, what="the smoke alarm")
        assert raised[0]["severity"] == "critical"
        with sub.lock:
            epochs = {m["epoch"] for _, m, _ in sub.messages if isinstance(m, dict) and m.get("lane") == "telemetry"}
        assert epochs == {epoch}, "the outbox was put back: its epoch never changed"
        wait_until(lambda: reconciled(sub), 15, what="everything delivered")
        seqs = sorted(set(sub.seqs("telemetry")))
        assert seqs == list(range(seqs[0], seqs[-1] + 1)), "telemetry accepted after the deletion was lost"
        no_key_reused(sub)
    finally:
        broker.stop()
