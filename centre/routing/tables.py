"""The routing module's tables, on the shared metadata (migration ``acting_0001``).

``notifications`` is an outbox: one row per message to send (a console line, a webhook
POST, an e-mail), unique by ``key`` -- the alert record and where it goes -- so a new
leader that looks at the same records again inserts nothing twice, and a row survives
the leader that made it until it is ``sent`` or ``failed``.  ``blind_alerts`` are the
alerts the centre raises itself when a site goes blind.
"""

from __future__ import annotations

import sqlalchemy as sa

from centre.store.schema import ID, Json, Ts, metadata

notifications = sa.Table(
    "notifications", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("key", sa.String(64), nullable=False, unique=True),  # sha256 of: record, group, channel, recipient
    sa.Column("created_at", Ts, nullable=False),
    sa.Column("site", ID, nullable=False),
    sa.Column("gateway", ID, nullable=False),
    sa.Column("alert", sa.String(64), nullable=False),  # the gateway's alert id, or "blind-N"
    sa.Column("event", sa.String(32), nullable=False),  # raised | escalated | updated | acknowledged | resolved
    sa.Column("group", sa.String(160)),
    sa.Column("channel", sa.String(80), nullable=False),  # console | email | webhook:NAME
    sa.Column("recipient", sa.String(256)),  # e-mail address; NULL for console and webhooks (recipients in payload)
    sa.Column("payload", Json, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # queued | sent | failed
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_at", Ts, nullable=False),
    sa.Column("last_error", sa.String(512)),
    sa.Column("sent_at", Ts),
    sa.Index(None, "status", "next_attempt_at"),
    sa.Index(None, "site", "gateway", "alert"),
)

blind_alerts = sa.Table(
    "blind_alerts", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("site", ID, nullable=False),
    sa.Column("gateway", ID, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # raised | resolved
    sa.Column("why", sa.String(16), nullable=False),  # offline | silent
    sa.Column("detail", sa.Text, nullable=False),  # "gateway gw-3 offline since 10:32 (connection lost)"
    sa.Column("since", Ts, nullable=False),  # when the gateway went offline or was last heard
    sa.Column("raised_at", Ts, nullable=False),
    sa.Column("resolved_at", Ts),
    sa.Index(None, "site", "gateway", "status"),
)
