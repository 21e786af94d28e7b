"""One delivered message -> what it holds, through core.protocol's bounded parser; junk is named, never stored.

A message is a batch (telemetry, event, alert/{group}, cmd/result), a retained document
(state, meta), a message *to* a gateway that a wildcard also delivers (skipped), or junk
with a reason (counted by the caller in ``ingest.junk.{reason}`` and acknowledged, so the
broker does not send it again).  A batch keeps only well-formed records: a record
without an integer seq, or a reading without ts/device/point, is junk on its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from core.protocol import limits
from core.protocol.topics import CENTRE_TO_GATEWAY, parse_topic

LANES = frozenset({"alarm", "event", "telemetry"})
_EPOCH_CHARS = frozenset("0123456789abcdef")


@dataclass(slots=True)
class Parsed:
    kind: str  # batch | state | meta | skip | junk
    site: str = ""
    gateway: str = ""
    topic: str = ""  # the leaf as sent: telemetry, event, alert/{group}, cmd/result
    lane: str = ""
    epoch: str = ""
    records: list[dict] = field(default_factory=list)
    doc: dict | None = None  # state or meta
    problem: str | None = None  # junk: short reason code
    detail: str | None = None
    bad_records: int = 0


def parse_message(topic: str, payload: bytes) -> Parsed:
    name = parse_topic(topic)
    if name is None:
        return Parsed("junk", problem="bad_topic", detail=f"topic {topic[:200]!r} is not part of the protocol")
    if name.leaf in CENTRE_TO_GATEWAY:
        return Parsed("skip", name.site, name.gateway, name.suffix)
    lim = limits.STATE if name.leaf == "state" else limits.META if name.leaf == "meta" else limits.BATCH
    try:
        obj = limits.parse(payload, lim)
    except limits.Malformed as exc:
        return Parsed("junk", name.site, name.gateway, name.suffix, problem=exc.reason, detail=str(exc))
    if obj.get("site") != name.site or obj.get("gateway") != name.gateway:
        return Parsed("junk", name.site, name.gateway, name.suffix, problem="wrong_gateway",
                      detail="site/gateway in the message are not those of its topic")
    if name.leaf in ("state", "meta"):
        return Parsed(name.leaf, name.site, name.gateway, name.suffix, doc=obj)
    return _batch(name.site, name.gateway, name.suffix, obj)


def _batch(site: str, gateway: str, topic: str, obj: dict) -> Parsed:
    lane, epoch, records = obj.get("lane"), obj.get("epoch"), obj.get("records")
    if lane not in LANES or not _is_epoch(epoch) or not isinstance(records, list):
        return Parsed("junk", site, gateway, topic, problem="not_a_batch",
                      detail="a batch needs lane (alarm|event|telemetry), epoch (16 hex digits) and records")
    if (lane == "telemetry") != (topic == "telemetry"):
        return Parsed("junk", site, gateway, topic, problem="wrong_lane", detail=f"lane {lane} on …/{topic}")
    good, bad = [], 0
    check = _reading_ok if lane == "telemetry" else _event_ok
    for rec in records:
        if type(rec) is dict and _seq_ok(rec.get("seq")) and check(rec):
            good.append(rec)
        else:
            bad += 1
    return Parsed("batch", site, gateway, topic, lane, epoch, good, bad_records=bad)


def _is_epoch(v) -> bool:
    return isinstance(v, str) and len(v) == 16 and set(v) <= _EPOCH_CHARS


_NUM = (int, float)


def _seq_ok(v) -> bool:
    return type(v) is int and 1 <= v < 2**63


def _ts_ok(v) -> bool:
    return type(v) in _NUM and 0 <= v < 1e11


def _reading_ok(rec: dict) -> bool:
    d, p = rec.get("device"), rec.get("point")
    return (_ts_ok(rec.get("ts")) and type(d) is str and type(p) is str
            and 0 < len(d) <= 64 and 0 < len(p) <= 128)


def _event_ok(rec: dict) -> bool:
    t = rec.get("type")
    return _ts_ok(rec.get("ts")) and type(t) is str and 0 < len(t) <= 64
