"""The daemon's side: answers on …/cmd/result, the hand-over to the applier, and the relay of the applier's results."""

from __future__ import annotations

import time

import orjson
import pytest

from core.clock import Clock
from core.protocol.messages.commands import ConfigResult
from gateway.config.meta import config_version
from gateway.remote_config.handover import Handover
from gateway.remote_config.service import QUEUE, RemoteConfig


class Sink:
    """The outbox as the service sees it: what was emitted, each record checked against the protocol's model."""

    def __init__(self):
        self.records: list[dict] = []
        self.fail = False

    async def __call__(self, lane: str, body: bytes, topic: str | None) -> None:
        if self.fail:
            raise RuntimeError("outbox closed")
        assert (lane, topic) == ("event", "cmd/result")
        rec = orjson.loads(body)
        ConfigResult.model_validate({**rec, "seq": len(self.records) + 1})
        self.records.append(rec)

    def statuses(self) -> list[tuple]:
        return [(r["status"], r.get("reason")) for r in self.records]


@pytest.fixture
def service(board):
    sink = Sink()
    svc = RemoteConfig(board.loaded(), Clock(), sink, state_dir=board.state)
    return svc, sink


async def test_an_invalid_config_is_rejected_with_its_problems_and_never_handed_over(board, service):
    svc, sink = service
    doc = board.variant(broker={"host": "127.0.0.1", "port": "eighteen"})
    await svc.handle(board.payload(doc, on_behalf_of="ops-li"))
    (rec,) = sink.records
    assert (rec["status"], rec["reason"], rec["on_behalf_of"]) == ("rejected", "invalid_config", "ops-li")
    assert rec["detail"].startswith("site.yaml:8: broker.port: Input should be a valid integer")
    assert rec["config"] == config_version(board.loaded())
    assert not Handover(board.layout.updates).pending()


async def test_a_valid_config_is_accepted_and_handed_over_once(board, service):
    svc, sink = service
    payload = board.payload(board.variant(uplink={"state_interval": 5}))
    await svc.handle(payload)
    assert sink.statuses() == [("accepted", None)]
    assert "replaces" in sink.records[0]["detail"]
    (handed,) = Handover(board.layout.updates).pending()
    assert handed.read_bytes() == payload and handed.name.endswith("-admin-" + orjson.loads(payload)["id"] + ".config")
    assert oct(handed.stat().st_mode & 0o777) == "0o600"
    await svc.handle(payload)  # the same envelope again
    await svc.handle(board.payload(board.variant(uplink={"state_interval": 7})))  # another while the first waits
    assert sink.statuses()[1:] == [("rejected", "replayed"), ("rejected", "busy")]
    handed.unlink()
    svc2 = RemoteConfig(board.loaded(), Clock(), sink, state_dir=board.state)  # a restart remembers the id
    await svc2.handle(payload)
    assert sink.statuses()[-1] == ("rejected", "replayed")


async def test_the_config_already_running_is_applied_at_once(board, service):
    svc, sink = service
    await svc.handle(board.payload())
    assert sink.statuses() == [("applied", None)]
    assert sink.records[0]["config"] == sink.records[0]["previous"] == svc.version
    assert not Handover(board.layout.updates).pending()


async def test_without_the_applier_folder_nothing_is_taken(board, service):
    svc, sink = service
    board.layout.updates.rmdir()
    await svc.handle(board.payload(board.variant(uplink={"state_interval": 5})))
    assert sink.statuses() == [("rejected", "no_applier")]


async def test_unauthenticated_messages_get_answers_only_within_a_budget(board, service):
    svc, sink = service
    for i in range(12):
        await svc.handle(board.payload(issuer="farmer", id=f"f{i}"))
    assert sink.statuses() == [("rejected", "unauthorised_issuer")] * 5
    assert svc.counters["junk"] == {"unauthorised_issuer": 7}
    assert svc.counters["rejected"] == {"unauthorised_issuer": 5}


async def test_the_inbox_is_bounded(board, service):
    svc, sink = service
    for _ in range(QUEUE + 3):
        svc.on_config("canopy/v1/farm-a/gw-1/config", b"{}")
    svc.on_config("canopy/v1/farm-a/gw-1/config", b"x" * (256 * 1024 + 1))
    assert len(svc.inbox) == QUEUE and svc.counters["dropped"] == 4 and svc.counters["received"] == QUEUE + 4


async def test_the_applier_results_are_relayed_by_the_daemon_running_the_config_they_name(board, service):
    svc, sink = service
    handover = Handover(board.layout.updates)
    now = time.time()
    mine = handover.write_result("0001-admin-a", {"id": "a", "issuer": "admin", "status": "applied", "config": svc.version,
                                                  "previous": "0123456789abcdef", "ts": now})
    other = handover.write_result("0002-admin-b", {"id": "b", "issuer": "admin", "status": "applied",
                                                   "config": "fedcba9876543210", "ts": now})
    old = handover.write_result("0003-admin-c", {"id": "c", "issuer": "admin", "status": "failed", "reason": "rolled_back",
                                                 "config": "fedcba9876543210", "ts": now - 3600})
    (handover.results_dir / "0004-junk.json").write_text("[1, 2")
    sink.fail = True
    assert await svc.relay_once() == 0 and mine.exists()  # the outbox refused: kept for the next round
    sink.fail = False
    assert await svc.relay_once() == 2
    assert [(r["id"], r["status"]) for r in sink.records] == [("a", "applied"), ("c", "failed")]
    assert sink.records[0]["ts"] == round(now, 3)
    assert not mine.exists() and not old.exists() and other.exists()  # b waits for the daemon that runs its config
    assert not (handover.results_dir / "0004-junk.json").exists()
