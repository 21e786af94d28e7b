"""One MQTT connection that sends envelopes to gateways: QoS 1, a send counts only once the broker's PUBACK is in.

Separate from ingest's connection (its own client id, clean start, no subscriptions), so a
burst of commands never waits behind ingest's flow control and vice versa.  Connects on
first use and again after a failure, never more often than its backoff allows; a publish
that fails raises :class:`MqttError` and the caller keeps the row for the next round.
"""

from __future__ import annotations

import asyncio
import logging
import time

from centre.config import Broker
from centre.mqtt.client import CentreMqtt
from core.backoff import Backoff, FailureLog
from core.mqtt import MqttError

log = logging.getLogger("centre.acting")


class Publisher:
    def __init__(self, broker: Broker, client_id: str, *, timeout: float = 10.0):
        self.mqtt = CentreMqtt(broker, client_id, on_message=lambda _msg: None, clean_start=True)
        self.timeout = timeout
        self.backoff = Backoff(broker.backoff_initial, broker.backoff_max)
        self.fails = FailureLog(log, f"publisher to {broker.host}:{broker.port}")
        self.published = 0
        self._retry_at = 0.0
        self._lock = asyncio.Lock()

    async def publish(self, topic: str, payload: bytes) -> None:
        """Publish at QoS 1 and return after the PUBACK; raises MqttError (connection kept for the next call)."""
        await self._connected()
        try:
            await asyncio.wait_for(self.mqtt.publish(topic, payload), self.timeout)
        except (MqttError, TimeoutError) as exc:
            self.mqtt.close()
            self.fails.failed(f"publish to {topic}: {exc or 'no PUBACK in time'}")
            raise MqttError(f"not sent to {topic}: {exc or 'no PUBACK in time'}") from None
        self.published += 1

    async def _connected(self) -> None:
        async with self._lock:
            if self.mqtt.connected:
                return
            if time.monotonic() < self._retry_at:
                raise MqttError(f"broker unreachable; next attempt in {self._retry_at - time.monotonic():.1f} s")
            try:
                await self.mqtt.connect(self.timeout)
            except (MqttError, OSError) as exc:
                self._retry_at = time.monotonic() + self.backoff.next()
                self.fails.failed(str(exc))
                raise MqttError(str(exc)) from None
            self.backoff.reset()
            self.fails.recovered()

    async def close(self) -> None:
        await self.mqtt.disconnect()
