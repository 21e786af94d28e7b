"""The webhook channel: one JSON POST per notification, signed with HMAC-SHA256 (for SMS or WeChat Work gateways).

Headers of every POST:

- ``X-Canopy-Timestamp``: Unix seconds when it was signed;
- ``X-Canopy-Signature``: ``sha256=<hex>``, HMAC-SHA256 with the shared secret over
  ``f"{timestamp}.".encode() + body`` -- the receiver recomputes it over the raw body and
  refuses a timestamp older than a few minutes (:func:`verify` does both);
- ``X-Canopy-Delivery``: the notification's id, the same on every retry (de-duplicate on it).

2xx is delivered; 408, 429, 5xx, a timeout or a refused connection is retried with backoff;
any other status is a permanent failure (the receiver says the request itself is wrong).
"""

from __future__ import annotations

import hashlib
import hmac
import time

import httpx
import orjson

from centre.routing.channels import Permanent, Retry, read_secret
from centre.routing.config import Webhook

SIGNATURE = "X-Canopy-Signature"
TIMESTAMP = "X-Canopy-Timestamp"
DELIVERY = "X-Canopy-Delivery"


def signature(secret: bytes, ts: int, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, f"{ts}.".encode() + body, hashlib.sha256).hexdigest()


def verify(secret: bytes, headers, body: bytes, *, now: float | None = None, tolerance: float = 300.0) -> bool:
    """What a receiver does: the signature matches the raw body, and the timestamp is recent."""
    try:
        ts = int(headers[TIMESTAMP])
    except (KeyError, ValueError):
        return False
    now = time.time() if now is None else now
    return abs(now - ts) <= tolerance and hmac.compare_digest(signature(secret, ts, body), headers.get(SIGNATURE, ""))


class WebhookChannel:
    def __init__(self, name: str, cfg: Webhook, client: httpx.AsyncClient | None = None):
        self.name = name
        self.cfg = cfg
        self.secret = (cfg.secret if cfg.secret is not None else read_secret(cfg.secret_file, f"webhook {name}")).encode()
        self.client = client or httpx.AsyncClient(timeout=cfg.timeout, follow_redirects=False)
        self.max_attempts, self.backoff_initial, self.backoff_max = cfg.max_attempts, cfg.backoff_initial, cfg.backoff_max

    async def send(self, row) -> None:
        body = orjson.dumps(row.payload)
        ts = int(time.time())
        headers = {"Content-Type": "application/json", TIMESTAMP: str(ts), SIGNATURE: signature(self.secret, ts, body),
                   DELIVERY: str(row.id), "User-Agent": "canopy-centre"}
        try:
            resp = await self.client.post(self.cfg.url, content=body, headers=headers, timeout=self.cfg.timeout)
        except httpx.TimeoutException:
            raise Retry(f"no answer within {self.cfg.timeout:g} s") from None
        except httpx.HTTPError as exc:
            raise Retry(f"{type(exc).__name__}: {exc}") from None
        if 200 <= resp.status_code < 300:
            return
        text = f"HTTP {resp.status_code}: {resp.text[:200]}"
        if resp.status_code in (408, 429) or resp.status_code >= 500:
            raise Retry(text)
        raise Permanent(text)

    async def close(self) -> None:
        await self.client.aclose()
