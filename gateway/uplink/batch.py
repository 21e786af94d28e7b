"""One MQTT message from a page of outbox rows: cut to size, cut at a topic change, the envelope.

Pure functions over ``Outbox.fetch`` rows ``(seq, body, topic)``; the
envelope is the contract in docs/protocol.md (*Batch envelope*).
"""

from __future__ import annotations

from operator import itemgetter

import orjson

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
    """The rows up to where the topic changes: a message carries records of one topic only."""
    first = rows[0][2]
    for i, row in enumerate(rows):
        if row[2] != first:
            return rows[:i]
    return rows


def topic_for(topics: Topics, lane: str, suffix: str | None) -> str:
    """Telemetry always goes to ``…/telemetry``; an alarm/event to its own suffix, else ``…/event``."""
    if suffix and lane != "telemetry":
        return f"{topics.base}/{suffix}"
    return topics.for_lane(lane)


def compose(topics: Topics, epoch: str, lane: str, rows: list[Row]) -> bytes:
    """The batch envelope; each record is ``{"seq": n, …body}``, bodies spliced in unparsed."""
    head = b'{"v":1,"site":%s,"gateway":%s,"epoch":"%s","lane":"%s","seq":[%d,%d],"records":[' % (
        orjson.dumps(topics.site),
        orjson.dumps(topics.gateway),
        epoch.encode(),
        lane.encode(),
        rows[0][0],
        rows[-1][0],
    )
    return head + b",".join(b'{"seq":%d,%s' % (seq, body[1:]) for seq, body, _ in rows) + b"]}"
