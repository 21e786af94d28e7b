"""What the gateway subscribes to, what a granted subscription lets it announce, and where messages go.

On every connection the uplink subscribes to every topic a service asked for,
all at once, and waits for every SUBACK before it says "online" (docs/protocol.md,
*"online" only after SUBACK*): a centre that sends a command the instant it sees
"online" then reaches a gateway that is subscribed.  A subscription the broker
refuses (reason code >= 0x80, e.g. 0x87 not authorised by an ACL; 0x80 in
3.1.1) is logged, and the capability it serves is left out of ``…/state``.
It subscribes also when the broker kept the session: that refreshes the
subscriptions after a config change and tells which ones are granted now.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from core.mqtt import Message, MqttClient, MqttCodeError
from core.protocol import CONFIG, CONTROLS, META, REPLAY, SIGNED_ACKS
from core.protocol.topics import parse_topic

log = logging.getLogger("canopy.uplink")

Handler = Callable[[str, bytes], None]

# docs/protocol.md#capabilities: the topic leaf a capability needs (subscribed, or for meta published)
CAPABILITY_OF_LEAF = {"alert/ack": SIGNED_ACKS, "cmd": CONTROLS, "config": CONFIG, "replay": REPLAY, "meta": META}


def capability_of(topic: str) -> str | None:
    """The capability a gateway topic serves (``…/cmd`` -> ``controls``), None for any other topic."""
    name = parse_topic(topic)
    return CAPABILITY_OF_LEAF.get(name.leaf) if name is not None else None


class Subscriptions:
    """The topics the services asked for, their handlers, and which were granted on this connection."""

    def __init__(self) -> None:
        self.handlers: dict[str, Handler] = {}
        self.granted: set[str] = set()  # topics whose SUBACK granted them on the current connection

    def add(self, topic: str, handler: Handler) -> None:
        self.handlers[topic] = handler

    def capabilities(self) -> set[str]:
        """What the granted subscriptions of this connection let a centre ask for."""
        return {cap for topic in self.granted if (cap := capability_of(topic)) is not None}

    async def subscribe_all(self, client: MqttClient) -> None:
        """Subscribe to every topic at once and return after every SUBACK; refusals are logged, not raised.

        Raises MqttError when the connection fails meanwhile (the caller reconnects).
        """
        self.granted = set()
        topics = list(self.handlers)
        results = await asyncio.gather(*(client.subscribe(t, qos=1) for t in topics), return_exceptions=True)
        for topic, result in zip(topics, results):
            if isinstance(result, MqttCodeError):
                cap = capability_of(topic)
                log.warning("the broker refused the subscription to %s (%s)%s", topic, result.rc,
                            f": '{cap}' is not announced" if cap else "")
            elif isinstance(result, BaseException):
                raise result
            else:
                self.granted.add(topic)

    def route(self, message: Message) -> None:
        """Hand a message to its topic's handler; a failing handler is logged and never takes the uplink down."""
        handler = self.handlers.get(message.topic)
        if handler is None:
            log.debug("message on %s: no handler (a subscription the broker kept from an earlier config)", message.topic)
            return
        try:
            handler(message.topic, message.payload)
        except Exception:
            log.exception("handler for %s failed", message.topic)

    def reset(self) -> None:
        self.granted = set()
