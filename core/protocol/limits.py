"""How big and how deep a message may be, per kind, and the one bounded parser every incoming message goes through.

A message is refused in the cheapest way that is still exact: its byte size
before anything is parsed, then (after orjson, which has its own depth limit of
1024 and never recurses in Python) its nesting depth, the number of members of
each object and items of each array, the total number of values, and the
length of every string -- walked with an explicit stack, so no input can raise
``RecursionError`` in whatever handles the message next.  Each refusal is a
:class:`Malformed` with a specific ``reason`` (:data:`REASONS`).

The numbers are the contract (docs/protocol.md#limits): issuers must stay
within them, the gateway refuses what does not.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

REASONS: dict[str, str] = {
    "too_large": "the message has more bytes than its kind allows",
    "not_json": "the message is not UTF-8 JSON",
    "not_object": "the message is JSON but not an object",
    "too_deep": "objects and arrays nest deeper than the kind allows",
    "too_many_fields": "an object has too many members, an array too many items, or the message too many values",
    "string_too_long": "a string (or an object key) is longer than the kind allows",
}


class Malformed(ValueError):
    """A message refused before it is understood; ``reason`` is a short code, the text says why."""

    def __init__(self, detail: str, reason: str = "malformed"):
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Limits:
    """The shape a message of one kind may have.  Depth: the message object itself is level 1."""

    kind: str
    max_bytes: int
    max_depth: int
    max_keys: int  # members of any one object
    max_items: int  # items of any one array
    max_values: int  # every object, array, key and scalar of the whole message
    max_string: int  # characters of any one string or key


KIB = 1024
MIB = 1024 * KIB

# Messages *to* a gateway (signed envelopes, docs/protocol.md#signed-envelopes) ...
COMMAND = Limits("command", 8 * KIB, max_depth=4, max_keys=32, max_items=64, max_values=512, max_string=1024)
ACK = Limits("ack", 4 * KIB, max_depth=3, max_keys=32, max_items=16, max_values=128, max_string=1024)
REPLAY = Limits("replay", 2 * KIB, max_depth=3, max_keys=32, max_items=16, max_values=128, max_string=256)
# A config bundle is one message (no chunking): the whole site document as JSON.  A 200-device
# site with rules, commands and cameras is ~60 KiB, so 256 KiB leaves four times that.
CONFIG = Limits("config", 256 * KIB, max_depth=16, max_keys=1024, max_items=4096, max_values=65536,
                max_string=16 * KIB)
# ... and messages *from* a gateway, for receivers (the centre).  A batch is at most
# uplink.batch_max_bytes (<= 16 MiB) plus one oversized record, which is sent alone.
BATCH = Limits("batch", 24 * MIB, max_depth=12, max_keys=4096, max_items=16384, max_values=4_000_000,
               max_string=16 * MIB)
STATE = Limits("state", 4 * MIB, max_depth=12, max_keys=16384, max_items=16384, max_values=1_000_000, max_string=64 * KIB)
META = Limits("meta", 4 * MIB, max_depth=12, max_keys=16384, max_items=16384, max_values=1_000_000, max_string=64 * KIB)

LIMITS: dict[str, Limits] = {lim.kind: lim for lim in (COMMAND, ACK, REPLAY, CONFIG, BATCH, STATE, META)}

# MQTT 5 Maximum Packet Size the gateway announces in CONNECT and enforces on receive: the
# largest message it takes (a config bundle) plus the topic, properties and fixed header.
MAX_PACKET_SIZE = CONFIG.max_bytes + 8 * KIB


def parse(payload: bytes | bytearray | memoryview | str, limits: Limits, max_bytes: int | None = None) -> dict:
    """Payload -> the JSON object it holds, within ``limits``; raises :class:`Malformed` with a reason.

    ``max_bytes`` replaces the kind's byte limit (a gateway's ``commands.max_payload``, at most 64 KiB).
    """
    obj = load(payload, limits, max_bytes)
    check_shape(obj, limits)
    return obj


def load(payload: bytes | bytearray | memoryview | str, limits: Limits, max_bytes: int | None = None) -> dict:
    """:func:`parse` without the shape walk: size, JSON, one object (a caller that can refuse cheaper junk
    first walks the shape later, with :func:`check_shape`)."""
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    cap = limits.max_bytes if max_bytes is None else max_bytes
    size = len(payload)
    if size > cap:
        raise Malformed(f"message is {size} bytes; a {limits.kind} may have at most {cap}", "too_large")
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        if "depth" in str(exc) or "recursion" in str(exc):
            raise Malformed(f"nested more than 1024 levels; a {limits.kind} allows {limits.max_depth}", "too_deep") from None
        raise Malformed(f"not JSON: {exc}", "not_json") from None
    if not isinstance(obj, dict):
        raise Malformed(f"not a JSON object (a {type(obj).__name__}); a {limits.kind} is one object", "not_object")
    return obj


def check_shape(obj: dict, limits: Limits) -> None:
    """Depth, member counts and string lengths of a parsed message, without recursion."""
    k = limits.kind
    if len(obj) > limits.max_keys:
        raise Malformed(f"{len(obj)} fields; a {k} has at most {limits.max_keys}", "too_many_fields")
    values = 1
    # (container, its depth, the top-level field it sits under: for the message text)
    stack: list[tuple[dict | list, int, str]] = [(obj, 1, "")]
    while stack:
        node, depth, top = stack.pop()
        if isinstance(node, dict):
            values += 2 * len(node)
            items = node.items()
        else:
            values += len(node)
            items = enumerate(node)
        if values > limits.max_values:
            raise Malformed(f"more than {limits.max_values} values; a {k} allows no more", "too_many_fields")
        for key, value in items:
            where = top or str(key)
            if isinstance(key, str) and len(key) > limits.max_string:
                raise Malformed(f"a key under {where!r} has {len(key)} characters; at most {limits.max_string}",
                                "string_too_long")
            if isinstance(value, str):
                if len(value) > limits.max_string:
                    raise Malformed(f"{where} has a string of {len(value)} characters; a {k} allows {limits.max_string}",
                                    "string_too_long")
            elif isinstance(value, (dict, list)):
                if depth + 1 > limits.max_depth:
                    raise Malformed(f"{where} nests deeper than {limits.max_depth} levels; a {k} allows {limits.max_depth}",
                                    "too_deep")
                size, cap = (len(value), limits.max_keys) if isinstance(value, dict) else (len(value), limits.max_items)
                if size > cap:
                    what = "members" if isinstance(value, dict) else "items"
                    raise Malformed(f"{where} has {size} {what}; a {k} allows {cap}", "too_many_fields")
                stack.append((value, depth + 1, where))
