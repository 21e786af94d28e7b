"""Gap repair with the real daemon and mosquitto: acknowledged records come again on a signed replay request.

The gateway keeps what the broker acknowledged (``store.retention``); a signed
``replay`` envelope on ``…/replay`` names a range; the records arrive again with
their seqs and bodies, and ``replay.result`` on ``…/cmd/result`` says what was
sent and what is no longer held (docs/protocol.md#replay).
"""

from __future__ import annotations

import time

import orjson

from core.protocol import envelope
from tests.support import site_config, wait_until

KEY = envelope.generate()
BASE = "canopy/v1/test-site/gw-1"


def config(tmp_path, farm_sim, broker, **retention):
    return site_config(
        tmp_path, sim_port=farm_sim.port, broker={"host": "127.0.0.1", "port": broker.port},
        store={"retention": retention} if retention else None,
        commands={"issuers": {"centre": {"public_key": envelope.public_key_text(KEY.public_key()), "replay": True}}})


def replay_request(epoch: str, first: int, last: int, lane: str = "telemetry") -> tuple[str, bytes]:
    env = envelope.make(v=2, kind="replay", issuer="centre", site="test-site", gateway="gw-1", target="*",
                        action="records", params={"lane": lane, "epoch": epoch, "from_seq": first, "to_seq": last},
                        valid_for=300)
    return env["id"], orjson.dumps(envelope.sign(env, KEY))


def result_for(sub, request_id: str):
    return next((r for r in sub.records("event") if r.get("type") == "replay.result" and r.get("id") == request_id), None)


def state_where(sub, check):
    return wait_until(lambda: (s := sub.latest_state()) and s.get("status") == "online" and check(s) and s, 20,
                      what="a …/state that shows it")


def test_acknowledged_records_come_again_with_their_seqs_on_a_signed_replay_request(tmp_path, farm_sim, broker,
                                                                                  subscriber_factory, gateway_factory):
    sub = subscriber_factory(broker.port)
    gw = gateway_factory(config(tmp_path, farm_sim, broker))
    state = state_where(sub, lambda s: "replay" in s.get("capabilities", ())
                        and s["outbox"]["telemetry"].get("retained", 0) >= 60)
    epoch = state["outbox"]["epoch"]
    first_copy = {r["seq"]: r for r in sub.records("telemetry")}
    assert set(range(10, 41)) <= set(first_copy)

    request_id, payload = replay_request(epoch, 10, 40)
    sub.publish(f"{BASE}/replay", payload)
    result = wait_until(lambda: result_for(sub, request_id), 20, what="replay.result")
    assert (result["status"], result["lane"], result["epoch"], result["first"], result["last"]) == \
        ("done", "telemetry", epoch, 10, 40), result
    assert result["issuer"] == "centre" and "sent again 31 record(s)" in result["detail"]
    assert (result["sent"], result["missing"]) == (31, 0), result
    seen: dict[int, list[dict]] = {}
    for r in sub.records("telemetry"):
        seen.setdefault(r["seq"], []).append(r)
    for seq in range(10, 41):
        assert len(seen[seq]) >= 2 and all(r == first_copy[seq] for r in seen[seq]), f"seq {seq}: same body again"
    counters = sub.latest_state()["outbox"]["telemetry"]
    assert counters["produced"] == counters["acknowledged"] + counters["pending"] + counters["expired"] + \
        sum(counters["dropped"].values()), counters
    rc, _ = gw.terminate()
    assert rc == 0


def test_a_range_partly_pruned_is_reported_with_the_part_no_longer_held(tmp_path, farm_sim, broker,
                                                                        subscriber_factory, gateway_factory):
    sub = subscriber_factory(broker.port)
    gw = gateway_factory(config(tmp_path, farm_sim, broker, max_bytes=6000))  # ~50 readings; pruned every 5 s
    state = state_where(sub, lambda s: (t := s["outbox"]["telemetry"]).get("retained", 0) > 10
                        and t["acknowledged"] - t["retained"] > 20)
    epoch = state["outbox"]["epoch"]
    top = max(sub.seqs("telemetry"))
    time.sleep(0.5)  # every seq up to top is acknowledged and moved by now (commit_interval 0.2 s)

    request_id, payload = replay_request(epoch, 1, top)
    sub.publish(f"{BASE}/replay", payload)
    result = wait_until(lambda: result_for(sub, request_id), 20, what="replay.result")
    oldest = result["oldest_kept"]
    assert (result["status"], result["reason"]) == ("partial", "not_held") and 1 < oldest <= top, result
    assert f"{oldest - 1} no longer held: 1-{oldest - 1}" in result["detail"], result
    assert (result["first"], result["last"]) == (oldest, top), result
    assert (result["sent"], result["missing"], result["missing_runs"]) == (top - oldest + 1, oldest - 1,
                                                                           [[1, oldest - 1]]), result
    again = [r["seq"] for r in sub.records("telemetry") if oldest <= r["seq"] <= top]
    assert sorted(set(again)) == list(range(oldest, top + 1)) and len(again) >= 2 * (top - oldest + 1)
    rc, _ = gw.terminate()
    assert rc == 0
