"""Sending records again: the uplink's own messages, one at a time, paced, behind live alarms.

A replayed message is byte for byte what the uplink makes of those rows
(gateway/uplink/batch.py): the outbox's epoch, the records' seqs, bodies and
topics, so a receiver de-duplicates it like any other copy.  It goes out on
the uplink's MQTT connection (``Uplink.client``), awaited until its PUBACK, so
at most one replay message is ever in flight and its PUBACK never touches the
outbox (those records were acknowledged long ago).  Before each message the
sender waits while alarms are pending in the outbox (at most ``ALARM_WAIT`` s),
and after it, for its share of ``bytes_per_s``: live records keep the link.
A dropped connection is waited out (``LINK_WAIT`` s) and the message sent again.
"""

from __future__ import annotations

import asyncio
import logging

from core.mqtt import MqttError
from gateway.outbox.retention import Row
from gateway.replay.tally import Tally
from gateway.uplink.batch import compose, cut_at_topic, fit, topics_for

log = logging.getLogger("canopy.replay")

ALARM_WAIT = 5.0  # seconds a message waits for pending alarms to leave before it goes anyway
ALARM_POLL = 0.02
LINK_WAIT = 60.0  # seconds to wait for the broker link to come back before giving up
PUBACK_WAIT = 30.0
ATTEMPTS = 5  # publishes of one message before the replay is given up


class Interrupted(Exception):
    """The replay could not go on (the link stayed down); what was sent so far stands."""


class Sender:
    """Publishes the rows of one replay in messages of the uplink's size; ``add`` then ``flush``."""

    def __init__(self, uplink, outbox, lane: str, tally: Tally, *, bytes_per_s: float, clock):
        self.uplink = uplink
        self.outbox = outbox
        self.lane = lane
        self.tally = tally
        self.bytes_per_s = bytes_per_s
        self.clock = clock
        self.max_records = uplink.batch_max_records
        self.max_bytes = uplink.batch_max_bytes
        self.buffer: list[Row] = []
        self.messages = 0
        self.bytes = 0

    async def add(self, rows: list[Row]) -> None:
        """Queue rows (seq order); full messages go at once."""
        self.buffer.extend(rows)
        while len(self.buffer) >= self.max_records:
            await self._send_one()

    async def flush(self) -> None:
        while self.buffer:
            await self._send_one()

    async def _send_one(self) -> None:
        rows = fit(self.buffer[:self.max_records], self.max_bytes)
        if self.lane != "telemetry":
            rows = cut_at_topic(rows)
        payload = compose(self.uplink.topics, self.outbox.epoch, self.lane, rows)
        targets = topics_for(self.uplink.topics, self.lane, rows[0][2])
        for topic in targets:
            await self._publish(topic, payload)
        del self.buffer[:len(rows)]
        self.tally.sent_rows(rows)
        self.messages += 1
        self.bytes += len(payload) * len(targets)
        await self.clock.sleep(len(payload) * len(targets) / self.bytes_per_s)

    async def _publish(self, topic: str, payload: bytes) -> None:
        problem = "no attempt"
        for _ in range(ATTEMPTS):
            if not self.uplink.online.is_set():
                try:
                    await asyncio.wait_for(self.uplink.online.wait(), LINK_WAIT)
                except TimeoutError:
                    raise Interrupted(f"the broker link stayed down for {LINK_WAIT:g} s") from None
            await self._behind_alarms()
            try:
                await asyncio.wait_for(self.uplink.client.publish(topic, payload, qos=1), PUBACK_WAIT)
                return
            except (MqttError, TimeoutError) as exc:
                problem = str(exc) or type(exc).__name__
                log.info("replay: a message to %s did not go (%s); sending it again", topic, problem)
                await self.clock.sleep(0.2)
        raise Interrupted(f"a message could not be delivered in {ATTEMPTS} attempts ({problem})")

    async def _behind_alarms(self) -> None:
        """Live alarms first: wait while the outbox has alarms to send (in memory or on disk)."""
        deadline = self.clock.monotonic() + ALARM_WAIT
        while (self.outbox.pending("alarm") or self.outbox.memory.count("alarm")) and self.clock.monotonic() < deadline:
            await self.clock.sleep(ALARM_POLL)
