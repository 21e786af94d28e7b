"""base: gateways, records, telemetry, alerts, commands, gaps, people

Revision ID: 0001_base
Revises: (none)
Create Date: 2026-12-06 07:43:37.473727
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0001_base'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('alert_events',
    sa.Column('site', sa.String(length=64), nullable=False),
    sa.Column('gateway', sa.String(length=64), nullable=False),
    sa.Column('epoch', sa.String(length=16), nullable=False),
    sa.Column('lane', sa.String(length=9), nullable=False),
    sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=False, nullable=False),
    sa.Column('alert', sa.String(length=64), nullable=False),
    sa.Column('type', sa.String(length=32), nullable=False),
    sa.Column('ts', sa.Double(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=True),
    sa.Column('step', sa.Integer(), nullable=True),
    sa.Column('actor', sa.String(length=160), nullable=True),
    sa.Column('groups', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.PrimaryKeyConstraint('site', 'gateway', 'epoch', 'lane', 'seq', name=op.f('pk_alert_events'))
    )
    with op.batch_alter_table('alert_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_alert_events_site_gateway_alert_ts'), ['site', 'gateway', 'alert', 'ts'], unique=False)

    op.create_table('alerts',
    sa.Column('site', sa.String(length=64), nullable=False),
    sa.Column('gateway', sa.String(length=64), nullable=False),
    sa.Column('alert', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('rule', sa.String(length=128), nullable=True),
    sa.Column('class', sa.String(length=64), nullable=True),
    sa.Column('severity', sa.String(length=16), nullable=True),
    sa.Column('subject', sa.String(length=128), nullable=True),
    sa.Column('device', sa.String(length=64), nullable=True),
    sa.Column('location', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('groups', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('step', sa.Integer(), nullable=True),
    sa.Column('next_escalation_at', sa.Double(), nullable=True),
    sa.Column('raised_at', sa.Double(), nullable=True),
    sa.Column('acked_at', sa.Double(), nullable=True),
    sa.Column('acked_by', sa.String(length=128), nullable=True),
    sa.Column('ack_note', sa.String(length=512), nullable=True),
    sa.Column('resolved_at', sa.Double(), nullable=True),
    sa.Column('resolved_by', sa.String(length=160), nullable=True),
    sa.Column('message', sa.Text(), nullable=True),
    sa.Column('lang', sa.String(length=16), nullable=True),
    sa.Column('updated_at', sa.Double(), nullable=False),
    sa.PrimaryKeyConstraint('site', 'gateway', 'alert', name=op.f('pk_alerts'))
    )
    with op.batch_alter_table('alerts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_alerts_status_severity'), ['status', 'severity'], unique=False)

    op.create_table('audit',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('ts', sa.Double(), nullable=False),
    sa.Column('actor', sa.String(length=128), nullable=False),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('target', sa.String(length=256), nullable=True),
    sa.Column('site', sa.String(length=64), nullable=True),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('detail', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('ip', sa.String(length=64), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit'))
    )
    with op.batch_alter_table('audit', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_actor_ts'), ['actor', 'ts'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_ts'), ['ts'], unique=False)

    op.create_table('commands',
    sa.Column('id', sa.String(length=128), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('site', sa.String(length=64), nullable=False),
    sa.Column('gateway', sa.String(length=64), nullable=False),
    sa.Column('issuer', sa.String(length=128), nullable=True),
    sa.Column('on_behalf_of', sa.String(length=128), nullable=True),
    sa.Column('action', sa.String(length=64), nullable=True),
    sa.Column('target', sa.String(length=128), nullable=True),
    sa.Column('params', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('intent', sa.Text(), nullable=True),
    sa.Column('created_at', sa.Double(), nullable=False),
    sa.Column('valid_until', sa.Double(), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('rank', sa.Integer(), nullable=False),
    sa.Column('reason', sa.String(length=64), nullable=True),
    sa.Column('detail', sa.Text(), nullable=True),
    sa.Column('envelope', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('sent_at', sa.Double(), nullable=True),
    sa.Column('sends', sa.Integer(), server_default='0', nullable=False),
    sa.Column('result_at', sa.Double(), nullable=True),
    sa.Column('result', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_commands'))
    )
    with op.batch_alter_table('commands', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_commands_site_gateway_status'), ['site', 'gateway', 'status'], unique=False)

    op.create_table('gaps',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('site', sa.String(length=64), nullable=False),
    sa.Column('gateway', sa.String(length=64), nullable=False),
    sa.Column('epoch', sa.String(length=16), nullable=False),
    sa.Column('lane', sa.String(length=9), nullable=False),
    sa.Column('first_seq', sa.BigInteger(), nullable=False),
    sa.Column('last_seq', sa.BigInteger(), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('opened_at', sa.Double(), nullable=False),
    sa.Column('updated_at', sa.Double(), nullable=False),
    sa.Column('requests', sa.Integer(), server_default='0', nullable=False),
    sa.Column('detail', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_gaps')),
    sa.UniqueConstraint('site', 'gateway', 'epoch', 'lane', 'first_seq', name=op.f('uq_gaps_site_gateway_epoch_lane_first_seq'))
    )
    with op.batch_alter_table('gaps', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_gaps_state'), ['state'], unique=False)

    op.create_table('gateways',
    sa.Column('site', sa.String(length=64), nullable=False),
    sa.Column('gateway', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), server_default='unknown', nullable=False),
    sa.Column('reason', sa.String(length=128), nullable=True),
    sa.Column('status_since', sa.Double(), nullable=True),
    sa.Column('boot', sa.Integer(), nullable=True),
    sa.Column('version', sa.String(length=32), nullable=True),
    sa.Column('protocol', sa.Integer(), nullable=True),
    sa.Column('capabilities', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('meta_version', sa.String(length=32), nullable=True),
    sa.Column('state', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('state_ts', sa.Double(), nullable=True),
    sa.Column('meta', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('first_seen', sa.Double(), nullable=False),
    sa.Column('last_seen', sa.Double(), nullable=False),
    sa.Column('last_record_ts', sa.Double(), nullable=True),
    sa.PrimaryKeyConstraint('site', 'gateway', name=op.f('pk_gateways'))
    )
    op.create_table('lanes',
    sa.Column('site', sa.String(length=64), nullable=False),
    sa.Column('gateway', sa.String(length=64), nullable=False),
    sa.Column('epoch', sa.String(length=16), nullable=False),
    sa.Column('lane', sa.String(length=9), nullable=False),
    sa.Column('floor', sa.BigInteger(), nullable=False),
    sa.Column('first_seq', sa.BigInteger(), nullable=False),
    sa.Column('updated_at', sa.Double(), nullable=False),
    sa.PrimaryKeyConstraint('site', 'gateway', 'epoch', 'lane', name=op.f('pk_lanes'))
    )
    op.create_table('records',
    sa.Column('site', sa.String(length=64), nullable=False),
    sa.Column('gateway', sa.String(length=64), nullable=False),
    sa.Column('epoch', sa.String(length=16), nullable=False),
    sa.Column('lane', sa.String(length=9), nullable=False),
    sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=False, nullable=False),
    sa.Column('ts', sa.Double(), nullable=False),
    sa.Column('type', sa.String(length=64), nullable=False),
    sa.Column('topic', sa.String(length=128), nullable=False),
    sa.Column('body', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('received_at', sa.Double(), nullable=False),
    sa.PrimaryKeyConstraint('site', 'gateway', 'epoch', 'lane', 'seq', name=op.f('pk_records'))
    )
    with op.batch_alter_table('records', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_records_site_gateway_ts'), ['site', 'gateway', 'ts'], unique=False)
        batch_op.create_index(batch_op.f('ix_records_type_ts'), ['type', 'ts'], unique=False)

    op.create_table('telemetry',
    sa.Column('site', sa.String(length=64), nullable=False),
    sa.Column('gateway', sa.String(length=64), nullable=False),
    sa.Column('epoch', sa.String(length=16), nullable=False),
    sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=False, nullable=False),
    sa.Column('ts', sa.Double(), nullable=False),
    sa.Column('device', sa.String(length=64), nullable=False),
    sa.Column('point', sa.String(length=128), nullable=False),
    sa.Column('value', sa.Double(), nullable=True),
    sa.Column('text', sa.String(length=256), nullable=True),
    sa.Column('invalid', sa.String(length=8), nullable=True),
    sa.Column('unit', sa.String(length=32), nullable=True),
    sa.Column('received_at', sa.Double(), nullable=False),
    sa.PrimaryKeyConstraint('site', 'gateway', 'epoch', 'seq', name=op.f('pk_telemetry'))
    )
    with op.batch_alter_table('telemetry', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_telemetry_site_gateway_device_point_ts'), ['site', 'gateway', 'device', 'point', 'ts'], unique=False)
        batch_op.create_index(batch_op.f('ix_telemetry_ts'), ['ts'], unique=False)

    op.create_table('telemetry_hourly',
    sa.Column('site', sa.String(length=64), nullable=False),
    sa.Column('gateway', sa.String(length=64), nullable=False),
    sa.Column('device', sa.String(length=64), nullable=False),
    sa.Column('point', sa.String(length=128), nullable=False),
    sa.Column('hour', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=False, nullable=False),
    sa.Column('count', sa.BigInteger(), nullable=False),
    sa.Column('total', sa.Double(), nullable=False),
    sa.Column('min', sa.Double(), nullable=False),
    sa.Column('max', sa.Double(), nullable=False),
    sa.Column('unit', sa.String(length=32), nullable=True),
    sa.PrimaryKeyConstraint('site', 'gateway', 'device', 'point', 'hour', name=op.f('pk_telemetry_hourly'))
    )
    op.create_table('users',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('username', sa.String(length=128), nullable=False),
    sa.Column('display_name', sa.String(length=256), nullable=True),
    sa.Column('password_hash', sa.String(length=256), nullable=True),
    sa.Column('language', sa.String(length=16), server_default='en', nullable=False),
    sa.Column('phone', sa.String(length=64), nullable=True),
    sa.Column('email', sa.String(length=256), nullable=True),
    sa.Column('active', sa.Boolean(), server_default=sa.true(), nullable=False),
    sa.Column('must_change_password', sa.Boolean(), server_default=sa.false(), nullable=False),
    sa.Column('created_at', sa.Double(), nullable=False),
    sa.Column('password_changed_at', sa.Double(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_users')),
    sa.UniqueConstraint('username', name=op.f('uq_users_username'))
    )
    op.create_table('role_grants',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('role', sa.String(length=32), nullable=False),
    sa.Column('site', sa.String(length=64), nullable=True),
    sa.Column('scope_kind', sa.String(length=16), server_default='site', nullable=False),
    sa.Column('scope', sa.String(length=128), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_role_grants_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_role_grants')),
    sa.UniqueConstraint('user_id', 'role', 'site', 'scope_kind', 'scope', name=op.f('uq_role_grants_user_id_role_site_scope_kind_scope'))
    )
    op.create_table('sessions',
    sa.Column('id', sa.String(length=128), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('csrf', sa.String(length=128), nullable=False),
    sa.Column('created_at', sa.Double(), nullable=False),
    sa.Column('last_seen_at', sa.Double(), nullable=False),
    sa.Column('expires_at', sa.Double(), nullable=False),
    sa.Column('ended_at', sa.Double(), nullable=True),
    sa.Column('ip', sa.String(length=64), nullable=True),
    sa.Column('user_agent', sa.String(length=256), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_sessions_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sessions'))
    )
    with op.batch_alter_table('sessions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_sessions_user_id'), ['user_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('sessions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_sessions_user_id'))

    op.drop_table('sessions')
    op.drop_table('role_grants')
    op.drop_table('users')
    op.drop_table('telemetry_hourly')
    with op.batch_alter_table('telemetry', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_telemetry_ts'))
        batch_op.drop_index(batch_op.f('ix_telemetry_site_gateway_device_point_ts'))

    op.drop_table('telemetry')
    with op.batch_alter_table('records', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_records_type_ts'))
        batch_op.drop_index(batch_op.f('ix_records_site_gateway_ts'))

    op.drop_table('records')
    op.drop_table('lanes')
    op.drop_table('gateways')
    with op.batch_alter_table('gaps', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_gaps_state'))

    op.drop_table('gaps')
    with op.batch_alter_table('commands', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_commands_site_gateway_status'))

    op.drop_table('commands')
    with op.batch_alter_table('audit', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_ts'))
        batch_op.drop_index(batch_op.f('ix_audit_actor_ts'))

    op.drop_table('audit')
    with op.batch_alter_table('alerts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_alerts_status_severity'))

    op.drop_table('alerts')
    with op.batch_alter_table('alert_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_alert_events_site_gateway_alert_ts'))

    op.drop_table('alert_events')
