"""Routing test parts: a routing config on the local servers, and people in the store."""

from __future__ import annotations

import sqlalchemy as sa

from centre.routing.config import Blind, Email, Group, RoutingConfig, Webhook
from centre.store import schema
from centre.store.engine import write_transaction

SECRET = "a-shared-secret-of-32-characters"


def routing(webhook_url: str, smtp_port: int, *, blind_after: float = 2.0, **extra) -> RoutingConfig:
    return RoutingConfig(
        groups={"office": Group(users=["duty-wang"], channels=["console", "webhook:sms", "email"]),
                "volunteers": Group(channels=["console", "webhook:sms", "email"]),
                "*": Group(users=["duty-wang"], channels=["console", "webhook:sms", "email"])},
        webhooks={"sms": Webhook(url=webhook_url, secret=SECRET, backoff_initial=0.3, backoff_max=1.0, timeout=5)},
        email=Email(host="127.0.0.1", port=smtp_port, security="none", from_address="canopy@example.net",
                    backoff_initial=0.3, backoff_max=1.0),
        blind=Blind(after=blind_after), poll_interval=0.2, **extra)


async def add_people(engine, now: float = 1.0) -> None:
    """duty-wang (named in the routing), vol-li (granted the volunteers group at sunny-court), and one inactive user."""
    async with write_transaction(engine) as conn:
        for name, email, phone, active in (("duty-wang", "wang@example.net", "+8613800000001", True),
                                           ("vol-li", "li@example.net", "+8613800000002", True),
                                           ("vol-gone", "gone@example.net", None, False)):
            await conn.execute(sa.insert(schema.users).values(username=name, display_name=name.title(), email=email,
                                                              phone=phone, active=active, created_at=now))
        ids = {r.username: r.id for r in await conn.execute(sa.select(schema.users.c.id, schema.users.c.username))}
        for name in ("vol-li", "vol-gone"):
            await conn.execute(sa.insert(schema.role_grants).values(user_id=ids[name], role="volunteer", site="sunny-court",
                                                                    scope_kind="group", scope="volunteers"))
