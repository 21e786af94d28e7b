"""Fast resume after a broker outage: a steady pace of attempts, and a pending one that completes when the link is back.

The schedule itself is checked on a fake clock; the uplink against a real
mosquitto, through the fault proxy (simulator/netfault.py) for a refused port and a
blackholed link.  bench/outage.py measures the same over many outages.
"""

from __future__ import annotations

import asyncio
import random
import socket
import time

import pytest

from core.backoff import Backoff
from core.protocol.topics import Topics
from core.records import Reading, reading_body
from gateway.config.broker import BrokerConfig
from gateway.outbox.store import Outbox
from gateway.uplink.resume import RETRY_INTERVAL, RetryPace, drop_when_stalled, retry_interval
from gateway.uplink.uplink import Uplink
from simulator.netfault import FaultProxy
from tests.support import until


# --------------------------------------------------------------------------- the schedule


def test_attempts_that_fail_at_once_start_a_steady_interval_apart():
    pace = RetryPace(2.0, rng=random.Random(7))
    now, starts = 0.0, []
    for _ in range(200):
        now += pace.wait(now)
        starts.append(now)
        pace.started(now)
        now += 0.001  # refused at once
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert min(gaps) >= 2.0, "two attempts closer than the interval"
    assert max(gaps) <= 2.0 * 1.2 + 1e-9, "the pace grew like a backoff"
    assert max(gaps) - min(gaps) > 0.05, "no jitter: a fleet that lost the broker together would stay in step"


def test_an_attempt_left_pending_until_it_timed_out_is_followed_at_once():
    pace = RetryPace(2.0)
    pace.started(100.0)
    assert pace.wait(101.0) > 0.9
    assert pace.wait(110.0) == 0.0, "after a 10 s connect timeout the next attempt must not wait another slot"


def test_after_a_connection_that_lasted_the_first_attempt_is_immediate_and_a_short_one_waits_its_slot():
    pace = RetryPace(2.0, jitter=0.0)
    pace.started(0.0)
    pace.connected()
    assert pace.wait(3600.0) == 0.0
    pace.started(3600.0)
    pace.connected()
    assert pace.wait(3600.5) == pytest.approx(1.5), "a connection lost at once must not make a second attempt within 2 s"


def test_a_broker_that_refuses_is_backed_off_and_a_connection_starts_the_backoff_again():
    pace = RetryPace(2.0, jitter=0.0, refusals=Backoff(1.0, 60.0, jitter=0.0))
    now, waits = 0.0, []
    for _ in range(8):
        pace.started(now)
        pace.refused(now)  # CONNACK "not authorised"
        waits.append(pace.wait(now))
        now += waits[-1]
    assert waits == [2.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]
    pace.connected()
    pace.started(now)
    pace.refused(now)
    assert pace.wait(now) == 2.0


def test_the_interval_is_two_seconds_or_a_shorter_backoff_max():
    assert retry_interval(60.0) == RETRY_INTERVAL == 2.0
    assert retry_interval(0.5) == 0.5
    with pytest.raises(ValueError, match="retry interval"):
        RetryPace(0.0)


def test_a_connection_with_data_unacknowledged_for_four_seconds_is_dropped_by_the_kernel():
    with socket.socket() as sock:
        drop_when_stalled(sock)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 4000
    drop_when_stalled(None)  # the link went away before it could be set: nothing to do


# --------------------------------------------------------------------------- against mosquitto


class Gateway:
    """An outbox and an uplink reaching the broker through a fault proxy; first PUBACK times recorded."""

    def __init__(self, tmp_path, port: int, **broker):
        self.outbox = Outbox(str(tmp_path / "outbox.sqlite"), commit_interval=0.02)
        self.broker = BrokerConfig(host="127.0.0.1", port=port, keepalive=30, **broker)
        self.acked_at: list[float] = []
        self.uplink: Uplink | None = None
        self.task: asyncio.Task | None = None
        self.n = 0

    async def __aenter__(self) -> "Gateway":
        await self.outbox.open()
        self.uplink = Uplink(self.broker, Topics("s", "g"), self.outbox)
        self.outbox.on_commit.append(self.uplink.committed)
        self.uplink.on_acked.append(lambda *_: self.acked_at.append(time.monotonic()))
        self.task = asyncio.create_task(self.uplink.run())
        await until(self.uplink.online.is_set, what="online")
        return self

    async def put(self) -> None:
        self.n += 1
        await self.outbox.put("telemetry", [reading_body(Reading(1.7e9 + self.n, "soil-1", "moisture", self.n, "%"))])

    def first_ack_after(self, t: float) -> float | None:
        return next((a - t for a in self.acked_at if a >= t), None)

    async def __aexit__(self, *exc) -> None:
        await self.uplink.stop()
        await asyncio.wait_for(self.task, 5)
        await self.outbox.close()


async def test_blackholed_link_resumes_the_moment_it_returns_with_one_pending_attempt(broker, tmp_path):
    async with FaultProxy("127.0.0.1", broker.port) as proxy, Gateway(tmp_path, proxy.port) as gw:
        await gw.put()
        await until(lambda: gw.acked_at, what="a first PUBACK")
        assert gw.uplink.client.paho.socket().getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 4000
        accepted = proxy.stats["accepted"]
        proxy.reset()  # the link drops: the open connection dies, and what is sent now is held
        proxy.blackhole()
        await until(lambda: not gw.uplink.connected.is_set(), what="the loss to be noticed")
        for _ in range(6):
            await gw.put()
            await asyncio.sleep(0.5)
        attempts = proxy.stats["accepted"] - accepted
        assert 1 <= attempts <= 2, f"{attempts} connection attempts in 3 s of blackhole"
        back = time.monotonic()
        proxy.passthrough()
        await until(lambda: gw.first_ack_after(back) is not None, what="a PUBACK after the link returned")
        assert gw.first_ack_after(back) < 0.5, "the pending attempt did not complete when the link returned"
        await until(lambda: gw.outbox.pending("telemetry") == 0, what="the backlog to drain")


async def test_refused_port_is_retried_at_the_steady_pace_and_resumes_within_one_interval(broker, tmp_path):
    async with FaultProxy("127.0.0.1", broker.port) as proxy, Gateway(tmp_path, proxy.port) as gw:
        refused = proxy.stats["refused"]
        proxy.refuse(True)
        proxy.reset()  # the broker went away: connections reset, new ones refused
        down = time.monotonic()
        await until(lambda: proxy.stats["refused"] > refused, what="a first refused attempt")
        for _ in range(10):
            await gw.put()
            await asyncio.sleep(0.5)
        attempts = proxy.stats["refused"] - refused
        outage = time.monotonic() - down
        assert attempts <= 1 + outage / 2.0, f"{attempts} attempts in {outage:.1f} s: more than one per 2 s"
        assert attempts >= 2, "the uplink stopped trying"
        back = time.monotonic()
        proxy.refuse(False)
        await until(lambda: gw.first_ack_after(back) is not None, what="a PUBACK after the broker returned")
        assert gw.first_ack_after(back) < 2.0 * 1.2 + 0.3, "not back within one slot"
