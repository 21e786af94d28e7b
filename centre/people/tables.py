"""The people module's own table, on the shared metadata (migration ``people_0001``).

``users``, ``role_grants``, ``sessions`` and ``audit`` are in :mod:`centre.store.schema`;
this adds the login throttle: one row per throttled key (``user:NAME`` or ``ip:ADDRESS``),
in the database so that every centre instance behind a load balancer counts the same failures.
"""

from __future__ import annotations

import sqlalchemy as sa

from centre.store.schema import Ts, metadata

login_throttle = sa.Table(
    "login_throttle", metadata,
    sa.Column("key", sa.String(200), primary_key=True),  # user:<username lower-cased> | ip:<address>
    sa.Column("failures", sa.Integer, nullable=False),  # consecutive failed logins (forgotten after a quiet time)
    sa.Column("last_failure_at", Ts, nullable=False),
    sa.Column("blocked_until", Ts, nullable=False),  # no login attempt is checked before this
    sa.Index(None, "last_failure_at"),  # purge
)
