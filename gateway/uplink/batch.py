"""One MQTT message from a page of outbox rows: cut to size, cut at a topic change, its topics, the envelope.

Pure functions over ``Outbox.fetch`` rows ``(seq, body, topic)``; the
envelope is the contract in docs/protocol.md (*Batch envelope*).  A row's
topic column holds one topic suffix, or several separated by one space
(``"event alert/property-office alert/volunteers"``): the message is then
published, the same bytes, on each of them (*Topic routing*).
"""

from __future__ import annotations

from operator import itemgetter

import orjson

from core.protocol import PROTOCOL_VERSION
from core.protocol.topics import Topics
from gateway.outbox.store import Row

_ENVELOPE_OVERHEAD = 16  # per record: ``{"seq":N,`` and the separator, roughly


def fit(rows: list[Row], max_bytes: int) -> list[Row]:
    """The longest prefix (at least one row) whose message stays within ``max_bytes``."""
    if sum(map(len, map(itemgetter(1), rows))) + _ENVELOPE_OVERHEAD * len(rows) <= max_bytes:
        return rows  # the whole page fits (the usual case): one pass in C
    total = 0
    for i, row in enumerate(rows):
        total += len(row[1]) + _ENVELOPE_OVERHEAD
        if total > max_bytes and i > 0:
            return rows[:i]
    return rows


def cut_at_topic(rows: list[Row]) -> list[Row]:
    """The rows up to where the topic column changes: a message goes to one set of topics only."""
    first = rows[0][2]
    for i, row in enumerate(rows):
        if row[2] != first:
            return rows[:i]
    return rows


def topics_for(topics: Topics, lane: str, column: str | None) -> list[str]:
    """Where a message goes: telemetry always to ``…/telemetry``; an alarm/event to each suffix of its column, else ``…/event``."""
    if column and lane != "telemetry":
        return [f"{topics.base}/{suffix}" for suffix in column.split(" ")]
    return [topics.for_lane(lane)]


def compose(topics: Topics, epoch: str, lane: str, rows: list[Row]) -> bytes:
    """The batch envelope; each record is ``{"seq": n, …body}``, bodies spliced in unparsed."""
    head = b'{"v":%d,"site":%s,"gateway":%s,"epoch":"%s","lane":"%s","seq":[%d,%d],"records":[' % (
        PROTOCOL_VERSION,
        orjson.dumps(topics.site),
        orjson.dumps(topics.gateway),
        epoch.encode(),
        lane.encode(),
        rows[0][0],
        rows[-1][0],
    )
    return head + b",".join(b'{"seq":%d,%s' % (seq, body[1:]) for seq, body, _ in rows) + b"]}"
