"""Who is told what (pure planning), and delivery's bounded memory with a slow channel (real store)."""

from __future__ import annotations

import asyncio

import pytest

from centre.hub import Hub
from centre.routing.channels import Retry
from centre.routing.config import Group, RoutingConfig, Webhook
from centre.routing.delivery import Deliverer
from centre.routing.outbox import insert_rows
from centre.routing.plan import AlertNote, Person, plan
from centre.store.engine import write_transaction

CFG = RoutingConfig(
    groups={"office": Group(users=["duty-wang"], channels=["console", "webhook:sms", "email"]),
            "sunny-court/volunteers": Group(channels=["email"]), "*": Group(channels=["console"])},
    webhooks={"sms": Webhook(url="http://127.0.0.1:9/hook", secret="x" * 32)},
    email={"host": "127.0.0.1", "from_address": "canopy@example.net", "security": "none"})
PEOPLE = {"office": [Person("duty-wang", "Wang", "wang@example.net", "+86 1"), Person("duty-zhao", "Zhao")],
          "volunteers": [Person("vol-li", email="li@example.net")], "grid": []}


def members(site, group, users):
    return PEOPLE.get(group, [])


def note(event="raised", groups=("office",), key="sunny-court/gw-3/e/alarm/1", site="sunny-court") -> AlertNote:
    return AlertNote(key=key, site=site, gateway="gw-3", alert="1-2da3", event=event, ts=1.0, groups=tuple(groups),
                     severity="critical", cls="fire", subject="smoke-shed", message="Smoke")


def test_a_raise_goes_to_each_channel_of_its_group():
    out = plan(note(), CFG, members, now=5.0)
    assert sorted((r["channel"], r["recipient"]) for r in out) == [
        ("console", None), ("email", "wang@example.net"), ("webhook:sms", None)]  # duty-zhao has no address
    hook = next(r for r in out if r["channel"] == "webhook:sms")
    assert [p["user"] for p in hook["payload"]["recipients"]] == ["duty-wang", "duty-zhao"]
    assert hook["status"] == "queued" and next(r for r in out if r["channel"] == "console")["status"] == "sent"
    assert len({r["key"] for r in out}) == 3 and plan(note(), CFG, members, now=9.0)[0]["key"] == out[0]["key"]


def test_an_escalation_pages_only_the_group_it_reached_and_site_routing_wins():
    out = plan(note("escalated", ("office", "volunteers")), CFG, members, now=5.0)
    assert [(r["group"], r["channel"], r["recipient"]) for r in out] == [("volunteers", "email", "li@example.net")]
    other_site = plan(note("escalated", ("office", "volunteers"), site="green-valley"), CFG, members, now=5.0)
    assert [(r["group"], r["channel"]) for r in other_site] == [("volunteers", "console")]  # the "*" routing


def test_a_channel_must_be_configured():
    with pytest.raises(ValueError, match="names no webhook"):
        RoutingConfig(groups={"office": Group(channels=["webhook:wechat"])})
    with pytest.raises(ValueError, match="needs an email"):
        RoutingConfig(groups={"office": Group(channels=["email"])})
    with pytest.raises(ValueError, match="exactly one"):
        Webhook(url="https://x.example/h")


class SlowChannel:
    max_attempts, backoff_initial, backoff_max = 5, 0.05, 0.1

    def __init__(self, deliverer_ref: list):
        self.ref = deliverer_ref
        self.sent: list[int] = []
        self.largest_queue = 0
        self.failed_once: set[int] = set()

    async def send(self, row) -> None:
        d = self.ref[0]
        self.largest_queue = max(self.largest_queue, d.queues["webhook:sms"].qsize())
        await asyncio.sleep(0.01)
        if row.id % 5 == 0 and row.id not in self.failed_once:
            self.failed_once.add(row.id)
            raise Retry("HTTP 503")
        self.sent.append(row.id)

    async def close(self) -> None:
        pass


async def test_delivery_keeps_memory_bounded_and_loses_nothing(engine):
    cfg = CFG.model_copy(update={"queue_max": 2, "poll_interval": 0.05})
    rows = [r for i in range(20) for r in plan(note(key=f"k{i}"), cfg, members, now=1.0) if r["channel"] == "webhook:sms"]
    async with write_transaction(engine) as conn:
        assert len(await insert_rows(conn, rows)) == 20
        assert await insert_rows(conn, rows) == []  # planned again: nothing new
    ref: list = []
    channel = SlowChannel(ref)
    centre = type("C", (), {"engine": engine, "hub": Hub()})()
    d = Deliverer(centre, cfg, {"webhook:sms": channel})
    ref.append(d)
    task = asyncio.create_task(d.run())
    try:
        for _ in range(200):  # sent by the channel, then counted once its row is marked sent
            if len(channel.sent) == 20 and d.counters["sent"] == 20:
                break
            await asyncio.sleep(0.05)
        assert sorted(channel.sent) == list(range(1, 21))
        assert channel.largest_queue <= 2 and d.counters["retried"] == 4 and d.counters["sent"] == 20
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_blind_means_offline_or_silent_past_the_limit():
    from types import SimpleNamespace

    from centre.routing.blind import judge

    def gw(status, since, last_seen, reason=None):
        return SimpleNamespace(site="s", gateway="gw-3", status=status, status_since=since, last_seen=last_seen,
                               reason=reason)

    words = lambda ts: f"t{ts:g}"  # noqa: E731
    assert judge(gw("online", 0, 100), 399, 300, words) is None
    silent = judge(gw("online", 0, 100), 400, 300, words)
    assert silent.why == "silent" and silent.since == 100 and silent.detail.startswith("gateway gw-3 silent since t100")
    offline = judge(gw("offline", 200, 200, "connection lost"), 500, 300, words)
    assert offline.why == "offline" and offline.detail == "gateway gw-3 offline since t200 (connection lost): site s is blind"
    assert judge(gw("offline", 200, 200), 499, 300, words) is None
    assert judge(gw("unknown", None, 100), 400, 300, words).why == "silent"
