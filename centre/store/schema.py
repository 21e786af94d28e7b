"""The centre's tables: one SQLAlchemy Core schema for SQLite and PostgreSQL (docs/centre.md#schema).

Times are epoch seconds as floats (``Double``), the protocol's own unit, so both engines
store and compare them the same way.  Every table that holds gateway records is keyed
on the receiver rule's key ``(site, gateway, epoch, lane, seq)``: an insert that
conflicts on it is a duplicate and is dropped by the database itself
(``INSERT … ON CONFLICT DO NOTHING``), whichever centre instance got the copy.

Other modules add their own tables to :data:`metadata` (and a migration under
``centre/store/migrations/versions``); the tables here are the ones ingest writes and
the ones everybody shares (users, sessions, audit).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

metadata = sa.MetaData(naming_convention={
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
})

Json = sa.JSON().with_variant(JSONB(), "postgresql")
Ts = sa.Double  # epoch seconds
ID = sa.String(64)  # site, gateway, device, point ids (core.model.Id: at most 64 characters)
LANES = ("alarm", "event", "telemetry")


def _key(with_lane: bool = True) -> list[sa.Column]:
    """The receiver rule's key columns: (site, gateway, epoch, lane, seq)."""
    cols = [sa.Column("site", ID, primary_key=True), sa.Column("gateway", ID, primary_key=True),
            sa.Column("epoch", sa.String(16), primary_key=True)]
    if with_lane:
        cols.append(sa.Column("lane", sa.String(9), primary_key=True))
    cols.append(sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
                          autoincrement=False))
    return cols


# -- gateways: identity, last state, online/offline ------------------------------------------------------
gateways = sa.Table(
    "gateways", metadata,
    sa.Column("site", ID, primary_key=True),
    sa.Column("gateway", ID, primary_key=True),
    sa.Column("status", sa.String(16), nullable=False, server_default="unknown"),  # online | offline | unknown
    sa.Column("reason", sa.String(128)),  # offline: "shutdown", "connection lost"; blind: set by the centre
    sa.Column("status_since", Ts),  # centre time the status last changed
    sa.Column("boot", sa.Integer),
    sa.Column("version", sa.String(32)),
    sa.Column("protocol", sa.Integer),
    sa.Column("capabilities", Json),  # list of names (docs/protocol.md#capabilities)
    sa.Column("meta_version", sa.String(32)),  # state.meta: the version of …/meta the gateway runs
    sa.Column("state", Json),  # the whole latest …/state document
    sa.Column("state_ts", Ts),  # its ts (online states only)
    sa.Column("meta", Json),  # the whole latest …/meta document
    sa.Column("first_seen", Ts, nullable=False),
    sa.Column("last_seen", Ts, nullable=False),  # centre time of the last message of any kind from it
    sa.Column("last_record_ts", Ts),  # the gateway's ts of the newest record stored
)

# -- records: every event- and alarm-lane record, exactly once ----------------------------------------
records = sa.Table(
    "records", metadata,
    *_key(),
    sa.Column("ts", Ts, nullable=False),
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("topic", sa.String(128), nullable=False),  # the leaf it first arrived on: event, alert/{g}, cmd/result
    sa.Column("body", Json, nullable=False),  # the record as published, seq included
    sa.Column("received_at", Ts, nullable=False),
    sa.Index(None, "site", "gateway", "ts"),
    sa.Index(None, "type", "ts"),
)

# -- telemetry: raw readings (the telemetry lane's records) and the hourly rollup ------------------------
telemetry = sa.Table(
    "telemetry", metadata,
    *_key(with_lane=False),  # lane is always "telemetry"
    sa.Column("ts", Ts, nullable=False),
    sa.Column("device", ID, nullable=False),
    sa.Column("point", sa.String(128), nullable=False),
    sa.Column("value", sa.Double),  # numbers; bools as 1.0/0.0; NULL for strings and invalid readings
    sa.Column("text", sa.String(256)),  # string values; "true"/"false" for bools
    sa.Column("invalid", sa.String(8)),  # "nan", "inf", "-inf" (value is NULL)
    sa.Column("unit", sa.String(32)),
    sa.Column("received_at", Ts, nullable=False),
    sa.Index(None, "site", "gateway", "device", "point", "ts"),
    sa.Index(None, "ts"),  # retention
)

telemetry_hourly = sa.Table(
    "telemetry_hourly", metadata,
    sa.Column("site", ID, primary_key=True),
    sa.Column("gateway", ID, primary_key=True),
    sa.Column("device", ID, primary_key=True),
    sa.Column("point", sa.String(128), primary_key=True),
    sa.Column("hour", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
              autoincrement=False),  # epoch seconds of the hour's start (UTC)
    sa.Column("count", sa.BigInteger, nullable=False),
    sa.Column("total", sa.Double, nullable=False),  # mean = total / count
    sa.Column("min", sa.Double, nullable=False),
    sa.Column("max", sa.Double, nullable=False),
    sa.Column("unit", sa.String(32)),
)

# -- alerts: the current view and the lifecycle ------------------------------------------------------------
alerts = sa.Table(
    "alerts", metadata,
    sa.Column("site", ID, primary_key=True),
    sa.Column("gateway", ID, primary_key=True),
    sa.Column("alert", sa.String(64), primary_key=True),  # the gateway's alert id ("17-a3f9")
    sa.Column("status", sa.String(16), nullable=False),  # raised | escalated | acknowledged | resolved
    sa.Column("rule", sa.String(128)),
    sa.Column("class", sa.String(64)),
    sa.Column("severity", sa.String(16)),
    sa.Column("subject", sa.String(128)),
    sa.Column("device", ID),
    sa.Column("location", Json),
    sa.Column("groups", Json),  # every group reached so far
    sa.Column("step", sa.Integer),
    sa.Column("next_escalation_at", Ts),
    sa.Column("raised_at", Ts),
    sa.Column("acked_at", Ts),
    sa.Column("acked_by", sa.String(128)),
    sa.Column("ack_note", sa.String(512)),
    sa.Column("resolved_at", Ts),
    sa.Column("resolved_by", sa.String(160)),
    sa.Column("message", sa.Text),
    sa.Column("lang", sa.String(16)),
    sa.Column("texts", Json),  # the raise's ready line per language ({"en": …, "zh-CN": …}), store_0002
    sa.Column("updated_at", Ts, nullable=False),  # ts of the newest lifecycle record folded in
    sa.Index(None, "status", "severity"),
)

alert_events = sa.Table(
    "alert_events", metadata,
    *_key(),  # the lifecycle record's key: its body is in records
    sa.Column("alert", sa.String(64), nullable=False),
    sa.Column("type", sa.String(32), nullable=False),  # alert.raised, .escalated, .updated, .acknowledged, .resolved
    sa.Column("ts", Ts, nullable=False),
    sa.Column("status", sa.String(16)),
    sa.Column("step", sa.Integer),
    sa.Column("actor", sa.String(160)),  # who: by (ack) or resolved_by
    sa.Column("groups", Json),
    sa.Index(None, "site", "gateway", "alert", "ts"),
)

# -- commands and acks: what people asked, and how it ended -------------------------------------------------
COMMAND_STATUSES = {  # status -> rank; a result only moves a command up (see ingest.writer)
    "pending": 0, "sent": 1, "expired": 2, "accepted": 3, "executed": 4, "rejected": 4, "failed": 4,
}
commands = sa.Table(
    "commands", metadata,
    sa.Column("id", sa.String(128), primary_key=True),  # the envelope id
    sa.Column("kind", sa.String(16), nullable=False),  # command | ack | config | replay
    sa.Column("site", ID, nullable=False),
    sa.Column("gateway", ID, nullable=False),
    sa.Column("issuer", sa.String(128)),
    sa.Column("on_behalf_of", sa.String(128)),
    sa.Column("action", sa.String(64)),
    sa.Column("target", sa.String(128)),
    sa.Column("params", Json),
    sa.Column("intent", sa.Text),  # the person's intent in words, as shown when they acted
    sa.Column("created_at", Ts, nullable=False),
    sa.Column("valid_until", Ts),
    sa.Column("status", sa.String(16), nullable=False),  # COMMAND_STATUSES
    sa.Column("rank", sa.Integer, nullable=False),  # COMMAND_STATUSES[status]
    sa.Column("reason", sa.String(64)),
    sa.Column("detail", sa.Text),
    sa.Column("envelope", Json),  # the signed envelope last sent (signed at send time)
    sa.Column("sent_at", Ts),
    sa.Column("sends", sa.Integer, nullable=False, server_default="0"),
    sa.Column("result_at", Ts),
    sa.Column("result", Json),  # the last result record from the gateway
    sa.Index(None, "site", "gateway", "status"),
)

# -- sequence tracking and gaps ------------------------------------------------------------------------------
lanes = sa.Table(  # the receiver rule's floor, persisted: every seq <= floor is stored (or given up as a gap)
    "lanes", metadata,
    sa.Column("site", ID, primary_key=True),
    sa.Column("gateway", ID, primary_key=True),
    sa.Column("epoch", sa.String(16), primary_key=True),
    sa.Column("lane", sa.String(9), primary_key=True),
    sa.Column("floor", sa.BigInteger, nullable=False),
    sa.Column("first_seq", sa.BigInteger, nullable=False),
    sa.Column("updated_at", Ts, nullable=False),
)

gaps = sa.Table(
    "gaps", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("site", ID, nullable=False),
    sa.Column("gateway", ID, nullable=False),
    sa.Column("epoch", sa.String(16), nullable=False),
    sa.Column("lane", sa.String(9), nullable=False),
    sa.Column("first_seq", sa.BigInteger, nullable=False),
    sa.Column("last_seq", sa.BigInteger, nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),  # seqs still missing
    sa.Column("state", sa.String(16), nullable=False),  # open | repair_requested | repaired | unrepairable
    sa.Column("opened_at", Ts, nullable=False),  # centre time it was first seen
    sa.Column("updated_at", Ts, nullable=False),
    sa.Column("requests", sa.Integer, nullable=False, server_default="0"),  # replay requests sent for it
    sa.Column("detail", sa.Text),
    sa.UniqueConstraint("site", "gateway", "epoch", "lane", "first_seq"),
    sa.Index(None, "state"),
)

# -- people: users, role grants, sessions, audit (the people module fills them) ----------------------------------
users = sa.Table(
    "users", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("username", sa.String(128), nullable=False, unique=True),  # what envelopes carry as on_behalf_of
    sa.Column("display_name", sa.String(256)),
    sa.Column("password_hash", sa.String(256)),  # argon2; NULL: cannot log in until a password is set
    sa.Column("language", sa.String(16), nullable=False, server_default="en"),
    sa.Column("phone", sa.String(64)),
    sa.Column("email", sa.String(256)),
    sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("must_change_password", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("created_at", Ts, nullable=False),
    sa.Column("password_changed_at", Ts),
)

role_grants = sa.Table(  # a user's role within a scope: (duty_desk, site, sunny-court), (volunteer, group, volunteers)
    "role_grants", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    sa.Column("role", sa.String(32), nullable=False),  # duty_desk | volunteer | grid_leader | farmer | installer | admin
    sa.Column("site", ID),  # NULL: every site
    sa.Column("scope_kind", sa.String(16), nullable=False, server_default="site"),  # site | group | household | zone
    sa.Column("scope", sa.String(128)),  # the group, household or zone id; NULL for a whole site
    sa.UniqueConstraint("user_id", "role", "site", "scope_kind", "scope"),
)

sessions = sa.Table(
    "sessions", metadata,
    sa.Column("id", sa.String(128), primary_key=True),  # a hash of the session token, never the token
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    sa.Column("csrf", sa.String(128), nullable=False),
    sa.Column("created_at", Ts, nullable=False),
    sa.Column("last_seen_at", Ts, nullable=False),
    sa.Column("expires_at", Ts, nullable=False),
    sa.Column("ended_at", Ts),
    sa.Column("ip", sa.String(64)),
    sa.Column("user_agent", sa.String(256)),
    sa.Index(None, "user_id"),
)

audit = sa.Table(  # every action a person (or the centre for them) took, and every refusal
    "audit", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("ts", Ts, nullable=False),
    sa.Column("actor", sa.String(128), nullable=False),  # username, or "centre" for its own jobs
    sa.Column("action", sa.String(64), nullable=False),  # login, ack, command, users.add, ...
    sa.Column("target", sa.String(256)),
    sa.Column("site", ID),
    sa.Column("outcome", sa.String(16), nullable=False),  # ok | denied | failed
    sa.Column("detail", Json),
    sa.Column("ip", sa.String(64)),
    sa.Index(None, "ts"),
    sa.Index(None, "actor", "ts"),
)
