"""A small receiver of everything gateways publish, written against the contract only (the centre reuses it).

Feed it ``(topic, payload)`` of a subscription to ``canopy/v1/+/+/#``; it

- parses batches (v1 and v2) through the bounded parser and hands back only the
  records it has not seen, whatever topic each came on: a record's key is its
  ``copy_of`` when it has one (a raise copied to a group paged later), else its own
  ``(epoch, lane, seq)``, within its ``(site, gateway)`` (docs/protocol.md#receiver-rule);
- tracks gaps per ``(site, gateway, epoch, lane)``: seqs not seen yet below the
  highest seen, still in flight or deleted by a counted policy (a copy fills the
  seq of its original as well as its own);
- keeps the latest ``…/state`` and ``…/meta`` per gateway and renders a device's
  place in words from the meta alone.

Memory is bounded: a lane that keeps more than ``max_pending`` seqs above its floor
gives up on its oldest gap (counted in ``counters["given_up"]``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from core.protocol import limits
from core.protocol.meta import describe
from core.protocol.topics import CENTRE_TO_GATEWAY, TopicName, parse_topic

EARLY_MAX = 65_536  # late arrivals from before first contact that are remembered (a first-contact transient)


@dataclass(frozen=True, slots=True)
class Delivery:
    """What one message brought.  ``kind``: batch, state, meta, to_gateway, ignored or refused."""

    kind: str
    topic: TopicName | None = None
    lane: str | None = None
    epoch: str | None = None
    records: tuple[dict, ...] = ()
    duplicates: int = 0
    problem: str | None = None


@dataclass(slots=True)
class LaneTrack:
    """The receiver rule for one (site, gateway, epoch, lane): every seq <= floor seen, plus the set above it."""

    floor: int
    first: int  # the first seq seen: seqs below it arrived late from before first contact
    above: set[int] = field(default_factory=set)
    early: set[int] = field(default_factory=set)

    def see(self, seq: int) -> bool:
        """True the first time ``seq`` is seen."""
        if seq < self.first:
            if seq in self.early or len(self.early) >= EARLY_MAX:
                return False
            self.early.add(seq)
            return True
        if seq <= self.floor or seq in self.above:
            return False
        self.above.add(seq)
        while self.floor + 1 in self.above:
            self.floor += 1
            self.above.discard(self.floor)
        return True

    def gaps(self) -> list[tuple[int, int]]:
        """Missing seqs between the floor and the highest seen, as inclusive ranges."""
        out, prev = [], self.floor
        for s in sorted(self.above):
            if s > prev + 1:
                out.append((prev + 1, s - 1))
            prev = s
        return out

    def give_up_oldest_gap(self) -> int:
        """Move the floor past the oldest gap; returns how many seqs were given up."""
        lowest = min(self.above)
        lost = lowest - self.floor - 1
        self.floor = lowest - 1
        while self.floor + 1 in self.above:
            self.floor += 1
            self.above.discard(self.floor)
        return lost


def _is_seq(seq) -> bool:
    return isinstance(seq, int) and not isinstance(seq, bool) and seq >= 1


def record_keys(rec) -> tuple[int, tuple[str, str, int] | None] | None:
    """A record's own seq and, for a copy, the ``(epoch, lane, seq)`` of the record it repeats; None if malformed."""
    seq = rec.get("seq") if isinstance(rec, dict) else None
    if not _is_seq(seq):
        return None
    copy_of = rec.get("copy_of")
    if copy_of is None:
        return seq, None
    if not isinstance(copy_of, dict):
        return None
    epoch, lane, original = copy_of.get("epoch"), copy_of.get("lane"), copy_of.get("seq")
    if not isinstance(epoch, str) or not epoch or lane not in ("alarm", "event", "telemetry") or not _is_seq(original):
        return None
    return seq, (epoch, lane, original)


class Receiver:
    def __init__(self, max_pending: int = 100_000):
        self.max_pending = max_pending
        self.lanes: dict[tuple[str, str, str, str], LaneTrack] = {}
        self.states: dict[tuple[str, str], dict] = {}
        self.metas: dict[tuple[str, str], dict] = {}
        self.counters: Counter = Counter()

    def receive(self, topic: str, payload: bytes) -> Delivery:
        name = parse_topic(topic)
        if name is None:
            self.counters["ignored"] += 1
            return Delivery("ignored", problem=f"topic {topic!r} is not part of the protocol")
        if name.leaf in CENTRE_TO_GATEWAY:
            return Delivery("to_gateway", name)
        lim = limits.STATE if name.leaf == "state" else limits.META if name.leaf == "meta" else limits.BATCH
        try:
            obj = limits.parse(payload, lim)
        except limits.Malformed as exc:
            return self._refuse(name, f"{exc.reason}: {exc}")
        if obj.get("site") != name.site or obj.get("gateway") != name.gateway:
            return self._refuse(name, "site/gateway in the message are not those of its topic")
        key = (name.site, name.gateway)
        if name.leaf == "state":
            self.states[key] = obj
            return Delivery("state", name)
        if name.leaf == "meta":
            self.metas[key] = obj
            return Delivery("meta", name)
        return self._batch(name, obj)

    def _refuse(self, name: TopicName, problem: str) -> Delivery:
        self.counters["refused"] += 1
        return Delivery("refused", name, problem=problem)

    def _batch(self, name: TopicName, obj: dict) -> Delivery:
        lane, epoch, records = obj.get("lane"), obj.get("epoch"), obj.get("records")
        if lane not in ("alarm", "event", "telemetry") or not isinstance(epoch, str) or not isinstance(records, list):
            return self._refuse(name, "not a batch: lane, epoch and records are required")
        fresh, dups = [], 0
        track = None
        for rec in records:
            keys = record_keys(rec)
            if keys is None:
                self.counters["bad_records"] += 1
                continue
            seq, original = keys
            if track is None:
                track = self._track(name, epoch, lane, seq)
            new = track.see(seq)  # its own seq too: a copy sent again is a duplicate, and leaves no gap
            if original:
                o_epoch, o_lane, o_seq = original
                o_track = self._track(name, o_epoch, o_lane, o_seq)
                new = o_track.see(o_seq) and new
                self._bound(o_track)
            if new:
                fresh.append(rec)
            else:
                dups += 1
        if track is not None:
            self._bound(track)
        self.counters["records"] += len(fresh)
        self.counters["duplicates"] += dups
        return Delivery("batch", name, lane, epoch, tuple(fresh), dups)

    def _track(self, name: TopicName, epoch: str, lane: str, seq: int) -> LaneTrack:
        key = (name.site, name.gateway, epoch, lane)
        track = self.lanes.get(key)
        if track is None:
            track = self.lanes[key] = LaneTrack(seq - 1, seq)
        return track

    def _bound(self, track: LaneTrack) -> None:
        if len(track.above) > self.max_pending:
            self.counters["given_up"] += track.give_up_oldest_gap()

    # -- views ----------------------------------------------------------------------------------
    def gaps(self, site: str, gateway: str) -> dict[tuple[str, str], list[tuple[int, int]]]:
        """(epoch, lane) -> missing seq ranges, for one gateway (empty lists left out)."""
        out = {}
        for (s, g, epoch, lane), track in self.lanes.items():
            if (s, g) == (site, gateway) and (missing := track.gaps()):
                out[(epoch, lane)] = missing
        return out

    def state(self, site: str, gateway: str) -> dict | None:
        return self.states.get((site, gateway))

    def meta(self, site: str, gateway: str) -> dict | None:
        return self.metas.get((site, gateway))

    def where(self, site: str, gateway: str, device: str, lang: str = "en") -> str:
        """A device's place in words from the latest meta ("building 3, unit 502, Mrs Wang's door")."""
        meta = self.metas.get((site, gateway))
        return describe(meta, device, lang) if meta is not None else device
