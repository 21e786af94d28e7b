"""The replay service in-process against a real mosquitto: outbox + uplink + service, wired as the runtime wires them.

Judged by what a subscriber on the broker receives: the records again with
their seqs and bodies, and the ``replay.result`` on ``…/cmd/result``.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from core.clock import Clock
from core.protocol.messages.commands import ReplayResult
from core.protocol.schemas import validate
from core.protocol.topics import Topics
from core.records import Reading, event_body, reading_body
from gateway.config.broker import BrokerConfig
from gateway.outbox.policy import StorePolicy
from gateway.outbox.store import Outbox
from gateway.replay import sender as sender_mod
from gateway.replay.request import Ask, RecordsAsk
from gateway.replay.service import ReplayService
from gateway.uplink.uplink import Uplink
from tests.gateway.replay.site import GATEWAY, SITE, records, request, site_cfg
from tests.support import until

TOPICS = Topics(SITE, GATEWAY)


def reading(i: int) -> bytes:
    return reading_body(Reading(1_700_000_000.0 + i, "soil-1", "moisture", i, "%"))


class Rig:
    """Outbox, uplink and replay service wired as gateway/runtime.py does (the report's patch)."""

    def __init__(self, tmp_path, port: int, policy: StorePolicy | None = None):
        self.outbox = Outbox(str(tmp_path / "outbox.sqlite"), commit_interval=0.05, policy=policy)
        self.port = port
        self.states = 0

    async def open(self) -> "Rig":
        await self.outbox.open()
        self.outbox._pruner._next = float("inf")  # the tests prune when they mean to
        self.uplink = Uplink(BrokerConfig(host="127.0.0.1", port=self.port, backoff_initial=0.1, backoff_max=0.5),
                             TOPICS, self.outbox, batch_max_records=50)
        self.outbox.on_commit.append(self.uplink.committed)
        self.replay = ReplayService(site_cfg(), Clock(), self.outbox, self.uplink, self.emit,
                                    publish_state=self._state, publish_meta=lambda: None)
        assert self.replay.takes_requests
        self.uplink.subscribe(TOPICS.replay, self.replay.on_request)
        self.tasks = [asyncio.create_task(self.uplink.run()), asyncio.create_task(self.replay.run())]
        await until(self.uplink.online.is_set, what="uplink online")
        return self

    def _state(self) -> None:
        self.states += 1
        self.uplink.publish_state()

    async def emit(self, lane: str, body: bytes, topic: str | None = None):
        return await self.outbox.put(lane, [body], wait_commit=True, topic=topic)

    async def close(self) -> None:
        await self.uplink.stop()
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.outbox.close()


@pytest.fixture
async def rig(tmp_path, broker):
    made = []

    async def make(**kw) -> Rig:
        r = await Rig(tmp_path, broker.port, **kw).open()
        made.append(r)
        return r

    yield make
    for r in made:
        await r.close()


@pytest.fixture
async def sub(broker, subscriber_factory):
    s = await asyncio.to_thread(subscriber_factory, broker.port)
    yield s
    s.client.disconnect()


def assert_batches_valid(sub) -> None:
    """The telemetry and results the rig published (replays, replay.result) against docs/schemas.

    Not its …/state (the rig has no health) nor the test alarm's copy on a group topic (not a lifecycle record).
    """
    with sub.lock:
        raw = [(t, p) for t, p in sub.raw if t.endswith(("/telemetry", "/cmd/result", "/event"))]
    problems = [f"{t}: {p}" for t, payload in raw for p in validate(t, payload)]
    assert raw and not problems, problems[:5]


def results(sub) -> list[dict]:
    return [r for r in sub.records("event") if r.get("type") == "replay.result"]


async def delivered_and_retained(r: Rig, sub, lane: str, n: int) -> None:
    await until(lambda: len(sub.seqs(lane)) >= n, what=f"{n} {lane} records on the broker")
    await until(lambda: r.outbox.counters[lane].retained >= n, what=f"{n} {lane} records retained")


async def test_acknowledged_records_come_again_with_their_seqs_and_the_result_says_so(rig, sub):
    r = await rig()
    await r.outbox.put("telemetry", [reading(i) for i in range(120)], wait_commit=True)
    await r.outbox.put("alarm", [event_body(1.0, "store.corrupt", severity="critical", moved_to="x", detail="y")], wait_commit=True,
                       topic="event alert/property-office")
    await delivered_and_retained(r, sub, "telemetry", 120)
    first_copy = {rec["seq"]: rec for rec in sub.records("telemetry")}

    sub.publish(TOPICS.replay, records("telemetry", r.outbox.epoch, 30, 89))
    await until(lambda: results(sub), what="replay.result")
    again = sub.records("telemetry")[120:]
    assert [rec["seq"] for rec in again] == list(range(30, 90)), "the range again, in order, nothing else"
    assert all(rec == first_copy[rec["seq"]] for rec in again), "same seq, same body"
    replayed = sub.of("telemetry")[-2:]  # in messages of the uplink's size (batch_max_records 50), its epoch
    assert [m["seq"] for m in replayed] == [[30, 79], [80, 89]] and {m["epoch"] for m in replayed} == {r.outbox.epoch}
    (res,) = results(sub)
    assert (res["status"], res["lane"], res["epoch"], res["first"], res["last"]) == ("done", "telemetry", r.outbox.epoch, 30, 89)
    assert res["issuer"] == "centre" and "sent again 60 record(s)" in res["detail"]
    assert r.replay.counters["records_sent"] == 60 and r.outbox.counters["telemetry"].reconciles()

    # an alarm goes to each of its topics again, same bytes
    before = len(sub.of("alert/property-office"))
    sub.publish(TOPICS.replay, records("alarm", r.outbox.epoch, 1, 1))
    await until(lambda: len(results(sub)) == 2, what="second replay.result")
    assert len(sub.of("alert/property-office")) == before + 1
    assert results(sub)[1]["status"] == "done"
    assert_batches_valid(sub)


async def test_a_range_partly_pruned_is_reported_partial_with_what_is_gone(rig, sub):
    r = await rig(policy=StorePolicy(retain_bytes=6000))
    await r.outbox.put("telemetry", [reading(i) for i in range(200)], wait_commit=True)
    await delivered_and_retained(r, sub, "telemetry", 200)
    await r.outbox._pruner.prune(False)
    oldest = await r.outbox.oldest_held("telemetry")
    assert 1 < oldest < 200

    sub.publish(TOPICS.replay, records("telemetry", r.outbox.epoch, 1, 200))
    await until(lambda: results(sub), what="replay.result")
    (res,) = results(sub)
    assert (res["status"], res["reason"], res["oldest_kept"]) == ("partial", "not_held", oldest)
    assert (res["first"], res["last"]) == (oldest, 200)
    assert f"{oldest - 1} no longer held: 1-{oldest - 1}" in res["detail"]
    if "missing" in ReplayResult.model_fields:  # the counts, once the schema carries them
        assert (res["sent"], res["missing"], res["missing_runs"]) == (201 - oldest, oldest - 1, [[1, oldest - 1]])
    assert [rec["seq"] for rec in sub.records("telemetry")[200:]] == list(range(oldest, 201))
    assert_batches_valid(sub)


async def test_another_epoch_is_all_gone_and_junk_gets_no_answer(rig, sub):
    r = await rig()
    await r.outbox.put("event", [event_body(1.0, "x")], wait_commit=True)
    sub.publish(TOPICS.replay, b'{"v":2,"kind":"replay","issuer":"centre"}')  # unsigned
    sub.publish(TOPICS.replay, b"\x00" * 5000)  # too large
    sub.publish(TOPICS.replay, records("event", "f" * 16, 1, 5))
    await until(lambda: results(sub), what="replay.result")
    (res,) = results(sub)
    assert (res["status"], res["reason"]) == ("partial", "unknown_epoch") and "5 no longer held" in res["detail"]
    assert r.replay.counters["junk"] == {"unsigned": {"unsigned": 1}, "unparseable": {"too_large": 1}}


async def test_state_is_published_again_on_request_and_refusals_are_answered(rig, sub):
    r = await rig()
    sub.publish(TOPICS.replay, request("state"))
    sub.publish(TOPICS.replay, request("everything"))
    await until(lambda: len(results(sub)) == 2, what="two replay.result")
    done, rejected = sorted(results(sub), key=lambda x: x["status"])
    assert done["status"] == "done" and r.states == 1
    assert (rejected["status"], rejected["reason"]) == ("rejected", "unknown_action")


# --------------------------------------------------------------------------- pacing, without a broker


class FakeClient:
    def __init__(self, log):
        self.log = log

    async def publish(self, topic, payload, qos=1):
        self.log.append((topic, payload))


class FakeOutbox:
    """An outbox with alarms pending for a while, and two retained rows."""

    def __init__(self):
        self.epoch = "0123456789abcdef"
        self.alarms = 1
        self.counters = {"telemetry": SimpleNamespace(last_seq=2)}
        self.memory = SimpleNamespace(count=lambda lane: 0)

    def pending(self, lane):
        return self.alarms if lane == "alarm" else 0

    async def oldest_held(self, lane):
        return 1

    async def holding(self, lane, lo, hi):
        return SimpleNamespace(pending=[], retained=[(1, b'{"a":1}', None), (2, b'{"a":2}', None)])


async def test_replayed_messages_wait_behind_pending_alarms_and_stop_when_the_link_stays_down(monkeypatch):
    sent: list = []
    online = asyncio.Event()
    online.set()
    uplink = SimpleNamespace(topics=TOPICS, online=online, client=FakeClient(sent), batch_max_records=1,
                             batch_max_bytes=65536)
    outbox = FakeOutbox()
    answers = []

    async def emit(lane, body, topic):
        answers.append(body)

    svc = ReplayService(site_cfg(), Clock(), outbox, uplink, emit)
    ask = Ask(SimpleNamespace(id="r1", issuer="centre", on_behalf_of=None), "records",
              RecordsAsk("telemetry", outbox.epoch, 1, 2))
    job = asyncio.create_task(svc.replay_records(ask))
    await asyncio.sleep(0.3)
    assert sent == [], "nothing replayed while an alarm is pending"
    outbox.alarms = 0
    tally = await asyncio.wait_for(job, 5)
    assert [orjson_seq(p) for _, p in sent] == [[1, 1], [2, 2]] and tally.status == "done"

    monkeypatch.setattr(sender_mod, "LINK_WAIT", 0.2)
    online.clear()
    tally = await svc.replay_records(ask)
    assert tally.status == "partial" and tally.interrupted and b'"reason":"interrupted"' in answers[-1]


def orjson_seq(payload: bytes) -> list[int]:
    import orjson

    return orjson.loads(payload)["seq"]
