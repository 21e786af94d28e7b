"""The centre's store: one schema (``schema``) for SQLite and PostgreSQL, engines (``engine``), Alembic migrations."""
