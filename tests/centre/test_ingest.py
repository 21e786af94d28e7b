"""Ingest end to end: real mosquitto, real SQLite and PostgreSQL (db_url is parametrised over both)."""

from __future__ import annotations

import asyncio

import orjson
import sqlalchemy as sa

from centre.store import schema
from tests.centre.support import CentreRun, Publisher, centre_config, count, reading, wait_for

T0 = 1_795_348_800.0  # an hour boundary


async def test_records_stored_once_through_duplicates_and_a_restart(db_url, broker):
    pub = Publisher(broker.port)
    run = await CentreRun(centre_config(db_url, broker.port)).start()
    try:
        for first in range(1, 1001, 100):  # 1000 readings in batches of 100
            pub.telemetry([reading(s, T0 + s) for s in range(first, first + 100)])
        pub.telemetry([reading(s, T0 + s) for s in range(450, 520)])  # a lost PUBACK: sent again, other bounds
        pub.flush()
        await wait_for(lambda: count(run.engine, schema.telemetry), what="1000 readings")
        await run.stop()
        for first in range(901, 1401, 100):  # the centre is down: the broker keeps them for its session
            pub.telemetry([reading(s, T0 + s) for s in range(first, first + 100)])
        pub.flush()
        run = await CentreRun(centre_config(db_url, broker.port)).start()

        async def all_in():
            return await count(run.engine, schema.telemetry) >= 1400

        await wait_for(all_in, what="1400 readings after the restart")
        pub.telemetry([reading(s, T0 + s) for s in range(1, 50)])  # old duplicates after the restart
        pub.flush()
        await wait_for(lambda: _dups(run, 49), what="the late duplicates counted")
        assert await count(run.engine, schema.telemetry) == 1400
        async with run.engine.connect() as conn:
            seqs = [r[0] for r in await conn.execute(sa.select(schema.telemetry.c.seq).order_by("seq"))]
        assert seqs == list(range(1, 1401))
    finally:
        pub.close()
        await run.stop()


async def _dups(run, n):
    return run.ingest.counters["duplicates"] >= n


async def test_event_records_once_whatever_topic_and_lifecycle(db_url, broker):
    pub = Publisher(broker.port, site="sunny-court", gateway="gw-3")
    run = await CentreRun(centre_config(db_url, broker.port)).start()
    base = {"alert": "1-2da3", "rule": "smoke-alarm", "class": "fire", "severity": "critical", "subject": "smoke-shed",
            "device": "smoke-shed", "location": {"site": "sunny-court", "building": "3"}, "raised_at": T0}
    raised = {"seq": 1, "ts": T0, "type": "alert.raised", **base, "groups": ["property-office"], "status": "raised",
              "step": 0, "next_escalation_at": T0 + 120, "message": "smoke", "lang": "en"}
    escalated = {"seq": 2, "ts": T0 + 120, "type": "alert.escalated", **base, "groups": ["property-office", "volunteers"],
                 "status": "escalated", "step": 1, "next_escalation_at": None}
    acked = {"seq": 1, "ts": T0 + 136, "type": "alert.acknowledged", **base, "groups": ["property-office", "volunteers"],
             "status": "acknowledged", "by": "vol-wang", "note": "on my way", "step": 1, "issuer": "centre-1", "ack": "4c1d9e20"}
    resolved = {"seq": 2, "ts": T0 + 336, "type": "alert.resolved", **base, "groups": ["property-office", "volunteers"],
                "status": "resolved", "resolved_by": "condition", "acked_by": "vol-wang", "duration": 336.0}
    result = {"seq": 3, "ts": T0 + 5, "type": "cmd.result", "id": "c748f74a", "status": "executed", "issuer": "farmer",
              "action": "irrigate", "target": "zone-2", "on_behalf_of": "li"}
    accepted = {**result, "seq": 4, "status": "accepted"}  # arrives after executed: must not move it back
    try:
        # resolution first (the event lane overtook the alarm lane), each copy on several topics
        for topic in (pub.topics.event, pub.topics.alert_group("property-office"), pub.topics.alert_group("volunteers")):
            pub.events("event", [acked, resolved], topic)
        pub.events("alarm", [raised], pub.topics.alert_group("property-office"))
        pub.events("alarm", [raised, escalated])
        pub.events("alarm", [escalated], pub.topics.alert_group("volunteers"))
        pub.events("event", [result], pub.topics.cmd_result)
        pub.events("event", [accepted], pub.topics.cmd_result)
        pub.flush()
        await wait_for(lambda: count(run.engine, schema.records), what="records")

        async def five():
            return await count(run.engine, schema.records) == 6 and await count(run.engine, schema.alert_events) == 4

        await wait_for(five, what="6 records, 4 lifecycle events")
        async with run.engine.connect() as conn:
            alert = (await conn.execute(sa.select(schema.alerts))).one()._mapping
            cmd = (await conn.execute(sa.select(schema.commands).where(schema.commands.c.id == "c748f74a"))).one()._mapping
            ack = (await conn.execute(sa.select(schema.commands).where(schema.commands.c.id == "4c1d9e20"))).one()._mapping
        assert alert["status"] == "resolved" and alert["acked_by"] == "vol-wang" and alert["ack_note"] == "on my way"
        assert alert["step"] == 1 and alert["groups"] == ["property-office", "volunteers"]
        assert alert["raised_at"] == T0 and alert["resolved_at"] == T0 + 336 and alert["next_escalation_at"] is None
        assert (cmd["status"], cmd["kind"], cmd["on_behalf_of"], cmd["site"]) == ("executed", "command", "li", "sunny-court")
        assert (ack["status"], ack["kind"], ack["on_behalf_of"]) == ("executed", "ack", "vol-wang")
    finally:
        pub.close()
        await run.stop()


async def test_telemetry_rollup(db_url, broker):
    pub = Publisher(broker.port)
    run = await CentreRun(centre_config(db_url, broker.port)).start()
    try:
        recs = [reading(i + 1, T0 + i * 60, value=float(i)) for i in range(120)]  # two hours, one a minute: 0..119
        recs += [reading(121, T0 + 10, point="rain", value=True, unit=None),
                 reading(122, T0 + 10, point="model", value="WS-100", unit=None),
                 {"seq": 123, "ts": T0 + 10, "device": "soil-1", "point": "ec", "value": None, "invalid": "nan"},
                 reading(124, T0 + 20, point="ec", value=887, unit="uS/cm")]
        pub.telemetry(recs[:70])
        pub.telemetry(recs[50:])  # overlaps: duplicates must not count twice
        pub.flush()
        await wait_for(lambda: _exactly(run, schema.telemetry, 124), what="124 readings")
        h = schema.telemetry_hourly
        async with run.engine.connect() as conn:
            rows = {(r.point, r.hour): r for r in await conn.execute(sa.select(h))}
            ec = (await conn.execute(sa.select(schema.telemetry).where(schema.telemetry.c.seq == 123))).one()
            model = (await conn.execute(sa.select(schema.telemetry).where(schema.telemetry.c.seq == 122))).one()
        first, second = rows[("moisture", int(T0))], rows[("moisture", int(T0) + 3600)]
        assert (first.count, first.min, first.max, first.total / first.count) == (60, 0.0, 59.0, 29.5)
        assert (second.count, second.min, second.max, second.total) == (60, 60.0, 119.0, sum(range(60, 120)))
        assert first.unit == "%"
        assert rows[("ec", int(T0))].count == 1 and rows[("ec", int(T0))].max == 887.0  # the invalid one is left out
        assert ("rain", int(T0)) not in rows and ("model", int(T0)) not in rows
        assert (ec.value, ec.invalid) == (None, "nan") and (model.value, model.text) == (None, "WS-100")
    finally:
        pub.close()
        await run.stop()


async def _exactly(run, table, n):
    return await count(run.engine, table) == n


async def test_gateway_state_and_meta(db_url, broker):
    pub = Publisher(broker.port)
    pub.state("online", meta="3f9a0c1d2e4b5a67")
    pub.publish(pub.topics.meta, b'{"v":2,"site":"green-valley","gateway":"farm-gw-01","version":"3f9a0c1d2e4b5a67"}',
                retain=True)
    pub.flush()
    run = await CentreRun(centre_config(db_url, broker.port)).start()  # retained: arrives at subscribe
    sub = run.centre.hub.subscribe(["gateway"])
    g = schema.gateways
    try:
        async def online():
            async with run.engine.connect() as conn:
                r = (await conn.execute(sa.select(g))).one_or_none()
            return r if r is not None and r.status == "online" and r.meta is not None else None

        row = await wait_for(online, what="the gateway online with its meta")
        assert row.capabilities == ["replay", "meta"] and row.meta_version == "3f9a0c1d2e4b5a67" and row.version == "0.2.0"
        pub.state("offline", reason="connection lost")
        pub.flush()

        async def offline():
            async with run.engine.connect() as conn:
                r = (await conn.execute(sa.select(g))).one()
            return r if r.status == "offline" else None

        row = await wait_for(offline, what="offline")
        assert row.reason == "connection lost" and row.capabilities == ["replay", "meta"]  # health kept
        change = await sub.get()
        assert change.data["status"] == "online" and change.data["previous"] == "unknown"
        change = await sub.get()
        assert (change.data["status"], change.data["previous"], change.data["reason"]) == ("offline", "online", "connection lost")
    finally:
        pub.close()
        await run.stop()


async def test_junk_is_counted_never_stored(db_url, broker):
    pub = Publisher(broker.port)
    run = await CentreRun(centre_config(db_url, broker.port)).start()
    t = pub.topics
    try:
        pub.publish(t.telemetry, b"not json")
        pub.publish(t.telemetry, b"[1,2]")
        pub.publish(t.event, b'{"v":2,"site":"other","gateway":"farm-gw-01","lane":"event","epoch":"0123456789abcdef","records":[]}')
        pub.publish(t.telemetry, b'{"v":2,"site":"green-valley","gateway":"farm-gw-01","lane":"telemetry","epoch":"xyz","records":[]}')
        pub.publish(t.telemetry, b'{"v":2,"site":"green-valley","gateway":"farm-gw-01","lane":"telemetry","epoch":"0123456789abcdef",'
                                 b'"records":[{"seq":"1","ts":1,"device":"d","point":"p"},{"seq":2,"ts":1,"device":"d"},'
                                 b'{"seq":3,"ts":1795348800,"device":"d","point":"p","value":1e308}]}')
        pub.publish(t.cmd, b'{"anything": 1}')  # a message to the gateway: skipped, not junk
        nested = b"[" * 2000 + b"]" * 2000
        pub.publish(t.event, b'{"v":2,"site":"green-valley","gateway":"farm-gw-01","x":' + nested + b"}")
        pub.flush()

        async def counted():
            c = run.ingest.counters
            return c["junk.not_json"] + c["junk.not_object"] + c["junk.wrong_gateway"] + c["junk.not_a_batch"] \
                + c["junk.too_deep"] >= 5 and c["junk.bad_record"] == 2

        await wait_for(counted, what="junk counted")

        async def good_one_stored():  # counted when parsed; its batch may still be on its way to the store
            return await count(run.engine, schema.telemetry) >= 1

        await wait_for(good_one_stored, what="the one good reading stored")
        assert await count(run.engine, schema.telemetry) == 1  # only the one good reading
        assert await count(run.engine, schema.records) == 0
    finally:
        pub.close()
        await run.stop()


async def test_gap_recorded_then_repaired(db_url, broker):
    pub = Publisher(broker.port)
    cfg = centre_config(db_url, broker.port, gap_report_after=0.5, gap_check_interval=0.2)
    run = await CentreRun(cfg).start()
    asked = []

    async def replay(gap):
        asked.append(gap)
        return True

    run.centre.request_replay = replay
    g = schema.gaps
    try:
        pub.telemetry([reading(s, T0 + s) for s in range(1, 11)])
        pub.telemetry([reading(s, T0 + s) for s in range(16, 21)])  # 11-15 missing
        pub.flush()

        async def recorded():
            async with run.engine.connect() as conn:
                return (await conn.execute(sa.select(g))).one_or_none()

        row = await wait_for(recorded, what="the gap recorded")
        assert (row.first_seq, row.last_seq, row.size, row.lane) == (11, 15, 5, "telemetry")
        await wait_for(lambda: _true(asked), what="a replay request")
        assert (asked[0].first_seq, asked[0].last_seq, asked[0].epoch) == (11, 15, pub.epoch)
        pub.telemetry([reading(s, T0 + s) for s in range(11, 16)])  # the replay
        pub.flush()

        async def repaired():
            r = await recorded()
            return r if r.state == "repaired" else None

        row = await wait_for(repaired, what="the gap repaired")
        assert row.size == 0 and row.requests >= 1
        async with run.engine.connect() as conn:
            floor = (await conn.execute(sa.select(schema.lanes.c.floor))).scalar_one()
        assert floor == 20
    finally:
        pub.close()
        await run.stop()


async def _true(x):
    return bool(x)


async def test_gap_given_up_is_unrepairable_with_its_size(db_url, broker):
    pub = Publisher(broker.port)
    run = await CentreRun(centre_config(db_url, broker.port, gap_report_after=0.3, gap_check_interval=0.2,
                                        gap_give_up_after=1.0)).start()
    g = schema.gaps
    try:
        pub.events("event", [{"seq": 1, "ts": T0, "type": "device.status", "device": "d"},
                             {"seq": 5, "ts": T0, "type": "device.status", "device": "d"}])
        pub.flush()

        async def given_up():
            async with run.engine.connect() as conn:
                r = (await conn.execute(sa.select(g))).one_or_none()
            return r if r is not None and r.state == "unrepairable" else None

        row = await wait_for(given_up, what="the gap given up")
        assert (row.first_seq, row.last_seq, row.size, row.lane) == (2, 4, 3, "event")
        async with run.engine.connect() as conn:
            assert (await conn.execute(sa.select(schema.lanes.c.floor))).scalar_one() == 5
    finally:
        pub.close()
        await run.stop()


async def test_a_partial_replay_answer_makes_the_part_no_longer_held_unrepairable_at_once(db_url, broker):
    """The gateway answers ``partial`` (oldest_kept, missing_runs): that part is unrepairable now, with its size,
    long before ``gap_give_up_after``; the part it sends again is repaired; the floor moves past both."""
    pub = Publisher(broker.port)
    run = await CentreRun(centre_config(db_url, broker.port, gap_report_after=0.3, gap_check_interval=0.2)).start()
    asked = []

    async def replay(gap):
        asked.append(gap)
        return True

    run.centre.request_replay = replay
    g = schema.gaps
    try:
        pub.telemetry([reading(s, T0 + s) for s in range(1, 11)])
        pub.telemetry([reading(s, T0 + s) for s in range(31, 41)])  # 11-30 missing
        pub.flush()
        await wait_for(lambda: _true(asked), what="a replay request")
        assert (asked[0].first_seq, asked[0].last_seq) == (11, 30)
        # the gateway still holds 16-30 except 20-21 (thinned): it sends those again, then answers
        pub.telemetry([reading(s, T0 + s) for s in range(16, 20)])
        pub.telemetry([reading(s, T0 + s) for s in range(22, 31)])
        pub.events("event", [{"seq": 1, "ts": T0 + 60, "type": "replay.result", "id": "replay-1-1", "issuer": "centre-1",
                              "status": "partial", "reason": "not_held", "lane": "telemetry", "epoch": pub.epoch,
                              "first": 16, "last": 30, "oldest_kept": 16, "sent": 13, "pending": 0, "missing": 7,
                              "missing_runs": [[11, 15], [20, 21]], "detail": "sent again 13 record(s)"}],
                   pub.topics.cmd_result)
        pub.flush()

        async def settled():
            async with run.engine.connect() as conn:
                rows = (await conn.execute(sa.select(g).order_by(g.c.first_seq))).all()
            return rows if rows and all(r.state in ("repaired", "unrepairable") for r in rows) else None

        rows = await wait_for(settled, what="the gap cut along what the gateway no longer holds")
        assert [(r.first_seq, r.last_seq, r.size, r.state) for r in rows] == [
            (11, 15, 5, "unrepairable"), (20, 21, 2, "unrepairable")]  # 16-19 and 22-30 arrived: nothing left of them
        assert "no longer held" in rows[0].detail and run.ingest.gaps.counters["not_held"] == 7
        async with run.engine.connect() as conn:
            floor = sa.select(schema.lanes.c.floor).where(schema.lanes.c.lane == "telemetry")
            assert (await conn.execute(floor)).scalar_one() == 40
    finally:
        pub.close()
        await run.stop()


async def test_a_lost_tail_is_a_gap_by_the_last_seq_the_state_announces(db_url, broker):
    """The last messages of a lane lost (they went to a dead member): no later seq shows the gap, the gateway's
    ``…/state`` (``outbox.{lane}.last_seq``) does; a later run reaching past that tail is tracked in full."""
    pub = Publisher(broker.port)
    run = await CentreRun(centre_config(db_url, broker.port, gap_report_after=0.3, gap_check_interval=0.2)).start()
    asked = []

    async def replay(gap):
        asked.append(gap)
        return True

    run.centre.request_replay = replay
    try:
        pub.telemetry([reading(s, T0 + s) for s in range(1, 21)])  # 21-30 were published and lost
        pub.state("online", outbox={"epoch": pub.epoch, "telemetry": {"last_seq": 30}, "event": {"last_seq": 0}})
        pub.flush()
        await wait_for(lambda: _true(asked), what="a replay request for the tail")
        assert (asked[0].first_seq, asked[0].last_seq, asked[0].lane) == (21, 30, "telemetry")
        pub.telemetry([reading(s, T0 + s) for s in range(36, 41)])  # later records: 31-35 missing beyond the tail
        pub.flush()
        await wait_for(lambda: _true([a for a in asked if a.first_seq == 31]), what="a request for 31-35")
        assert {(a.first_seq, a.last_seq) for a in asked} == {(21, 30), (31, 35)}
        pub.telemetry([reading(s, T0 + s) for s in range(21, 36)])  # the replay
        pub.flush()

        async def repaired():
            async with run.engine.connect() as conn:
                rows = (await conn.execute(sa.select(schema.gaps).order_by(schema.gaps.c.first_seq))).all()
            return rows if all(r.state == "repaired" for r in rows) else None

        rows = await wait_for(repaired, what="the tail repaired")
        assert [(r.first_seq, r.last_seq, r.size) for r in rows] == [(21, 30, 0), (31, 35, 0)]
        async with run.engine.connect() as conn:
            floor = sa.select(schema.lanes.c.floor).where(schema.lanes.c.lane == "telemetry")
            assert (await conn.execute(floor)).scalar_one() == 40
    finally:
        pub.close()
        await run.stop()


async def test_a_command_result_change_is_plain_json_for_the_other_instances(db_url, broker):
    """The ``command`` change of a stored result goes to other instances as JSON (PostgreSQL NOTIFY): its keys
    must be plain str (RETURNING gave sqlalchemy ``quoted_name`` keys, which orjson refuses: the bridge died)."""
    pub = Publisher(broker.port)
    run = await CentreRun(centre_config(db_url, broker.port)).start()
    sub = run.centre.hub.subscribe(["command"])
    try:
        pub.events("event", [{"seq": 1, "ts": T0, "type": "cmd.result", "id": "c748f74a", "status": "executed",
                              "issuer": "farmer", "action": "irrigate", "target": "zone-2"}], pub.topics.cmd_result)
        pub.flush()
        change = await asyncio.wait_for(sub.queue.get(), 20)
        assert all(type(k) is str for k in change.data)
        assert orjson.loads(orjson.dumps(change.data))["status"] == "executed"
    finally:
        pub.close()
        await run.stop()


async def test_mqtt311_plain_subscription(db_url, broker):
    pub = Publisher(broker.port)
    run = await CentreRun(centre_config(db_url, broker.port, protocol="3.1.1")).start()
    try:
        pub.telemetry([reading(s, T0 + s) for s in range(1, 101)])
        pub.flush()
        await wait_for(lambda: _exactly(run, schema.telemetry, 100), what="100 readings over MQTT 3.1.1")
    finally:
        pub.close()
        await run.stop()
