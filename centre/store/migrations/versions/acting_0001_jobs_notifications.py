"""acting: once-only job claims, the notifications outbox, blind-site alerts; indexes the sender and the feed read by

Revision ID: acting_0001
Revises: 0001_base
Tables defined in centre/jobs/once.py and centre/routing/tables.py.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "acting_0001"
down_revision = "0001_base"
branch_labels = ("acting",)
depends_on = None

Json = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "job_runs",
        sa.Column("job", sa.String(64), nullable=False),
        sa.Column("slot", sa.String(64), nullable=False),
        sa.Column("instance", sa.String(64), nullable=False),
        sa.Column("claimed_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("job", "slot", name=op.f("pk_job_runs")),
    )
    op.create_table(
        "notifications",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("site", sa.String(64), nullable=False),
        sa.Column("gateway", sa.String(64), nullable=False),
        sa.Column("alert", sa.String(64), nullable=False),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("group", sa.String(160), nullable=True),
        sa.Column("channel", sa.String(80), nullable=False),
        sa.Column("recipient", sa.String(256), nullable=True),
        sa.Column("payload", Json, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("next_attempt_at", sa.Double(), nullable=False),
        sa.Column("last_error", sa.String(512), nullable=True),
        sa.Column("sent_at", sa.Double(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notifications")),
        sa.UniqueConstraint("key", name=op.f("uq_notifications_key")),
    )
    op.create_index(op.f("ix_notifications_status_next_attempt_at"), "notifications", ["status", "next_attempt_at"])
    op.create_index(op.f("ix_notifications_site_gateway_alert"), "notifications", ["site", "gateway", "alert"])
    op.create_table(
        "blind_alerts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("site", sa.String(64), nullable=False),
        sa.Column("gateway", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("why", sa.String(16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("since", sa.Double(), nullable=False),
        sa.Column("raised_at", sa.Double(), nullable=False),
        sa.Column("resolved_at", sa.Double(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_blind_alerts")),
    )
    op.create_index(op.f("ix_blind_alerts_site_gateway_status"), "blind_alerts", ["site", "gateway", "status"])
    # the sender reads unanswered commands (rank <= 1) every second; the alert feed reads records by arrival
    op.create_index("ix_commands_rank", "commands", ["rank"])
    op.create_index("ix_records_received_at", "records", ["received_at"])


def downgrade() -> None:
    op.drop_index("ix_records_received_at", table_name="records")
    op.drop_index("ix_commands_rank", table_name="commands")
    op.drop_table("blind_alerts")
    op.drop_table("notifications")
    op.drop_table("job_runs")
